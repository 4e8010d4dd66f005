"""``lazystream global-sidecar`` as a process, on each event loop it can run on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lazystream.config import ConfigError, load_config
from lazystream.testing.http import Client, EchoUpstream
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import free_port
from tests.fixtures.worker import LAZYSTREAM

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("args", "env", "loop"),
    [
        ([], {}, "uvloop"),  # the default
        (["--event-loop", "asyncio"], {}, "asyncio"),
        ([], {"LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP": "asyncio"}, "asyncio"),
        (["--event-loop", "uvloop"], {"LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP": "asyncio"}, "uvloop"),
    ],
)
@pytest.mark.asyncio(loop_factories=["asyncio"])  # the test's own loop does not matter: the process's does
async def test_the_command_serves_on_the_loop_it_is_told(
    args: list[str], env: dict[str, str], loop: str, tmp_path: Path
) -> None:
    port = free_port()
    proxy = WorkerProcess(
        [LAZYSTREAM, "global-sidecar", "--port", str(port), "--probe-port", str(free_port()),
         "--records", "stdout", "--no-service-cache", *args],
        {**os.environ, "LAZYSTREAM_GLOBAL_SIDECAR_LISTEN_ADDRESS": "127.0.0.1", **env},
        tmp_path / "global-sidecar.log",
    )  # fmt: skip
    try:
        await asyncio.to_thread(proxy.wait_for_output, "lazystream global-sidecar ready", 30)
        assert f"event loop {loop}" in proxy.output()
        assert (
            "start-up objects frozen" in proxy.output()
        )  # lazystream.runtime.heap: full collections skip them
        async with EchoUpstream() as upstream, Client("127.0.0.1", port) as client:
            response = await client.request(
                "GET", "/on-" + loop, [("Host", "svc"), ("Slime-Orig-Dest", f"127.0.0.1:{upstream.port}")]
            )
        assert response.status == 200
        assert response.json()["path"] == f"/on-{loop}"
    finally:
        code = await asyncio.to_thread(proxy.stop)
        await asyncio.get_running_loop().shutdown_default_executor()
    assert code == 0, proxy.output()[-2000:]
    assert '"authority":"svc"' in proxy.output()  # the record, written by the time the process ended


def test_an_unknown_event_loop_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP: must be one of uvloop, asyncio"
    ):
        load_config(None, environ={"LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP": "trio"})
    path = tmp_path / "lazystream.yaml"
    path.write_text("globalSidecar: {eventLoop: trio}\n")
    with pytest.raises(ConfigError, match=r"globalSidecar\.eventLoop: must be one of uvloop, asyncio"):
        load_config(path, environ={})
