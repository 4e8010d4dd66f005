"""Errors of the worker's Kafka clients, counted by client and kind for ``lazystream_kafka_errors_total``.

aiokafka retries what fails inside its clients (a lost connection, a fetch or heartbeat that failed, a
produce request answered with an error, a commit to a coordinator that moved) and says so only in its log:
nothing reaches the code that owns the client. So the count is taken where aiokafka reports them, by a
handler on its ``aiokafka`` logger, plus the failures lazystream's own code sees (an ingest commit
refused, a send given up, end offsets not fetched, a send of faust's producer that failed). The metric and
the log lines cannot disagree.

Which client? The ingest stage runs its consumer and producer in its own task, and sets :data:`CLIENT` to
``ingest`` there first: every task aiokafka creates for those clients (fetcher, coordinator, sender,
connection readers) copies that context, and so does every log record they emit. Everything else, faust's
consumer (in its own thread), producer and changelog, is ``faust``.

aiokafka's warnings are counted when its logger emits them, that is at ``logLevel`` warning or lower (the
default is info); its errors at every level but fatal.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from contextvars import ContextVar
from typing import Any

import faust

CLIENT: ContextVar[str] = ContextVar("lazystream_kafka_client", default="faust")
"""The client a log record or an error belongs to: ``ingest`` in the ingest stage's task and the tasks
its clients create, ``faust`` elsewhere."""
INGEST = "ingest"

KINDS: dict[str, str] = {
    "aiokafka": "connection",  # aiokafka/client.py logs under the package's own name
    "aiokafka.conn": "connection",
    "aiokafka.cluster": "connection",
    "aiokafka.consumer.fetcher": "fetch",
    "aiokafka.consumer.group_coordinator": "group",
    "aiokafka.consumer.consumer": "fetch",
    "aiokafka.producer": "produce",
}
"""aiokafka's logger (or a parent of it) → the kind of error: connection (connects, metadata), fetch,
group (coordinator, join, heartbeat, offset commit), produce (requests answered with an error)."""
NOT_ERRORS = (
    "Sending username and password in the clear",
    "client_rack is set",
    "socket.inet_pton not available",
    "Unrecognized ``auto_offset_reset``",
    "Kafka 0.8.2 quirk",
)
"""aiokafka warnings about configuration or the platform, not about a failure."""


class KafkaErrors:
    """Counts by ``(client, kind)``; written from the event loop, faust's consumer thread and log calls."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def note(self, kind: str, client: str | None = None) -> None:
        """Count one error of ``kind``, for ``client`` (default: the current context's :data:`CLIENT`)."""
        with self._lock:
            self.counts[(client or CLIENT.get(), kind)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.counts)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def kind_of(logger: str) -> str:
    """The kind of error an aiokafka logger reports (its module's, or its nearest package's)."""
    if logger in KINDS:
        return KINDS[logger]
    name = logger.rpartition(".")[0]
    while "." in name:  # the bare ``aiokafka`` is client.py's logger, not a fallback
        kind = KINDS.get(name)
        if kind is not None:
            return kind
        name = name.rpartition(".")[0]
    return "other"


class ClientLogCounter(logging.Handler):
    """Counts aiokafka's warnings and errors (the failures it retries or gives up on) into ``errors``."""

    def __init__(self, errors: KafkaErrors) -> None:
        super().__init__(logging.WARNING)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and str(record.msg).startswith(NOT_ERRORS):
            return
        self.errors.note(kind_of(record.name))


def count_client_logs(errors: KafkaErrors, logger: str = "aiokafka") -> ClientLogCounter:
    """Start counting ``logger``'s reports; remove the returned handler from it to stop."""
    handler = ClientLogCounter(errors)
    logging.getLogger(logger).addHandler(handler)
    return handler


def stop_counting(handler: ClientLogCounter, logger: str = "aiokafka") -> None:
    logging.getLogger(logger).removeHandler(handler)


class SendErrorSensor(faust.Sensor):
    """faust's producer reports a send that failed (an edge, a seed or a changelog record) to its sensors."""

    def __init__(self, errors: KafkaErrors, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors = errors

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.errors.note("send", client="faust")
