"""Test-wide fixtures: real servers (tests/fixtures/) and guards against leaked threads and tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.kube",
    "tests.fixtures.kafka",
    "tests.fixtures.private",
]

LINGER_GRACE_S = 5.0


@pytest.fixture(autouse=True)
def threads_not_lingering() -> Iterator[None]:
    """Fail a test that leaves a thread running (clients not closed, executors not shut down)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LINGER_GRACE_S
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"test left threads running: {[t.name for t in leaked]}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
async def tasks_not_lingering() -> AsyncIterator[None]:
    """Fail an async test that leaves asyncio tasks pending on its loop."""
    yield
    current = asyncio.current_task()
    deadline = time.monotonic() + LINGER_GRACE_S
    while True:
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"test left asyncio tasks pending: {[t.get_coro() for t in pending]}")
        await asyncio.sleep(0.05)
