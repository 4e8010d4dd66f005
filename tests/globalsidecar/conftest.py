"""Every async global-sidecar test runs twice: on uvloop, the loop ``lazystream global-sidecar`` runs on by
default, and on the standard library's loop (``globalSidecar.eventLoop: asyncio``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from lazystream.globalsidecar.app import loop_factory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    return {"uvloop": loop_factory("uvloop"), "asyncio": loop_factory("asyncio")}
