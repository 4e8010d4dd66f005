"""Istio's validation rules for the fields lazystream writes, so nothing it writes is refused by istiod's
validating webhook (which refuses a whole Sidecar for one bad host, freezing that workload's Sidecar).

Sidecar egress hosts are ``namespace/dnsName``: the namespace part is ``*``, ``.``, ``~`` or a DNS-1123
label; the name part is ``*``, or a fully qualified name, or a wildcard ``*.suffix``. Short names (a single
label) are refused ("short names (non FQDN) are not allowed"). A ``workloadSelector``'s labels are
Kubernetes label keys and values without wildcards. These are the rules Istio's ``pkg/config/validation``
applies to those fields, written anew.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


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


def workload_selector_problem(labels: dict[str, str]) -> str | None:
    """Why Istio would refuse ``workloadSelector.labels``, or None. Empty labels are refused here too: a
    Sidecar without a selector applies to every workload of its namespace, never what a fence means."""
    if not labels:
        return "no labels (the Sidecar would apply to the whole namespace)"
    for key, value in sorted(labels.items()):
        if "*" in key or "*" in value:
            return f"label {key!r}: wildcards are not allowed in a workload selector"
        prefix, slash, name = key.rpartition("/")
        if slash and (len(prefix) > 253 or _SUBDOMAIN.fullmatch(prefix) is None):
            return f"label key {key[:80]!r}: the prefix is not a DNS subdomain"
        if _LABEL_NAME.fullmatch(name) is None:
            return f"label key {key[:80]!r} is not a valid label name"
        if value and _LABEL_NAME.fullmatch(value) is None:
            return f"label {key[:63]!r}: value {value[:80]!r} is not a valid label value"
    return None
