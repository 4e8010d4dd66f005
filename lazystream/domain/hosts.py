"""Host names: normalising attacker-controlled authorities, DNS validation, completion and wildcards.

The authority of an access-log record is the request's Host header, chosen by whoever sent the request.
Everything here treats it as hostile: bounded work, no exceptions, and nothing but RFC 1123 names out.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from enum import StrEnum

MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class HostProblem(StrEnum):
    """Why an authority yields no host."""

    EMPTY = "empty"
    """Empty, or Envoy's ``-`` for a missing header."""

    IP_LITERAL = "ip_literal"
    """An IPv4 or IPv6 address: a call by address names no service."""

    INVALID = "invalid_dns_name"
    """Not an RFC 1123 DNS name (characters, label or total length)."""


def is_dns_name(name: str) -> bool:
    """True for a lower-case RFC 1123 name: labels of 1-63 letters, digits and hyphens, ≤ 253 in all."""
    if not name or len(name) > MAX_HOST_LENGTH:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")


def ip_of(address: str) -> str | None:
    """The IP of ``ip``, ``ip:port`` or ``[v6]:port``, or None (the fast path skips ``ipaddress``)."""
    if address.count(":") == 1:
        address = address.split(":", 1)[0]
    elif address.startswith("["):
        address = strip_port(address)
    if _IPV4.fullmatch(address):
        return address if all(int(part) < 256 for part in address.split(".")) else None
    return address if ":" in address and _is_ip(address) else None


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def strip_port(authority: str) -> str:
    """``host:port`` → ``host``; ``[v6]:port`` and ``[v6]`` → ``v6``; a bare IPv6 address is kept."""
    if authority.startswith("["):
        end = authority.find("]")
        return authority[1:end] if end > 0 else authority
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


@functools.lru_cache(maxsize=16384)
def normalize_authority(authority: str | None) -> str | HostProblem:
    """The host an authority names (port dropped, lower case, no trailing dot), or why there is none."""
    if authority is None:
        return HostProblem.EMPTY
    text = authority.strip()
    if len(text) > MAX_HOST_LENGTH + 8:  # a name, a colon and a port at most
        return HostProblem.INVALID
    host = strip_port(text).lower()
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if host in ("", "-"):
        return HostProblem.EMPTY
    if _is_ip(host):
        return HostProblem.IP_LITERAL
    if not is_dns_name(host):
        return HostProblem.INVALID
    return host


def service_fqdn(name: str, namespace: str, cluster_domain: str) -> str:
    """``name.namespace.svc.<cluster domain>``: the FQDN of a Kubernetes Service."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


def split_service_fqdn(host: str, cluster_domain: str) -> tuple[str, str] | None:
    """``(name, namespace)`` of ``name.namespace.svc.<cluster domain>``, the inverse of :func:`service_fqdn`;
    None for any other host (a wildcard, an external name, a short form)."""
    prefix, dot, rest = host.partition(".")
    namespace, dot2, suffix = rest.partition(".")
    if not (dot and dot2) or suffix != f"svc.{cluster_domain}" or "*" in (prefix, namespace):
        return None
    return (prefix, namespace) if prefix and namespace else None


def wildcard_matches(pattern: str, host: str) -> bool:
    """Istio host matching: ``*`` matches every host, ``*.example.com`` any name below ``example.com``;
    anything else matches itself exactly."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host
