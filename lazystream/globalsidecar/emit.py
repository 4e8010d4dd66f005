"""Where the global-sidecar's per-request records go, without ever making a request wait.

- :class:`StdoutEmitter`: JSON lines on standard output, for Fluent Bit's tail of the container log.
- :class:`ForwardEmitter`: Fluent Bit's forward input, with fluent-logger's asynchronous sender.
- :class:`NullEmitter`: nowhere.

Both real emitters append records to a bounded queue that one writer thread empties every
:data:`FLUSH_SECONDS`; when the queue is full the record is dropped and counted (``dropped``), so a slow or
absent log pipeline costs requests nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
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


FLUSH_SECONDS = 0.05
"""How often the writer thread hands on what has been queued: one wake-up and one write per interval, not
one per request (a thread woken per record took the GIL and a system call from the proxy every time)."""
BATCH = 512


class BatchingEmitter:
    """A bounded queue that :meth:`emit` appends to without a lock or a wake-up (a deque's append is
    atomic), emptied by one writer thread every :data:`FLUSH_SECONDS` through :meth:`write_batch`. A full
    queue drops the new record and counts it, so a stuck writer never blocks a request; nothing queued is
    lost otherwise, and :meth:`close` writes what is left."""

    def __init__(self, queue_size: int, name: str) -> None:
        self.queue_size = queue_size
        self.emitted = 0
        self.dropped = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def emit(self, record: dict[str, Any]) -> None:
        if len(self._queue) >= self.queue_size:
            self.dropped += 1
            return
        self._queue.append(record)
        self.emitted += 1

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._closing.wait(FLUSH_SECONDS):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
            try:
                self.write_batch(batch)
            except Exception:  # a broken sink must not end the thread: records are not worth a crash
                log.exception("cannot hand on %d records", len(batch))

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)


class StdoutEmitter(BatchingEmitter):
    """One compact JSON object per line, written in batches."""

    def __init__(self, queue_size: int, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        super().__init__(queue_size, "lazystream-records-stdout")

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        lines = b"".join([orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records])
        try:
            self.stream.write(lines)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stdout: keep serving requests
            log.warning("cannot write records to stdout: %s", exc)


class ForwardEmitter(BatchingEmitter):
    """fluent-logger's asynchronous sender: Message mode ``[tag, EventTime, record]`` to Fluent Bit's forward
    input, fed in batches from this emitter's queue (so packing records happens off the request path). Its
    own queue is circular (the oldest record is dropped when full, and counted); its thread reconnects by
    itself."""

    def __init__(self, tag: str, host: str, port: int, queue_size: int) -> None:
        from fluent import asyncsender

        prefix, _, self.label = tag.partition(".")
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
        super().__init__(queue_size, "lazystream-records-forward")

    def _overflow(self, _pending: Any) -> None:
        self.dropped += 1

    def _buffer_overflow(self, pending: bytes) -> None:
        """fluent-logger drops its pending buffer when Fluent Bit stays unreachable: counted, not raised."""
        self.dropped += 1
        log.warning("Fluent Bit unreachable: dropped %d bytes of records", len(pending))

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        from fluent.sender import EventTime

        for record in records:
            self._sender.emit_with_time(self.label, EventTime(record["time"]), record)

    def close(self) -> None:
        super().close()
        self._sender.close()


def make_emitter(kind: str, *, tag: str, host: str, port: int, queue_size: int) -> Emitter:
    if kind == "stdout":
        return StdoutEmitter(queue_size)
    if kind == "forward":
        return ForwardEmitter(tag, host, port, queue_size)
    return NullEmitter()
