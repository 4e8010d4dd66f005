"""The wormhole ports the global-sidecar listens on, from its ConfigMap-mounted file, and their changes.

The ``global-sidecar`` ConfigMap (written by Slime's chart, or by lazystream's leader with autoPort) holds
``data.cfg``: YAML ``wormholePorts: [9080, 9090]`` (numbers or numeric strings). Mounted as a volume, the
file is replaced atomically by the kubelet when the ConfigMap changes; :class:`PortsFile` notices by
content, not by modification time (the kubelet swaps a symlink, so times are not reliable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


class PortsFileError(ValueError):
    pass


def parse_ports(text: str) -> frozenset[int]:
    """The ports in ``cfg``'s YAML; an empty document means none."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PortsFileError(f"not YAML: {exc}") from None
    if data is None:
        return frozenset()
    if not isinstance(data, dict):
        raise PortsFileError("expected a mapping with wormholePorts")
    ports = data.get("wormholePorts") or []
    if not isinstance(ports, list):
        raise PortsFileError("wormholePorts: expected a list of ports")
    out = set()
    for i, value in enumerate(ports):
        text_value = str(value).strip()
        if isinstance(value, bool) or not text_value.isdigit() or not 0 < int(text_value) < 65536:
            raise PortsFileError(f"wormholePorts[{i}]: {value!r} is not a TCP port")
        out.add(int(text_value))
    return frozenset(out)


class PortsFile:
    """Reads the file when its content changed; a missing or invalid file keeps the last good ports."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_text: str | None = None
        self._unreadable = False
        self.ports: frozenset[int] = frozenset()

    def poll(self) -> frozenset[int] | None:
        """The new port set when the file changed to a valid one, else None."""
        try:
            text = self.path.read_text()
        except OSError as exc:
            if not self._unreadable:
                log.warning("cannot read wormhole ports from %s: %s", self.path, exc)
                self._unreadable = True
            return None
        self._unreadable = False
        if text == self._last_text:
            return None
        self._last_text = text
        try:
            ports = parse_ports(text)
        except PortsFileError as exc:
            log.error("%s: %s (keeping ports %s)", self.path, exc, sorted(self.ports))
            return None
        if ports == self.ports:
            return None
        self.ports = ports
        return ports
