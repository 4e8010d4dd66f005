"""What lazystream's global-sidecar does with one request: where it dials, which Host it sends upstream, or
why it refuses; and the record it reports.

Slime's Go proxy, step by step, and where lazystream differs:

1. ``Slime-Source-Ns`` (when present and non-empty) completes a single-label Host: ``details[:port]``
   becomes ``details.<ns>[:port]`` when the Service ``<ns>/details`` exists, or always when the proxy runs
   without a Service cache. Anything else is left alone (an external single-label name, an IP).
2. ``Slime-Orig-Dest: ip[:port]`` is the address the caller dialled (the ClusterIP and port); the proxy dials
   it, with the listener's port when none is given. A malformed value is answered **400** (Slime: 500).
   lazystream only accepts an IP literal there, which is all Istio's ``%DOWNSTREAM_LOCAL_ADDRESS%`` gives.
3. Without the header the proxy dials the Host itself, port 80 by default, or the listener's port with
   ``wormholePortPriorToHostPort``.
4. Both Slime headers are removed before forwarding; the Host sent upstream is the completed one.
5. The proxy never routes to itself: a request carrying :data:`HOP_HEADER` (which the proxy adds to every
   request it forwards) has come round once already, and a dial target that is one of the proxy's own
   listeners is refused; both are answered **502**, like any upstream that fails.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from lazystream.domain.records import GLOBAL_SIDECAR_MARKER

SOURCE_NS_HEADER = "slime-source-ns"
ORIG_DEST_HEADER = "slime-orig-dest"
HOP_HEADER = "lazystream-global-sidecar"
"""Added to every forwarded request (value: the proxy's instance id); seeing it again means a loop."""
XFCC_HEADER = "x-forwarded-client-cert"
DEFAULT_PORT = 80

ServiceExists = Callable[[str, str], bool]
"""``exists(namespace, name)``: whether the Service is known (the proxy's Service cache)."""

_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.IGNORECASE)
_URI = re.compile(r'(?:^|;)URI=(?:"([^"]*)"|([^;,]*))')


@dataclass(frozen=True, slots=True)
class Forward:
    """Dial ``host:port`` and send ``authority`` as the Host header."""

    host: str
    port: int
    authority: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` without dialling anything; ``reason`` is the plain-text body."""

    status: int
    reason: str


def split_host_port(authority: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6][:port]`` into its parts; None when the port is not a TCP port."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[1:end], authority[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = authority.partition(":")
        if not sep:
            return host, None
        if ":" in port_text:  # a bare IPv6 literal without brackets
            return authority, None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        return None
    return host, int(port_text)


def join_host_port(host: str, port: int | None) -> str:
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def completion_candidate(authority: str, source_ns: str | None) -> tuple[str, str] | None:
    """The Service ``(namespace, name)`` whose existence decides step 1 for this Host, or None when the
    Host is not a completable short name (then the Service cache is not asked)."""
    if not source_ns or "." in authority:
        return None
    parts = split_host_port(authority)
    if parts is None:
        return None
    name = parts[0]
    if not _LABEL.fullmatch(name) or not _LABEL.fullmatch(source_ns):
        return None
    return source_ns.lower(), name.lower()


def complete_authority(authority: str, source_ns: str | None, exists: ServiceExists | None) -> str:
    """Step 1: ``name[:port]`` → ``name.<source_ns>[:port]`` when the Service exists (or without a cache)."""
    candidate = completion_candidate(authority, source_ns)
    if candidate is None or (exists is not None and not exists(*candidate)):
        return authority
    name, port = split_host_port(authority) or (authority, None)
    return join_host_port(f"{name}.{source_ns}", port)


def parse_orig_dest(value: str, listener_port: int) -> tuple[str, int] | Refuse:
    """Step 2: ``ip[:port]`` (``[v6][:port]``); the listener's port when none is given."""
    parts = split_host_port(value.strip())
    if parts is None:
        return Refuse(400, f"{ORIG_DEST_HEADER}: {value[:100]!r} has no valid port")
    host, port = parts
    if not _is_ip(host):
        return Refuse(400, f"{ORIG_DEST_HEADER}: {value[:100]!r} is not ip[:port]")
    return host, listener_port if port is None else port


def _is_ip(host: str) -> bool:
    if _IPV4.fullmatch(host):  # the usual case, without ipaddress's cost
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def decide(
    *,
    authority: str | None,
    source_ns: str | None,
    orig_dest: str | None,
    listener_port: int,
    exists: ServiceExists | None,
    prefer_listener_port: bool = False,
    looped: bool = False,
    own_listeners: Collection[tuple[str, int]] = (),
) -> Forward | Refuse:
    """Where one request goes (the module docstring's steps), from its headers and the listener it came in.

    ``own_listeners`` are the proxy's bound ``(address, port)`` pairs (``0.0.0.0`` / ``::`` for all).
    """
    if looped:
        return Refuse(502, "loop: the request has already passed through a global-sidecar")
    if not authority:
        return Refuse(400, "the request has no Host")
    host_header = complete_authority(authority, source_ns, exists)
    if orig_dest is not None:
        target = parse_orig_dest(orig_dest, listener_port)
        if isinstance(target, Refuse):
            return target
        dial_host, dial_port = target
    else:
        parts = split_host_port(host_header)
        if parts is None or not parts[0]:
            return Refuse(400, f"Host {authority[:100]!r} is not host[:port]")
        dial_host = parts[0]
        dial_port = listener_port if prefer_listener_port else (parts[1] or DEFAULT_PORT)
    if targets_self(dial_host, dial_port, own_listeners):
        return Refuse(502, f"loop: {join_host_port(dial_host, dial_port)} is this global-sidecar")
    return Forward(dial_host, dial_port, host_header)


_RequestKey = tuple[str | None, str | None, str | None, int, bool, bool]
_Known = tuple[tuple[str, str] | None, Forward | Refuse, Forward | Refuse]


class Decisions:
    """:func:`decide`, remembered per distinct request (callers repeat the same few Hosts and destinations),
    for the proxy's hot path. Exact: the one input that can change under a remembered decision, whether the
    short name's Service exists, is asked of ``exists`` on every call, and both outcomes are remembered;
    a new list of listeners forgets everything. At most ``size`` requests are remembered (then all are
    forgotten), so a caller that sends ever new Hosts costs memory nothing and time only a miss."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: dict[_RequestKey, _Known] = {}
        self._listeners: Collection[tuple[str, int]] | None = None

    def decide(
        self,
        authority: str | None,
        source_ns: str | None,
        orig_dest: str | None,
        listener_port: int,
        exists: ServiceExists | None,
        prefer_listener_port: bool,
        looped: bool,
        own_listeners: Collection[tuple[str, int]],
    ) -> Forward | Refuse:
        """What :func:`decide` answers for the same arguments."""
        if own_listeners is not self._listeners:
            self._known.clear()
            self._listeners = own_listeners
        key = (authority, source_ns, orig_dest, listener_port, prefer_listener_port, looped)
        known = self._known.get(key)
        if known is None:
            known = self._learn(key, own_listeners)
        candidate, when_exists, otherwise = known
        if candidate is None or exists is None or exists(*candidate):
            return when_exists
        return otherwise

    def _learn(self, key: _RequestKey, own_listeners: Collection[tuple[str, int]]) -> _Known:
        authority, source_ns, orig_dest, listener_port, prefer_listener_port, looped = key

        def outcome(exists: ServiceExists | None) -> Forward | Refuse:
            return decide(
                authority=authority,
                source_ns=source_ns,
                orig_dest=orig_dest,
                listener_port=listener_port,
                exists=exists,
                prefer_listener_port=prefer_listener_port,
                looped=looped,
                own_listeners=own_listeners,
            )

        when_exists = outcome(None)
        candidate = completion_candidate(authority, source_ns) if authority and not looped else None
        otherwise = when_exists if candidate is None else outcome(lambda _ns, _name: False)
        if len(self._known) >= self.size:
            self._known.clear()
        known: _Known = (candidate, when_exists, otherwise)
        self._known[key] = known
        return known


def targets_self(host: str, port: int, own_listeners: Collection[tuple[str, int]]) -> bool:
    """Whether ``host:port`` is one of the proxy's listeners, judged from the address alone (an IP literal
    that is the bound address, or loopback / unspecified for a wildcard bind). Names are checked after
    connecting, with :func:`connection_is_self`."""
    if all(listener != port for _, listener in own_listeners):  # the usual case: no address to parse
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    for address, listener in own_listeners:
        if listener != port:
            continue
        if address in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
            if ip.is_loopback or ip.is_unspecified:
                return True
        elif ipaddress.ip_address(address) == ip:
            return True
    return False


def connection_is_self(
    local: tuple[str, int], remote: tuple[str, int], listener_ports: Collection[int]
) -> bool:
    """An upstream connection that reached this host on one of the proxy's ports reached the proxy itself.

    ``local`` and ``remote`` are the upstream socket's own and peer addresses: equal IPs mean the same host
    (the kernel picks the destination's own address as the source), or both are loopback.
    """
    same_host = local[0] == remote[0] or (_is_loopback(local[0]) and _is_loopback(remote[0]))
    return same_host and remote[1] in listener_ports


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def principal_from_xfcc(value: str | None) -> str | None:
    """The ``URI`` of the last element of ``x-forwarded-client-cert``: the one the proxy's own Istio sidecar
    appended for the client certificate it verified (``spiffe://<td>/ns/<ns>/sa/<sa>``)."""
    if not value:
        return None
    last = _split_xfcc(value)[-1]
    match = _URI.search(last)
    if match is None:
        return None
    uri = match.group(1) if match.group(1) is not None else match.group(2)
    return uri or None


def _split_xfcc(value: str) -> list[str]:
    """Elements are comma-separated; commas inside quoted values do not split."""
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            elements.append("".join(current))
            current = []
        else:
            current.append(char)
    elements.append("".join(current))
    return elements


def format_address(host: str, port: int) -> str:
    """``ip:port``, ``[v6]:port``: how Envoy prints addresses, and what the record parser reads."""
    return join_host_port(host, port)


def access_record(
    *,
    time: float,
    peer_address: str,
    authority: str | None,
    status: int,
    duration_ms: float,
    x_forwarded_for: str | None = None,
    source_namespace: str | None = None,
    peer_principal: str | None = None,
    original_destination: str | None = None,
    upstream: str | None = None,
) -> dict[str, Any]:
    """One request as the global-sidecar reports it: one of the formats ``records.parse_record``
    reads it directly, or wrapped by Fluent Bit's forward input and Kafka output).

    ``authority`` is the Host as the caller sent it (the worker completes it in the caller's namespace, as
    it does Envoy's ``%REQ(:AUTHORITY)%``); ``upstream`` is the address actually dialled.
    """
    return {
        GLOBAL_SIDECAR_MARKER[0]: GLOBAL_SIDECAR_MARKER[1],
        "time": time,
        "peer_address": peer_address,
        "x_forwarded_for": x_forwarded_for,
        "source_namespace": source_namespace,
        "peer_principal": peer_principal,
        "authority": authority,
        "original_destination": original_destination,
        "upstream": upstream,
        "response_code": status,
        "duration_ms": round(duration_ms, 3),
    }
