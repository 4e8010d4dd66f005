"""Hostile access records: what a misbehaving or malicious producer could put on the access topic.

:func:`hostile_records` mixes, from a seeded random generator (the same seed gives the same records):
random bytes, truncated and deeply nested JSON, JSON that is not an object, fields of the wrong type, huge
fields (over and under ``fence.maxRecordBytes``), hostile ``Host`` headers (look-alikes of admitted hosts,
CR/LF, paths, user-info, ports out of range, wildcards, overlong labels), IP authorities (v4 and v6),
invalid UTF-8 and arbitrary unicode, Istio text lines with broken quoting, and a share of valid records to
admitted hosts, so that learning has to keep working in the middle of it. Callers (from ``sources``) are the
peer addresses of real fences, or random addresses.

lazystream must never crash on these, must dead-letter what it cannot parse (with the reason), and must never
put a host that the cluster does not admit into a Sidecar. ``parse_record`` is the oracle for which records
are dead letters and why (:func:`expected_dead_letters`).
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson

from lazystream.domain.records import ParseError, parse_record
from lazystream.testing.records import fluent_bit, global_sidecar_record, istio_text_line

KINDS: dict[str, float] = {
    "valid": 0.15,
    "random_bytes": 0.1,
    "truncated_json": 0.1,
    "nested_json": 0.02,
    "not_an_object": 0.05,
    "wrong_types": 0.1,
    "huge_field": 0.01,
    "hostile_host": 0.2,
    "ip_authority": 0.07,
    "unicode": 0.1,
    "istio_text": 0.1,
}
"""Share of each kind of record."""


def hostile_hosts(admitted: str, namespace: str) -> list[str]:
    """Host headers that must never be admitted, built around one admitted short name (under the reserved
    ``.invalid`` domain, which no ServiceEntry of a shared test cluster declares)."""
    fqdn = f"{admitted}.{namespace}.svc.cluster.local"
    return [
        f"{admitted}.evil.invalid",
        f"{fqdn}.evil.invalid",
        f"evil.invalid#{fqdn}",
        f"evil.invalid/{fqdn}",
        f"{fqdn}@evil.invalid",
        f"user:pass@{fqdn}",
        f"{admitted}\r\nX-Injected: 1",
        f"{admitted}\n{fqdn}",
        f"{admitted} {fqdn}",
        f"{fqdn}:99999",
        f"{fqdn}:-1",
        f"{fqdn}:http",
        f"*.{namespace}.svc.cluster.local",
        "*",
        "*/*",
        f"{namespace}/*",
        f"../{admitted}",
        f"{admitted}%00.evil.invalid",
        f"{admitted}\x00",
        "a" * 64 + f".{namespace}.svc.cluster.local",
        ".".join(["x"] * 200),
        f"{admitted.upper()}.{namespace.upper()}.SVC.CLUSTER.LOCAL.",
        f"{admitted}..{namespace}",
        f"-{admitted}",
        f"{admitted}-",
        "localhost",
        "kubernetes.default.svc.cluster.local.evil",
        f"{admitted[0]}\u0435{admitted[1:]}",  # a Cyrillic look-alike letter
        f"xn--{admitted}-evil.{namespace}",
        f"{admitted}\u200b",  # zero-width space
        "\U0001f4a5.invalid",
        "",
        " ",
        "%",
        "[::1",
        "attacker.invalid",
    ]


IP_AUTHORITIES = [
    "10.0.0.1",
    "10.0.0.1:80",
    "192.168.1.1:8080",
    "127.0.0.1:15000",
    "[::1]:80",
    "[fe80::1%25eth0]:80",
    "::1",
    "0.0.0.0:0",
    "255.255.255.255",
    "169.254.169.254:80",
    "0x7f.1:80",
    "2130706433",
]


class HostileRecords:
    """A seeded generator of hostile records (see the module docstring)."""

    def __init__(
        self,
        *,
        sources: Sequence[str],
        admitted: Sequence[str],
        namespace: str,
        seed: int = 0,
        kinds: dict[str, float] | None = None,
        max_record_bytes: int = 65536,
    ) -> None:
        """``sources``: IP addresses of callers that have fences; ``admitted``: short names of Services in
        ``namespace``; ``max_record_bytes``: the worker's limit, so huge fields land on both sides of it."""
        self.rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        self.sources = list(sources)
        self.admitted = list(admitted)
        self.namespace = namespace
        self.max_record_bytes = max_record_bytes
        shares = kinds or KINDS
        self._names = list(shares)
        self._weights = [shares[k] for k in self._names]
        self._makers: dict[str, Callable[[], bytes]] = {
            "valid": self.valid,
            "random_bytes": self.random_bytes,
            "truncated_json": self.truncated_json,
            "nested_json": self.nested_json,
            "not_an_object": self.not_an_object,
            "wrong_types": self.wrong_types,
            "huge_field": self.huge_field,
            "hostile_host": self.hostile_host,
            "ip_authority": self.ip_authority,
            "unicode": self.unicode,
            "istio_text": self.istio_text,
        }
        self._hostile = [h for a in self.admitted for h in hostile_hosts(a, namespace)]
        self.kinds: Counter[str] = Counter()
        """How many records of each kind were generated."""

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self.next()

    def take(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self.next()

    def next(self) -> bytes:
        kind = self.rng.choices(self._names, self._weights)[0]
        self.kinds[kind] += 1
        return self._makers[kind]()

    # -- pieces ---------------------------------------------------------------------------------------------

    def _peer(self) -> str:
        if self.sources and self.rng.random() < 0.9:
            ip = self.rng.choice(self.sources)
        else:
            ip = ".".join(str(self.rng.randrange(256)) for _ in range(4))
        return f"{ip}:{self.rng.randrange(1, 65536)}"

    def _record(self, authority: Any, **overrides: Any) -> dict[str, Any]:
        record = global_sidecar_record(
            authority="x",
            peer_address=self._peer(),
            source_namespace=self.namespace,
            time=1_800_000_000.0 + self.rng.random() * 1000,
        )
        record["authority"] = authority
        record.update(overrides)
        return record

    def _encode(self, record: dict[str, Any]) -> bytes:
        """Plain JSON, or wrapped as Fluent Bit writes it."""
        if self.rng.random() < 0.5:
            stamp = record.get("time")
            return fluent_bit(record, timestamp=stamp if isinstance(stamp, float) else 0.0)
        return orjson.dumps(record)

    def _text(self, size: int) -> str:
        alphabet = string.printable + "\u00e9\u4e2d\u0430\U0001f600\u202e\ufeff"
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    # -- kinds ----------------------------------------------------------------------------------------------

    def valid(self) -> bytes:
        host = self.rng.choice(self.admitted)
        authority = host if self.rng.random() < 0.5 else f"{host}.{self.namespace}.svc.cluster.local:80"
        return self._encode(self._record(authority))

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 400))

    def truncated_json(self) -> bytes:
        data = self._encode(self._record(self.rng.choice(self.admitted)))
        return data[: self.rng.randrange(1, len(data))]

    def nested_json(self) -> bytes:
        depth = self.rng.choice([10, 600, 2000, 5000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        return (opener * depth + "1" + closer * depth).encode()

    def not_an_object(self) -> bytes:
        return self.rng.choice([b"[]", b"[1, 2]", b'"details"', b"null", b"true", b"42", b"1e999", b"{}"])

    def wrong_types(self) -> bytes:
        field = self.rng.choice(
            ["authority", "peer_address", "time", "source_namespace", "response_code", "original_destination"]
        )
        value = self.rng.choice([None, 42, -1.5, True, [], ["details"], {"host": "details"}, "", 1e308])
        record = self._record(self.rng.choice(self.admitted))
        record[field] = value
        return self._encode(record)

    def huge_field(self) -> bytes:
        over = self.rng.random() < 0.5
        size = (
            self.max_record_bytes + self.rng.randrange(1, 4096) if over else self.rng.randrange(1000, 30000)
        )
        field = self.rng.choice(["authority", "user_agent", "peer_principal", "x_forwarded_for"])
        value = self.rng.choice(self.admitted) + "." + "a" * size if field == "authority" else "a" * size
        record = self._record(self.rng.choice(self.admitted))
        record[field] = value
        return self._encode(record)

    def hostile_host(self) -> bytes:
        return self._encode(self._record(self.rng.choice(self._hostile)))

    def ip_authority(self) -> bytes:
        return self._encode(self._record(self.rng.choice(IP_AUTHORITIES)))

    def unicode(self) -> bytes:
        choice = self.rng.randrange(3)
        if choice == 0:  # invalid UTF-8 inside otherwise fine JSON
            return b'{"lazystream":"global-sidecar","authority":"\xff\xfe' + self.rng.randbytes(8) + b'"}'
        if choice == 1:
            return self._encode(self._record(self._text(self.rng.randrange(1, 80))))
        record = self._record(self.rng.choice(self.admitted))
        record["source_namespace"] = self._text(20)
        record["peer_principal"] = self._text(30)
        return self._encode(record)

    def istio_text(self) -> bytes:
        authority = self.rng.choice([*self._hostile, *self.admitted, *IP_AUTHORITIES, '"', 'a" "b'])
        line = istio_text_line(
            authority=authority,
            upstream_cluster=self.rng.choice(
                ["outbound|80||x", "PassthroughCluster", "BlackHoleCluster", "-"]
            ),
            downstream_remote_address=self._peer(),
        )
        if self.rng.random() < 0.3:
            line = line[: self.rng.randrange(1, len(line))]
        return line.encode("utf-8", errors="surrogatepass")


def hostile_records(
    count: int, *, sources: Sequence[str], admitted: Sequence[str], namespace: str, seed: int = 0
) -> list[bytes]:
    """``count`` hostile records (a list; use :class:`HostileRecords` to stream millions)."""
    return list(
        HostileRecords(sources=sources, admitted=admitted, namespace=namespace, seed=seed).take(count)
    )


def expected_dead_letters(records: Iterable[bytes], max_record_bytes: int = 65536) -> Counter[str]:
    """Dead-letter reasons the worker must give these records: ``parse_record`` decides."""
    reasons: Counter[str] = Counter()
    for data in records:
        parsed = parse_record(data, max_bytes=max_record_bytes)
        if isinstance(parsed, ParseError):
            reasons[parsed.problem.value] += 1
    return reasons
