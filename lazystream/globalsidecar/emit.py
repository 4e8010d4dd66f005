"""Where the global-sidecar's per-request records go, without ever making a request wait.

- :class:`StdoutEmitter`: JSON lines on standard output, for Fluent Bit's tail of the container log.
- :class:`ForwardEmitter`: Fluent Bit's forward input, with fluent-logger's asynchronous sender.
- :class:`NullEmitter`: nowhere.

Both real emitters hand records to one writer thread through a bounded queue; when the queue is full the
record is dropped and counted (``dropped``), so a slow or absent log pipeline costs requests nothing.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import IO, Any, Protocol

import orjson

log = logging.getLogger(__name__)


class Emitter(Protocol):
    emitted: int
    dropped: int

    def emit(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullEmitter:
    """Records go nowhere: the proxy does not even build them for this emitter, it only counts them."""

    def __init__(self) -> None:
        self.emitted = 0
        self.dropped = 0

    def emit(self, record: dict[str, Any]) -> None:
        self.emitted += 1

    def close(self) -> None:
        pass


_STOP = object()


class StdoutEmitter:
    """One compact JSON object per line, written by a thread in batches."""

    def __init__(self, queue_size: int, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.emitted = 0
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="lazystream-records-stdout", daemon=True)
        self._thread.start()

    def emit(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
        else:
            self.emitted += 1

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 512:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            lines = b"".join(orjson.dumps(item) + b"\n" for item in batch if item is not _STOP)
            try:
                self.stream.write(lines)
                self.stream.flush()
            except (OSError, ValueError) as exc:  # a closed or broken stdout: keep serving requests
                log.warning("cannot write records to stdout: %s", exc)
            if stop:
                return

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)


class ForwardEmitter:
    """fluent-logger's asynchronous sender: Message mode ``[tag, EventTime, record]`` to Fluent Bit's forward
    input. Its queue is circular (the oldest record is dropped when full); its thread reconnects by itself."""

    def __init__(self, tag: str, host: str, port: int, queue_size: int) -> None:
        from fluent import asyncsender

        prefix, _, self.label = tag.partition(".")
        self.emitted = 0
        self._sender = asyncsender.FluentSender(
            prefix,
            host=host,
            port=port,
            nanosecond_precision=True,
            queue_maxsize=queue_size,
            queue_circular=True,
            queue_overflow_handler=self._overflow,
            buffer_overflow_handler=self._buffer_overflow,
        )
        self.dropped = 0

    def _overflow(self, _pending: Any) -> None:
        self.dropped += 1

    def _buffer_overflow(self, pending: bytes) -> None:
        """fluent-logger drops its pending buffer when Fluent Bit stays unreachable: counted, not raised."""
        self.dropped += 1
        log.warning("Fluent Bit unreachable: dropped %d bytes of records", len(pending))

    def emit(self, record: dict[str, Any]) -> None:
        from fluent.sender import EventTime

        self._sender.emit_with_time(self.label, EventTime(record["time"]), record)
        self.emitted += 1

    def close(self) -> None:
        self._sender.close()


def make_emitter(kind: str, *, tag: str, host: str, port: int, queue_size: int) -> Emitter:
    if kind == "stdout":
        return StdoutEmitter(queue_size)
    if kind == "forward":
        return ForwardEmitter(tag, host, port, queue_size)
    return NullEmitter()
