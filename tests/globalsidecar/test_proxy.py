"""The global-sidecar over real sockets: forwarding, pooling, framing, refusals, ports, health, records."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lazystream.config import GlobalSidecarSettings, KubeSettings
from lazystream.domain.forwarding import HOP_HEADER
from lazystream.domain.records import AccessRecord, RecordFormat, parse_record
from lazystream.globalsidecar.app import GlobalSidecar
from lazystream.globalsidecar.emit import StdoutEmitter
from lazystream.testing.http import Client, EchoUpstream
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.timeout(60)


class ListEmitter:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.emitted = 0
        self.dropped = 0

    def emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.emitted += 1

    def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[GlobalSidecar, ListEmitter]]:
    emitter = ListEmitter()
    values = {"port": free_port(), "probe_port": free_port(), "service_cache": False, "records": "none"}
    sidecar = GlobalSidecar(GlobalSidecarSettings(**{**values, **settings}), KubeSettings(), emitter=emitter)
    task = asyncio.create_task(sidecar.run())
    try:
        await asyncio.wait_for(sidecar.ready.wait(), 10)
        yield sidecar, emitter
    finally:
        sidecar.stop()
        await asyncio.wait_for(task, 10)
        # name lookups and the emitter's close ran on the default executor: its thread ends here
        await asyncio.get_running_loop().shutdown_default_executor()


@pytest.fixture
async def upstream() -> AsyncIterator[EchoUpstream]:
    async with EchoUpstream() as server:
        yield server


def headers_of(response_json: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in response_json["headers"]}


async def test_forwards_to_the_original_destination_over_one_pooled_connection(
    upstream: EchoUpstream,
) -> None:
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        for i in range(20):
            response = await client.request(
                "GET",
                f"/details/{i}",
                [
                    ("Host", f"details:{upstream.port}"),
                    ("Slime-Source-Ns", "default"),
                    ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("Connection", "keep-alive, X-Private"),
                    ("X-Private", "hop-by-hop"),
                ],
            )
            assert response.status == 200
            seen = response.json()
            assert seen["path"] == f"/details/{i}"
        received = headers_of(seen)
        assert received["host"] == f"details.default:{upstream.port}"  # no Service cache: always completed
        assert "slime-source-ns" not in received
        assert "slime-orig-dest" not in received
        assert "x-private" not in received
        assert received[HOP_HEADER]
        assert received["x-forwarded-for"] == "10.0.0.1"
        assert upstream.connections == 1  # keep-alive both sides
        assert sidecar.pool.reused == 19
    assert len(emitter.records) == 20
    record = emitter.records[-1]
    assert record["authority"] == f"details:{upstream.port}"
    assert record["source_namespace"] == "default"
    assert record["original_destination"] == f"127.0.0.1:{upstream.port}"
    assert record["upstream"] == f"127.0.0.1:{upstream.port}"
    assert record["response_code"] == 200
    assert record["x_forwarded_for"] == "10.0.0.1"
    assert record["peer_address"].startswith("127.0.0.1:")
    assert record["duration_ms"] > 0
    parsed = parse_record(orjson.dumps(record))
    assert isinstance(parsed, AccessRecord)
    assert parsed.format is RecordFormat.GLOBAL_SIDECAR


async def test_short_names_complete_only_for_known_services(upstream: EchoUpstream) -> None:
    known = {("default", "details")}
    async with running() as (sidecar, _):
        assert sidecar.proxy is not None
        sidecar.proxy.exists = lambda ns, name: (ns, name) in known
        async with Client("127.0.0.1", sidecar.settings.port) as client:
            dest = [("Slime-Source-Ns", "default"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
            hosts = []
            for host in ("details", "ratings:9080"):
                response = await client.request("GET", "/", [("Host", host), *dest])
                hosts.append(headers_of(response.json())["host"])
    assert hosts == ["details.default", "ratings:9080"]


async def test_without_orig_dest_the_host_is_dialled(upstream: EchoUpstream) -> None:
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        response = await client.request("GET", "/x", [("Host", f"localhost:{upstream.port}")])
        assert response.status == 200
        # the absolute form names the host too
        response = await client.request("GET", f"http://127.0.0.1:{upstream.port}/abs", [("Host", "ignored")])
        assert response.json()["path"] == "/abs"
    assert [r["upstream"] for r in emitter.records] == [
        f"localhost:{upstream.port}",
        f"127.0.0.1:{upstream.port}",
    ]


async def test_refusals_are_400_and_502(upstream: EchoUpstream) -> None:
    dead = free_port()
    async with running() as (sidecar, emitter):
        port = sidecar.settings.port
        cases = [
            ([("Host", "details"), ("Slime-Orig-Dest", "10.0.0.1:http")], 400),
            ([("Host", "details"), ("Slime-Orig-Dest", f"127.0.0.1:{dead}")], 502),  # nothing listens
            ([("Host", f"127.0.0.1:{port}")], 502),  # itself, by address
            ([("Host", f"localhost:{port}")], 502),  # itself, by name: found after connecting
            ([("Host", "x"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}"), (HOP_HEADER, "other")], 502),
        ]
        for headers, status in cases:
            async with Client("127.0.0.1", port) as client:
                response = await client.request("GET", "/", headers)
                assert response.status == status, (headers, response.body)
        async with Client("127.0.0.1", port) as client:  # not HTTP at all
            assert client.writer is not None
            assert client.reader is not None
            client.writer.write(b"HELLO\r\n\r\n")
            assert (await client.reader.read()).startswith(b"HTTP/1.1 400 ")
        assert upstream.requests == 0  # nothing reached the upstream
    assert [r["response_code"] for r in emitter.records] == [status for _, status in cases]


async def test_chunked_and_large_bodies_are_relayed_in_their_framing(upstream: EchoUpstream) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: streamed, not buffered
    async with running() as (sidecar, _), Client("127.0.0.1", sidecar.settings.port) as client:
        dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
        response = await client.request("POST", "/chunked", dest, big, chunked=True)
        assert response.status == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert response.json()["body_bytes"] == len(big)
        response = await client.request("PUT", "/", dest, big)
        assert response.json()["body_bytes"] == len(big)
        response = await client.request("HEAD", "/", dest)
        assert response.body == b""
        response = await client.request("GET", "/after", dest)  # the connection is still in step
        assert response.json()["path"] == "/after"


async def test_an_upstream_that_closed_a_pooled_connection_is_redialled(upstream: EchoUpstream) -> None:
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
        for _ in range(3):
            response = await client.request("GET", "/close", dest)  # the upstream hangs up after each
            assert response.status == 200
        assert upstream.connections == 3
    assert [r["response_code"] for r in emitter.records] == [200, 200, 200]


async def test_the_upstream_timeout_answers_504(upstream: EchoUpstream) -> None:
    async with running(upstream_timeout_seconds=0.2) as (sidecar, _):
        async with Client("127.0.0.1", sidecar.settings.port) as client:
            dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
            response = await client.request("GET", "/slow", dest)
        assert response.status == 504
        assert b"no whole response within 0.2 s" in response.body


async def test_an_upgrade_becomes_a_tunnel(upstream: EchoUpstream) -> None:
    async with running() as (sidecar, _), Client("127.0.0.1", sidecar.settings.port) as client:
        assert client.writer is not None
        assert client.reader is not None
        client.writer.write(
            b"GET /upgrade HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
            + f"Slime-Orig-Dest: 127.0.0.1:{upstream.port}\r\n\r\n".encode()
        )
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        client.writer.write(b"ping")
        assert await client.reader.readexactly(4) == b"ping"


async def test_the_principal_comes_from_the_local_sidecars_xfcc(upstream: EchoUpstream) -> None:
    xfcc = "By=spiffe://td/ns/mesh-operator/sa/gs;Hash=1;URI=spiffe://td/ns/default/sa/productpage"
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
        await client.request("GET", "/", [*dest, ("X-Forwarded-Client-Cert", xfcc)])
    assert emitter.records[0]["peer_principal"] == "spiffe://td/ns/default/sa/productpage"


async def test_wormhole_ports_follow_the_ports_file(tmp_path: Path, upstream: EchoUpstream) -> None:
    ports_file = tmp_path / "cfg"
    first, second = free_port(), free_port()
    ports_file.write_text(f"wormholePorts: [{first}]\n")
    async with running(ports_file=ports_file, ports_reload_seconds=0.1) as (sidecar, _):
        assert sidecar.proxy is not None
        assert sidecar.proxy.ports == {sidecar.settings.port, first}
        ports_file.write_text(f"wormholePorts: ['{second}']\n")
        for _ in range(100):
            if second in sidecar.proxy.ports:
                break
            await asyncio.sleep(0.05)
        assert sidecar.proxy.ports == {sidecar.settings.port, first, second}  # ports are only added
        ports_file.write_text("wormholePorts: [nonsense]\n")  # an invalid file keeps the ports
        await asyncio.sleep(0.3)
        assert sidecar.proxy.ports == {sidecar.settings.port, first, second}
        async with Client("127.0.0.1", second) as client:
            response = await client.request(
                "GET",
                "/",
                [("Host", "svc"), ("Slime-Orig-Dest", "127.0.0.1")],  # no port: the listener's
            )
        assert response.status == 502  # the listener's own port is itself


async def test_removed_ports_close_with_cleanup(tmp_path: Path) -> None:
    ports_file = tmp_path / "cfg"
    extra = free_port()
    ports_file.write_text(f"wormholePorts: [{extra}]\n")
    async with running(ports_file=ports_file, ports_reload_seconds=0.1, cleanup_ports=True) as (sidecar, _):
        assert sidecar.proxy is not None
        ports_file.write_text("wormholePorts: []\n")
        for _ in range(100):
            if extra not in sidecar.proxy.ports:
                break
            await asyncio.sleep(0.05)
        assert sidecar.proxy.ports == {sidecar.settings.port}  # never its own port
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", extra)


async def test_health_port() -> None:
    async with running() as (sidecar, _):
        for path in ("/healthz/ready", "/healthz/live"):
            async with Client("127.0.0.1", sidecar.settings.probe_port) as client:
                response = await client.request("GET", path)
                assert response.status == 200


def test_stdout_records_are_json_lines_the_worker_reads() -> None:
    stream = io.BytesIO()
    stream.close = lambda: None  # type: ignore[method-assign]
    emitter = StdoutEmitter(queue_size=10, stream=stream)
    from lazystream.testing import global_sidecar_record

    for i in range(3):
        emitter.emit(global_sidecar_record(peer_address=f"10.0.0.{i}:1"))
    emitter.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert all(isinstance(parse_record(line), AccessRecord) for line in lines)


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    import threading

    class Stuck(io.BytesIO):
        release = threading.Event()

        def write(self, data: Any) -> int:
            self.release.wait(10)
            return len(data)

    stream = Stuck()
    emitter = StdoutEmitter(queue_size=2, stream=stream)
    for _ in range(50):
        emitter.emit({"n": 1})
    assert emitter.dropped >= 40
    stream.release.set()
    emitter.close()


async def test_the_hot_path_relays_chunked_responses_small_bodies_and_pipelined_requests(
    upstream: EchoUpstream,
) -> None:
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
        for _ in range(2):  # chunked, trailers included, and the pooled connection still in step
            response = await client.request("GET", "/chunked", dest)
            assert response.headers.get("transfer-encoding") == "chunked"
            assert response.json()["path"] == "/chunked"
        response = await client.request("POST", "/small", dest, b"y" * 1000)
        assert response.json()["body_bytes"] == 1000
        assert client.writer is not None
        assert client.reader is not None
        one = b"GET /p%d HTTP/1.1\r\nHost: svc\r\nSlime-Orig-Dest: 127.0.0.1:%d\r\n\r\n"
        client.writer.write(b"".join(one % (i, upstream.port) for i in range(3)))  # pipelined
        for i in range(3):
            head = await client.reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert f'"/p{i}"'.encode() in await client.reader.readexactly(length)
        assert upstream.connections == 1
        assert sidecar.proxy is not None
        assert sidecar.proxy.counters["connections"] == 1
    assert [r["response_code"] for r in emitter.records] == [200] * 6


async def test_a_connection_moves_to_streams_for_a_streamed_body_and_keeps_serving(
    upstream: EchoUpstream,
) -> None:
    big = b"z" * (200 * 1024)
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
        assert (await client.request("GET", "/first", dest)).json()["path"] == "/first"
        response = await client.request("POST", "/big", dest, big, chunked=True)
        assert response.json()["body_bytes"] == len(big)
        assert (await client.request("GET", "/last", dest)).json()["path"] == "/last"
        assert sidecar.proxy is not None
        assert sidecar.proxy.counters["connections"] == 1
    assert len(emitter.records) == 3


def test_a_chunked_body_ends_where_it_ends_at_every_split() -> None:
    from lazystream.globalsidecar.http1 import BadMessage, ChunkedBody

    body = b"5;ext=1\r\nhello\r\n10\r\n" + b"a" * 16 + b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
    for split in range(len(body)):
        chunks = ChunkedBody(request=False)
        first, used = chunks.feed(body[:split])
        assert used == split
        assert body.startswith(first)  # only whole lines and chunk data are passed on
        rest, used = chunks.feed(body[split:] + b"GET /next")
        assert (used, chunks.ended) == (len(body) - split, True)
        assert first + rest == body
    with pytest.raises(BadMessage):
        ChunkedBody(request=False).feed(b"zz\r\n")


async def test_the_test_runs_on_the_loop_its_id_names(request: pytest.FixtureRequest) -> None:
    from lazystream.globalsidecar.app import loop_name

    assert f"[{loop_name(asyncio.get_running_loop())}]" in request.node.name


async def read_response(client: Client) -> tuple[bytes, bytes]:
    assert client.reader is not None
    head = await client.reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await client.reader.readexactly(length)


async def test_requests_in_pieces_and_bodies_that_come_later(upstream: EchoUpstream) -> None:
    """A whole head in one read is parsed where it lies; anything else goes through the buffer."""
    async with running() as (sidecar, emitter), Client("127.0.0.1", sidecar.settings.port) as client:
        assert client.writer is not None
        head = b"POST /piece HTTP/1.1\r\nHost: svc\r\nSlime-Orig-Dest: 127.0.0.1:%d\r\n" % upstream.port
        for pieces in (
            [
                b"GET",
                b" /piece HTTP/1.1\r\nHost: svc\r\nSlime-Orig-Dest: 127.0.0.1:%d\r\n\r\n" % upstream.port,
            ],
            [head + b"Content-Length: 5\r\n\r\n", b"hello"],  # the head alone, then its body
            [head + b"Content-Length: 5\r\n\r\nhel", b"lo"],
            [head + b"Content-Length: 0\r\n\r", b"\n"],
        ):
            for piece in pieces:
                client.writer.write(piece)
                await client.writer.drain()
                await asyncio.sleep(0.02)  # separate reads
            response_head, body = await read_response(client)
            assert response_head.startswith(b"HTTP/1.1 200 ")
            seen = orjson.loads(body)
            assert seen["path"] == "/piece"
            assert seen["body_bytes"] == (5 if b"Content-Length: 5" in pieces[0] else 0)
        assert upstream.connections == 1
    assert [r["response_code"] for r in emitter.records] == [200] * 4


async def test_records_on_stdout_while_requests_go_on(upstream: EchoUpstream) -> None:
    """The stdout emitter's writer thread hands records on while the proxy serves, not only at close."""
    stream = io.BytesIO()
    emitter = StdoutEmitter(queue_size=100, stream=stream)
    settings = GlobalSidecarSettings(port=free_port(), probe_port=free_port(), service_cache=False)
    sidecar = GlobalSidecar(settings, KubeSettings(), emitter=emitter)
    task = asyncio.create_task(sidecar.run())
    try:
        await asyncio.wait_for(sidecar.ready.wait(), 10)
        async with Client("127.0.0.1", settings.port) as client:
            dest = [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
            for _ in range(3):
                assert (await client.request("GET", "/r", dest)).status == 200
        for _ in range(100):
            if stream.getvalue().count(b"\n") == 3:
                break
            await asyncio.sleep(0.02)
        lines = stream.getvalue().splitlines()
        assert [orjson.loads(line)["response_code"] for line in lines] == [200, 200, 200]
    finally:
        sidecar.stop()
        await asyncio.wait_for(task, 10)
        await asyncio.get_running_loop().shutdown_default_executor()
