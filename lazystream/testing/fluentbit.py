"""A test stand-in for Fluent Bit's forward input → Lua key → Kafka output (``fluentbit/fluent-bit.yaml``).

Fluent Bit is in no registry the project's machines reach, so tests run this instead: it accepts what
fluent-logger sends (the Forward protocol v1: Message, Forward, PackedForward and CompressedPackedForward
modes; integer or ``EventTime`` times; ``chunk`` acknowledgements) and produces each record to Kafka as
``out_kafka`` with ``format: json`` does: a compact JSON object whose **first** key is the timestamp key (a
double), followed by the record's own keys in order, keyed by ``kafka_key`` as ``fluentbit/lazystream.lua``
sets it (:func:`caller_key` is that function in Python; a test runs both over the same records), with
``acks=all``, gzip, and the Java/murmur2 partitioner (aiokafka's default, librdkafka's ``murmur2_random``).

    async with ForwardToKafka("127.0.0.1:19092", "access") as stand_in:
        sender = FluentSender("lazystream", port=stand_in.port)
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
from aiokafka import AIOKafkaProducer

from lazystream.config import KafkaSecuritySettings
from lazystream.kafka.security import client_security

log = logging.getLogger(__name__)

KEY_FIELD = "kafka_key"
TIMESTAMP_KEY = "@timestamp"


def caller_key(record: dict[str, Any]) -> str | None:
    """``lazystream_key`` of ``fluentbit/lazystream.lua``, in Python: the record's caller, or None."""
    k, cluster = record.get("kubernetes"), record.get("upstream_cluster")
    if isinstance(k, dict) and isinstance(cluster, str) and cluster.startswith("outbound|"):
        labels = k.get("labels")
        if not isinstance(labels, dict):
            labels = {}
        app = _lua_or(labels.get("service.istio.io/canonical-name"), labels.get("app"), k.get("pod_name"))
        if isinstance(app, str) and isinstance(k.get("namespace_name"), str):
            return f"{k['namespace_name']}/{app}"
    ip = _strip_port(record.get("peer_address")) or _strip_port(record.get("downstream_remote_address"))
    if ip is not None and not (ip.startswith("127.") or ip == "::1"):
        return ip
    principal = record.get("peer_principal")
    if isinstance(principal, str) and principal:
        return principal
    return None


def _lua_or(*values: Any) -> Any:
    """Lua's ``a or b``: only nil and false are false (an empty string is true)."""
    return next((v for v in values if v is not None and v is not False), None)


def _strip_port(address: Any) -> str | None:
    if not isinstance(address, str) or address in ("", "-"):
        return None
    if address.startswith("[") and address.find("]") > 1:
        return address[1 : address.index("]")]
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host and ":" not in host:
        return host
    return address


def kafka_value(timestamp: float, record: dict[str, Any]) -> bytes:
    """``out_kafka``'s JSON: the timestamp key first, then the record's keys in order."""
    return orjson.dumps({TIMESTAMP_KEY: timestamp, **record})


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0 and len(data) == 8:  # EventTime: big-endian seconds and nanoseconds
        seconds, nanos = struct.unpack(">II", data)
        return seconds + nanos / 1e9
    return msgpack.ExtType(code, data)


def entries(message: Any) -> tuple[str, list[tuple[float, dict[str, Any]]], dict[str, Any]]:
    """The tag, ``(time, record)`` entries and options of one Forward-protocol message, in any mode."""
    if not isinstance(message, list | tuple) or len(message) < 2 or not isinstance(message[0], str):
        raise ValueError(f"not a Forward-protocol message: {str(message)[:80]}")
    tag, second = message[0], message[1]
    if isinstance(second, int | float) and len(message) >= 3:  # Message mode
        options = message[3] if len(message) > 3 and isinstance(message[3], dict) else {}
        return tag, [(float(second), message[2])], options
    options = message[2] if len(message) > 2 and isinstance(message[2], dict) else {}
    if isinstance(second, list | tuple):  # Forward mode
        return tag, [(float(t), r) for t, r in second], options
    if isinstance(second, bytes | str):  # PackedForward, maybe gzip-compressed
        data = second.encode("latin-1") if isinstance(second, str) else second
        if options.get("compressed") == "gzip":
            data = gzip.decompress(data)
        unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext_hook)
        unpacker.feed(data)
        return tag, [(float(t), r) for t, r in unpacker], options
    raise ValueError(f"unknown Forward-protocol mode: {type(second).__name__}")


class ForwardToKafka:
    """Listens for fluent-logger on ``host:port`` (0: a free port, see :attr:`port`) and produces to
    ``topic``, over TLS and SASL when ``security`` says so (as ``out_kafka``'s ``rdkafka.security.protocol``
    and friends would). ``received`` counts records in, ``produced`` records acknowledged by Kafka."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: KafkaSecuritySettings | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = security or KafkaSecuritySettings()
        self.topic = topic
        self.host = host
        self.port = port
        self.received = 0
        self.produced = 0
        self.tags: list[str] = []
        self._server: asyncio.Server | None = None
        self._producer: AIOKafkaProducer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            compression_type="gzip",
            linger_ms=50,
            **client_security(self.security).aiokafka_kwargs(),
        )
        await self._producer.start()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> ForwardToKafka:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext_hook)
        try:
            while data := await reader.read(65536):
                unpacker.feed(data)
                for message in unpacker:
                    await self._handle(message, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except ValueError as exc:  # Fluent Bit drops the connection of a peer that breaks the protocol
            log.warning("forward stand-in: %s", exc)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, message: Any, writer: asyncio.StreamWriter) -> None:
        tag, items, options = entries(message)
        if self._producer is None:
            raise RuntimeError("ForwardToKafka is not started")
        sends = []
        for timestamp, record in _records(items):
            self.received += 1
            self.tags.append(tag)
            key = caller_key(record)
            if key is not None:
                record[KEY_FIELD] = key
            sends.append(
                await self._producer.send(
                    self.topic, kafka_value(timestamp, record), key=None if key is None else key.encode()
                )
            )
        for sent in sends:
            await sent
            self.produced += 1
        if "chunk" in options:
            writer.write(msgpack.packb({"ack": options["chunk"]}))
            await writer.drain()


def _records(items: list[tuple[float, Any]]) -> Iterator[tuple[float, dict[str, Any]]]:
    for timestamp, record in items:
        if isinstance(record, dict):
            yield timestamp, record
