"""Istio's validation rules for the fields lazystream writes, so nothing it writes is refused by istiod's
validating webhook (which refuses a whole Sidecar for one bad host, freezing that workload's Sidecar).

Sidecar egress hosts are ``namespace/dnsName``: the namespace part is ``*``, ``.``, ``~`` or a DNS-1123
label; the name part is ``*``, or a fully qualified name, or a wildcard ``*.suffix``. Short names (a single
label) are refused ("short names (non FQDN) are not allowed"). These are the rules Istio's
``pkg/config/validation`` applies to that field, written anew.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def dns_name_problem(name: str) -> str | None:
    """Why ``name`` is not a host Istio accepts in a Sidecar, or None: ``*``, an FQDN or ``*.suffix``."""
    if name == "*":
        return None
    if len(name) > 255:
        return "longer than 255 characters"
    if "." not in name:
        return "a short name (Istio accepts only fully qualified names)"
    labels = name[2:] if name.startswith("*.") else name
    for label in labels.rstrip(".").split("."):
        if _LABEL.fullmatch(label) is None:
            return f"label {label[:63]!r} is not a DNS-1123 label"
    return None


def egress_host_problem(entry: str) -> str | None:
    """Why the Sidecar egress host ``namespace/dnsName`` would be refused by Istio, or None."""
    namespace, slash, name = entry.partition("/")
    if not slash:
        return "not namespace/host"
    if namespace not in ("*", ".", "~") and _NAMESPACE.fullmatch(namespace) is None:
        return f"namespace {namespace[:63]!r} is not *, ., ~ or a DNS-1123 label"
    return dns_name_problem(name)
