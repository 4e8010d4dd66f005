"""The real ``lazystream global-sidecar`` process against hostile HTTP clients, on each of its event loops.

Every workload can reach this proxy, so each case is a request an attacker on the same host could send:
header injection through bare LF/CR/NUL, smuggling through ambiguous framing, malformed chunk sizes, oversized
heads, slow or idle clients. The upstream is a raw TCP server that records exactly the bytes it receives. For
each case the test checks the status the client got, that the connection closed where it should, that the
upstream received nothing of a refused request (or exactly the canonical request for an accepted one), and
that other clients are still served afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import free_port
from tests.fixtures.worker import LAZYSTREAM

pytestmark = pytest.mark.timeout(120)

HEADER_TIMEOUT = 2.0
CLIENT_IDLE = 4.0
RESPONSE_HEAD_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
MAX_BODY = 1024 * 1024
IDLE_CONNECTIONS = 5000


# --- the raw upstream ------------------------------------------------------------------------------------


class RecordingUpstream:
    """Records every byte it receives, in order, on one thread of its own (an asyncio loop). Answers each
    request it can frame with ``200 ok``; ``/silent`` gets no answer, ``/evil`` a response head with a bare
    LF in a field value."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Recorder(self), "127.0.0.1", 0, backlog=1024)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, name="recording-upstream", daemon=True)
        self.thread.start()

    def take(self) -> bytes:
        with self.lock:
            data = bytes(self.received)
            self.received.clear()
        return data

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            self.server.close_clients()  # type: ignore[attr-defined]

        if hasattr(self.server, "close_clients"):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        else:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _Recorder(asyncio.Protocol):
    def __init__(self, upstream: RecordingUpstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        with self.upstream.lock:
            self.upstream.received += data
        self.buffer += data
        assert self.transport is not None
        while (end := _message_end(self.buffer)) is not None:
            message, self.buffer = self.buffer[:end], self.buffer[end:]
            target = message.split(b"\r\n", 1)[0]
            if b" /silent " in target:
                continue
            if b" /evil " in target:
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nX-A: a\nX-Injected: yes\r\nContent-Length: 2\r\n\r\nok"
                )
                continue
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _message_end(buffer: bytes) -> int | None:
    """Where the first request in ``buffer`` ends (Content-Length or chunked, no trailers), if it is all
    there: the proxy sends only canonical requests, so this framing is enough."""
    head = buffer.find(b"\r\n\r\n")
    if head < 0:
        return None
    lower = buffer[:head].lower()
    start = head + 4
    if b"\r\ntransfer-encoding: chunked" in lower:
        end = buffer.find(b"\r\n0\r\n\r\n", start - 2)
        return None if end < 0 else end + 7
    match = re.search(rb"\r\ncontent-length: *([0-9]+)", lower)
    length = int(match.group(1)) if match else 0
    return start + length if len(buffer) >= start + length else None


# --- the proxy -------------------------------------------------------------------------------------------


@dataclass
class Sidecar:
    port: int
    upstream: RecordingUpstream
    process: WorkerProcess

    def canonical(self, target: str = "/after", host: str = "svc", extra: bytes = b"") -> bytes:
        """The request the upstream must see for a plain GET (the loop marker's value normalised)."""
        return b"GET %s HTTP/1.1\r\nHost: %s\r\n%slazystream-global-sidecar: *\r\n\r\n" % (
            target.encode(),
            host.encode(),
            extra,
        )

    def request(self, target: str = "/after", headers: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
        dest = b"Slime-Orig-Dest: 127.0.0.1:%d\r\n" % self.upstream.port
        return b"GET %s %s\r\nHost: svc\r\n%s%s\r\n" % (target.encode(), version, dest, headers)


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def sidecar(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * IDLE_CONNECTIONS + 1000
    if soft < wanted:  # the proxy inherits it: 5,000 idle connections are 10,000 descriptors here and there
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    upstream = RecordingUpstream()
    port = free_port()
    env = {
        **os.environ,
        "LAZYSTREAM_GLOBAL_SIDECAR_LISTEN_ADDRESS": "127.0.0.1",
        "LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP": request.param,
        "LAZYSTREAM_GLOBAL_SIDECAR_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "LAZYSTREAM_GLOBAL_SIDECAR_CLIENT_IDLE_SECONDS": str(CLIENT_IDLE),
        "LAZYSTREAM_GLOBAL_SIDECAR_RESPONSE_HEAD_TIMEOUT_SECONDS": str(RESPONSE_HEAD_TIMEOUT),
        "LAZYSTREAM_GLOBAL_SIDECAR_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT),
        "LAZYSTREAM_GLOBAL_SIDECAR_MAX_BODY_BYTES": str(MAX_BODY),
    }
    log = tmp_path_factory.mktemp(f"hostile-{request.param}") / "global-sidecar.log"
    argv = [LAZYSTREAM, "global-sidecar", "--port", str(port), "--probe-port", str(free_port()),
            "--records", "none", "--no-service-cache", "--loglevel", "info"]  # fmt: skip
    process = WorkerProcess(argv, env, log)
    try:
        process.wait_for_output("lazystream global-sidecar ready", 30)
        assert f"event loop {request.param}" in process.output()
        yield Sidecar(port, upstream, process)
    finally:
        code = process.stop()
        upstream.close()
    assert code == 0, process.output()[-3000:]
    assert "Traceback" not in process.output(), process.output()[-5000:]


@dataclass
class Reply:
    data: bytes
    closed: bool
    """Whether the proxy closed the connection (end of stream or reset) before the read timed out."""

    @property
    def status(self) -> int:
        match = re.match(rb"HTTP/1\.1 ([0-9]{3}) ", self.data)
        assert match, f"no status line in {self.data[:200]!r}"
        return int(match.group(1))

    @property
    def statuses(self) -> list[int]:
        """The status of each response in ``data``, read by its framing (Content-Length; 1xx have none)."""
        statuses, data = [], self.data
        while data:
            end = data.find(b"\r\n\r\n")
            match = re.match(rb"HTTP/1\.1 ([0-9]{3}) ", data)
            assert match, f"not a response: {data[:200]!r}"
            assert end > 0, f"no end of head: {data[:200]!r}"
            length = re.search(rb"\r\ncontent-length: *([0-9]+)", data[:end].lower())
            statuses.append(int(match.group(1)))
            data = data[end + 4 + (int(length.group(1)) if length else 0) :]
        return statuses


def send(port: int, *pieces: bytes, pause: float = 0.0, timeout: float = 5.0) -> Reply:
    """Send ``pieces`` (``pause`` seconds apart) and read until the proxy closes or ``timeout`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the proxy may hang up before all of a huge request is sent
            for piece in pieces:
                sock.sendall(piece)
                if pause:
                    time.sleep(pause)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> Reply:
    data = b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return Reply(data, True)
        if not chunk:
            return Reply(data, True)
        data += chunk
    return Reply(data, False)


def normalised(data: bytes) -> bytes:
    return re.sub(rb"lazystream-global-sidecar: [^\r]*", b"lazystream-global-sidecar: *", data)


def assert_still_serving(sidecar: Sidecar) -> None:
    """A new client is served, and the upstream has received exactly its request since the last take."""
    reply = send(sidecar.port, sidecar.request(headers=b"Connection: close\r\n"))
    assert reply.status == 200, reply.data[:300]
    assert normalised(sidecar.upstream.take()) == sidecar.canonical()


# --- refused requests --------------------------------------------------------------------------------------

DEST = b"Slime-Orig-Dest: 127.0.0.1:{port}\r\n"


def chunked(*lines: bytes) -> bytes:
    return (
        b"POST /c HTTP/1.1\r\nHost: svc\r\n" + DEST + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(lines)
    )


GET = b"GET / HTTP/1.1\r\nHost: svc\r\n" + DEST
POST = b"POST / HTTP/1.1\r\nHost: svc\r\n" + DEST

REFUSED: list[tuple[str, bytes, int]] = [
    # header injection through line breaks and control bytes in values, names and the target
    ("bare LF in a value", GET + b"X-A: a\nX-Injected: yes\r\n\r\n", 400),
    ("bare LF smuggles TE", POST + b"X-A: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     + b"0\r\n\r\n", 400),
    ("bare LF hides a Slime header", b"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\n"
     + b"Slime-Orig-Dest: 127.0.0.1:1\r\n" + DEST + b"\r\n", 400),
    ("bare CR in a value", GET + b"X-A: a\rX-B: b\r\n\r\n", 400),
    ("NUL in a value", GET + b"X-A: a\x00b\r\n\r\n", 400),
    ("DEL in a value", GET + b"X-A: a\x7fb\r\n\r\n", 400),
    ("LF in the target", b"GET /a\nb HTTP/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("space in the target", b"GET /a b HTTP/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("control byte in the target", b"GET /a\x01 HTTP/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("obs-fold", GET + b"X-A: a\r\n folded\r\n\r\n", 400),
    ("space before the colon", b"GET / HTTP/1.1\r\nHost : svc\r\n" + DEST + b"\r\n", 400),
    ("header name not a token", GET + b"X(A): a\r\n\r\n", 400),
    ("method not a token", b"G(T / HTTP/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("target not origin-form", b"GET svc/a HTTP/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("bare-LF line endings", b"GET / HTTP/1.1\nHost: svc\n\n", 400),
    # the version
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: svc\r\n" + DEST + b"\r\n", 505),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: svc\r\n" + DEST + b"\r\n", 505),
    ("lower-case version", b"GET / http/1.1\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    ("no version", b"GET /\r\nHost: svc\r\n" + DEST + b"\r\n", 400),
    # Host
    ("no Host", b"GET / HTTP/1.1\r\n" + DEST + b"\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: svc\r\nHost: other\r\n" + DEST + b"\r\n", 400),
    ("Host with a space", b"GET / HTTP/1.1\r\nHost: svc other\r\n" + DEST + b"\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: a@svc\r\n" + DEST + b"\r\n", 400),
    ("two Slime-Orig-Dest", GET + DEST + b"\r\n", 400),
    # framing: Content-Length and Transfer-Encoding
    ("CL then TE", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE then CL", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("differing CLs", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("equal CLs on two lines", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL list", POST + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("CL with a sign", POST + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL negative", POST + b"Content-Length: -1\r\n\r\n", 400),
    ("CL in hex", POST + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("CL past the body limit", POST + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
    ("identity, chunked", POST + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    ("chunked, identity", POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501),
    ("two TE chunked lines", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"0\r\n\r\n", 501),
    ("TE gzip", POST + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: svc\r\n" + DEST
     + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("Connection names Content-Length", POST + b"Connection: content-length\r\nContent-Length: 5\r\n\r\n"
     + b"hello", 400),
    # chunk sizes: 1 to 16 hex digits, nothing else
    ("chunk size 0x5", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size +5", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size with a leading space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size 5_0", chunked(b"5_0\r\n" + b"x" * 80 + b"\r\n0\r\n\r\n"), 400),
    ("chunk size -5", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size of 19 digits", chunked(b"1000000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size of 17 digits", chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk size past the body limit", chunked(b"%x\r\nhello\r\n" % (MAX_BODY + 1)), 413),
    ("bad chunk extension", chunked(b"5;a b\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk data without CRLF", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400),
    ("bare LF after a chunk size", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    ("bad trailer", chunked(b"5\r\nhello\r\n0\r\nX-A: a\x00\r\n\r\n"), 400),
    # what the proxy does not do
    ("CONNECT", b"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n" + DEST + b"\r\n", 501),
    ("an unknown expectation", POST + b"Expect: 200-ok\r\nContent-Length: 5\r\n\r\nhello", 417),
    # sizes
    ("1 MiB header line", GET + b"X-Big: " + b"a" * (1 << 20)
     + b"\r\n\r\n", 431),
    ("10,000 headers", GET + b"X: y\r\n" * 10_000 + b"\r\n", 431),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_hostile_request_is_refused_and_nothing_of_it_reaches_the_upstream(
    sidecar: Sidecar, raw: bytes, status: int
) -> None:
    sidecar.upstream.take()
    reply = send(sidecar.port, raw.replace(b"{port}", str(sidecar.upstream.port).encode()))
    assert reply.statuses == [status], reply.data[:400]
    assert reply.closed, "the connection stays open after a refusal"
    assert b"connection: close" in reply.data.lower()
    assert sidecar.upstream.take() == b""
    assert_still_serving(sidecar)


def test_a_bad_chunk_after_many_good_ones_closes_the_upstream_before_the_message_is_complete(
    sidecar: Sidecar,
) -> None:
    """A body too large to read before dialling is streamed; a bad chunk then is still 400 for the client,
    and the upstream never receives the end of the message (its connection is closed instead)."""
    sidecar.upstream.take()
    good = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    reply = send(
        sidecar.port, chunked(good * 4 + b"zz\r\n").replace(b"{port}", str(sidecar.upstream.port).encode())
    )
    assert reply.statuses == [400], reply.data[:300]
    assert reply.closed
    time.sleep(0.2)
    received = sidecar.upstream.take()
    assert received.startswith(b"POST /c HTTP/1.1\r\n")
    assert b"zz" not in received
    assert not received.endswith(b"0\r\n\r\n")
    assert_still_serving(sidecar)


def test_a_malformed_response_head_is_502_and_never_reaches_the_client(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    reply = send(sidecar.port, sidecar.request("/evil"))
    assert reply.statuses == [502]
    assert b"X-Injected" not in reply.data
    assert reply.closed
    sidecar.upstream.take()
    assert_still_serving(sidecar)


# --- accepted requests: exactly the canonical request upstream -------------------------------------------


def test_http_1_0_is_answered_and_closed(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    reply = send(sidecar.port, sidecar.request(version=b"HTTP/1.0"))
    assert reply.statuses == [200]
    assert reply.closed
    assert normalised(sidecar.upstream.take()) == sidecar.canonical()


def test_connection_close_is_answered_then_closed_and_hop_by_hop_fields_stay_here(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    reply = send(
        sidecar.port,
        sidecar.request(headers=b"Connection: close, X-Private\r\nX-Private: 1\r\nX-Kept: \t2 \r\n"),
    )
    assert reply.statuses == [200]
    assert reply.closed
    assert normalised(sidecar.upstream.take()) == sidecar.canonical(extra=b"X-Kept: 2\r\n")


def test_pipelined_requests_are_answered_in_order(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    first = sidecar.request("/one")
    second = sidecar.request("/two", headers=b"Connection: close\r\n")
    reply = send(sidecar.port, first + second)
    assert reply.statuses == [200, 200]
    assert reply.closed
    assert normalised(sidecar.upstream.take()) == sidecar.canonical("/one") + sidecar.canonical("/two")


def test_expect_100_continue_is_answered_by_the_proxy_and_not_passed_on(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    head = (
        b"POST /e HTTP/1.1\r\nHost: svc\r\nSlime-Orig-Dest: 127.0.0.1:%d\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\n" % sidecar.upstream.port
    )
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        sock.sendall(b"hello")
        reply = read_until_closed(sock, 5)
    assert reply.statuses == [200]
    received = normalised(sidecar.upstream.take())
    assert received == (
        b"POST /e HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nlazystream-global-sidecar: *\r\n\r\nhello"
    )


def test_a_valid_chunked_body_is_passed_on_as_sent(sidecar: Sidecar) -> None:
    sidecar.upstream.take()
    body = b'5;name="va lue"\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n'
    raw = chunked(body).replace(b"{port}", str(sidecar.upstream.port).encode())
    reply = send(
        sidecar.port, raw.replace(b"POST /c HTTP/1.1\r\n", b"POST /c HTTP/1.1\r\nConnection: close\r\n")
    )
    assert reply.statuses == [200]
    expected = (
        b"POST /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nlazystream-global-sidecar: *\r\n\r\n"
    )
    assert normalised(sidecar.upstream.take()) == expected + body


# --- slow, idle and stuck peers ---------------------------------------------------------------------------


def test_a_slowloris_client_gets_408_while_others_are_served(sidecar: Sidecar) -> None:
    """One byte a second never finishes a head: the header timeout answers 408 and hangs up."""
    raw = sidecar.request()
    result: dict[str, Reply] = {}

    def slow() -> None:
        result["slow"] = send(sidecar.port, *(raw[i : i + 1] for i in range(len(raw))), pause=1.0, timeout=10)

    started = time.monotonic()
    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    sidecar.upstream.take()
    assert_still_serving(sidecar)  # meanwhile
    thread.join(30)
    assert result["slow"].statuses == [408]
    assert result["slow"].closed
    assert HEADER_TIMEOUT <= time.monotonic() - started < HEADER_TIMEOUT + 4
    assert sidecar.upstream.take() == b""


def test_five_thousand_idle_connections_neither_stop_service_nor_stay_open(sidecar: Sidecar) -> None:
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", sidecar.port), timeout=5))
        sidecar.upstream.take()
        started = time.monotonic()
        assert_still_serving(sidecar)
        assert time.monotonic() - started < 2
        deadline = time.monotonic() + CLIENT_IDLE + 5
        open_ = list(idle)
        while open_ and time.monotonic() < deadline:
            still = []
            for sock in open_:
                sock.setblocking(False)
                try:
                    if sock.recv(1) != b"":
                        raise AssertionError("an idle connection was sent something")
                except BlockingIOError:
                    still.append(sock)
                except ConnectionResetError:
                    pass
            open_ = still
            time.sleep(0.25)
        assert not open_, f"{len(open_)} idle connections still open after {CLIENT_IDLE + 5} s"
    finally:
        for sock in idle:
            sock.close()


def test_an_upstream_that_never_answers_is_504(sidecar: Sidecar) -> None:
    started = time.monotonic()
    reply = send(sidecar.port, sidecar.request("/silent"), timeout=10)
    assert reply.statuses == [504], reply.data[:300]
    assert RESPONSE_HEAD_TIMEOUT <= time.monotonic() - started < RESPONSE_HEAD_TIMEOUT + 3
    sidecar.upstream.take()
    assert_still_serving(sidecar)


def test_an_upstream_that_never_accepts_is_504_after_the_connect_timeout(sidecar: Sidecar) -> None:
    """A listener whose accept queue is full drops new SYNs: connecting hangs, as with an upstream that is
    out of file descriptors."""
    with full_listener() as port:
        started = time.monotonic()
        raw = b"GET / HTTP/1.1\r\nHost: svc\r\nSlime-Orig-Dest: 127.0.0.1:%d\r\n\r\n" % port
        reply = send(sidecar.port, raw, timeout=10)
    assert reply.statuses == [504], reply.data[:300]
    assert b"cannot connect within" in reply.data
    assert CONNECT_TIMEOUT <= time.monotonic() - started < CONNECT_TIMEOUT + 3
    sidecar.upstream.take()
    assert_still_serving(sidecar)


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(16):  # until a connect no longer completes: the queue is full
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            fillers.append(sock)
            _, writable, _ = select.select([], [sock], [], 0.3)
            if not writable:
                break
        else:
            raise AssertionError("the listener's accept queue never filled")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
