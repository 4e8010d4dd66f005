"""A small HTTP/1.1 upstream and client for tests and benchmarks of the global-sidecar (no dependencies).

:class:`EchoUpstream` answers every request with a JSON body describing it (method, path, headers, body
length) over keep-alive connections, and counts connections and requests. :class:`Client` sends requests
over one keep-alive connection, from a chosen local address when asked (the callers of the end-to-end
demo each have their own 127.0.0.x).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from lazystream.globalsidecar.http1 import (
    Framing,
    Head,
    Limits,
    keep_alive,
    parse_head,
    parse_request,
    read_head,
    request_framing,
    response_framing,
    serialize,
)


async def read_body(reader: asyncio.StreamReader, framing: Framing) -> bytes:
    """A whole body in its framing (chunked bodies de-chunked)."""
    if framing.chunked:
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return bytes(out)
            out += await reader.readexactly(size + 2)
            del out[-2:]
    if framing.until_close:
        return await reader.read()
    return await reader.readexactly(framing.length) if framing.length else b""


LIMITS = Limits()


@dataclass
class Response:
    status: int
    headers: Head
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class EchoUpstream:
    """``GET /any`` → 200 with a JSON description of the request. Special paths: ``/chunked`` answers
    chunked, ``/slow`` waits a second, ``/close`` closes after answering, ``/upgrade`` switches protocols
    and echoes bytes. ``payload`` sets the size of the plain answer's ``pad`` field (benchmarks)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, payload: int = 0) -> None:
        self.host = host
        self.port = port
        self.pad = "x" * payload
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> EchoUpstream:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            while (raw := await read_head(reader)) is not None:
                head = parse_request(raw, LIMITS)
                body = await read_body(reader, request_framing(head, LIMITS))
                self.requests += 1
                if not await self._answer(head, body, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _answer(
        self, head: Head, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        method, path, version = head.start
        if path == "/upgrade":
            writer.write(serialize(("HTTP/1.1", "101", "Switching Protocols"),
                                   [("Connection", "upgrade"), ("Upgrade", "echo")]))  # fmt: skip
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            return False
        if path == "/slow":
            await asyncio.sleep(1)
        description = {"method": method, "path": path, "headers": head.headers, "body_bytes": len(body)}
        if self.pad:
            description["pad"] = self.pad
        payload = orjson.dumps(description)
        headers = [("Content-Type", "application/json")]
        if path == "/chunked":
            headers.append(("Transfer-Encoding", "chunked"))
            half = len(payload) // 2
            data = b"".join(
                f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (payload[:half], payload[half:])
            )
            data += b"0\r\nX-Trailer: yes\r\n\r\n"
        else:
            headers.append(("Content-Length", str(len(payload))))
            data = payload
        if method == "HEAD":  # the head a GET would have, and no body
            data = b""
        writer.write(serialize(("HTTP/1.1", "200", "OK"), headers) + data)
        await writer.drain()
        return path != "/close" and keep_alive(head, version)


class Client:
    """One keep-alive connection to ``host:port``, optionally from ``local_host``."""

    def __init__(self, host: str, port: int, local_host: str | None = None) -> None:
        self.address = (host, port)
        self.local_host = local_host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        local = (self.local_host, 0) if self.local_host else None
        self.reader, self.writer = await asyncio.open_connection(*self.address, local_addr=local)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        *,
        chunked: bool = False,
    ) -> Response:
        if self.writer is None:
            await self.connect()
        if self.reader is None or self.writer is None:
            raise ConnectionError("not connected")
        headers = list(headers or [])
        if body is not None and chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            data = (
                b"".join(
                    f"{len(body[i : i + 16384]):x}\r\n".encode() + body[i : i + 16384] + b"\r\n"
                    for i in range(0, len(body), 16384)
                )
                + b"0\r\n\r\n"
            )
        elif body is not None:
            headers.append(("Content-Length", str(len(body))))
            data = body
        else:
            data = b""
        self.writer.write(serialize((method, path, "HTTP/1.1"), headers) + data)
        await self.writer.drain()
        raw = await read_head(self.reader)
        if raw is None:
            raise ConnectionResetError("no response")
        head = parse_head(raw)
        response = Response(
            int(head.start[1]), head, await read_body(self.reader, response_framing(head, method))
        )
        if not keep_alive(head, head.start[0]):
            await self.close()
        return response
