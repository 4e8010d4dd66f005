"""The global-sidecar proxy's options, shared by its stream-based code
(:mod:`~lazystream.globalsidecar.proxy`) and its hot path (:mod:`~lazystream.globalsidecar.relay`), so
neither imports the other for them."""

from __future__ import annotations

from dataclasses import dataclass, field

from lazystream.globalsidecar.http1 import Limits


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    instance: str
    """This process's id, the value of the loop-detection header it adds."""
    prefer_listener_port: bool = False
    upstream_timeout: float | None = None
    """Longest time from dialling to the end of a response; None: no limit."""
    limits: Limits = field(default_factory=Limits)
    header_timeout: float = 10.0
    """Longest time for a request's head (and a small body read before dialling) to arrive."""
    idle_timeout: float = 60.0
    """A client connection with no request under way is closed after this long."""
    response_head_timeout: float | None = 60.0
    """Longest wait for the response head once the request is upstream; None: no limit."""

    @property
    def sweep_seconds(self) -> float:
        """How often the timeout sweep looks at the connections: a quarter of the shortest timeout."""
        shortest = min(t for t in (self.header_timeout, self.idle_timeout, self.response_head_timeout) if t)
        return max(0.05, min(1.0, shortest / 4))
