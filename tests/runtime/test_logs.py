"""global.log: levels, JSON lines, and lumberjack-like rotation for real on a temporary directory."""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lazystream.config import load_config
from lazystream.ops.timespec import TimeSpecError, parse_duration, parse_since
from lazystream.runtime import logs


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("lazystream.test-logs")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def settings(tmp_path: Path, **rotate: object):
    config = load_config(
        None,
        overrides={
            "global.log.logRotate": True,
            **{f"global.log.logRotateConfig.{k}": v for k, v in rotate.items()},
            "global.log.logRotateConfig.filePath": str(tmp_path / "logs" / "lazystream.log"),
        },
    )
    return config.global_.log


def test_levels_by_slime_names() -> None:
    assert logs.level_of("") == logging.INFO
    assert logs.level_of("warn") == logging.WARNING
    assert logs.level_of("TRACE") == logging.DEBUG
    assert logs.level_of("fatal") == logging.CRITICAL


def test_rotation_by_size_with_compression_and_backups(tmp_path: Path, logger: logging.Logger) -> None:
    log_settings = settings(tmp_path, maxSizeMB=1, maxBackups=2, compress=True)
    (handler,) = logs.handlers_for(log_settings)
    assert isinstance(handler, logs.RotatingFile)
    logger.addHandler(handler)
    chunk = "x" * 1000
    for _ in range(4):  # four rotations of ~1 MiB each
        for _ in range(1100):
            logger.warning(chunk)
        time.sleep(0.002)  # distinct timestamps in the backup names
    current = tmp_path / "logs" / "lazystream.log"
    assert current.exists()
    assert current.stat().st_size <= logs.MIB
    backups = handler.backups()
    assert len(backups) == 2  # maxBackups
    assert all(b.name.startswith("lazystream-") and b.name.endswith(".log.gz") for b in backups)
    with gzip.open(backups[0], "rt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) > 900
    assert lines[0].endswith(chunk)
    assert sum(b.stat().st_size for b in backups) < logs.MIB  # compressed


def test_old_backups_are_pruned_by_age_and_kept_without_limits(
    tmp_path: Path, logger: logging.Logger
) -> None:
    log_settings = settings(tmp_path, maxSizeMB=1, maxBackups=0, maxAgeDay=1, compress=False)
    (handler,) = logs.handlers_for(log_settings)
    assert isinstance(handler, logs.RotatingFile)
    logs_dir = tmp_path / "logs"
    old = logs_dir / "lazystream-2000-01-01T00-00-00.000.log"
    old.write_text("old\n")
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    logger.addHandler(handler)
    for _ in range(3):
        for _ in range(1100):
            logger.warning("y" * 1000)
        time.sleep(0.002)
    backups = handler.backups()
    assert old not in backups  # older than maxAgeDay
    assert len(backups) == 3  # maxBackups 0 keeps every rotated file
    assert all(b.suffix == ".log" for b in backups)


def test_json_lines_and_configure(tmp_path: Path) -> None:
    config = load_config(
        None,
        overrides={
            "global.log.logRotate": True,
            "global.log.logFormat": "json",
            "global.log.logLevel": "warn",
            "global.log.logRotateConfig.filePath": str(tmp_path / "app.log"),
        },
    )
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        handlers = logs.configure(config.global_.log)
        assert root.level == logging.WARNING
        logging.getLogger("lazystream.x").info("hidden")
        logging.getLogger("lazystream.x").warning("shown %d", 7)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("lazystream.x").exception("failed")
        for handler in handlers:
            handler.flush()
        lines = [json.loads(line) for line in (tmp_path / "app.log").read_text().splitlines()]
        assert [line["msg"] for line in lines] == ["shown 7", "failed"]
        assert lines[0]["level"] == "warning"
        assert lines[0]["logger"] == "lazystream.x"
        assert "ValueError: boom" in lines[1]["exc"]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_faust_worker_options() -> None:
    config = load_config(None, overrides={"global.log.logLevel": "debug"})
    options = logs.faust_worker_options(config.global_.log)
    assert options["loglevel"] == "debug"
    assert isinstance(options["loghandlers"][0], logging.StreamHandler)
    assert options["logging_config"]["root"]["handlers"] == []
    assert logs.faust_worker_options(config.global_.log, "error")["loglevel"] == "error"


def test_since_values() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("2d") == 172800
    assert parse_duration("10 minutes") is None
    assert parse_since("15m", 1000.0) == 100.0
    assert parse_since("1714557600", 0) == 1714557600
    assert parse_since("2024-05-01T10:00:00Z", 0) == 1714557600
    with pytest.raises(TimeSpecError, match="neither a duration"):
        parse_since("yesterday", 0)
