"""Logging as Slime's ``global.log`` configures it: level, and ``logRotate`` to a rotating file.

Slime rotates with lumberjack; this module does the same with the standard library: the file is rotated when
it reaches ``maxSizeMB`` (lumberjack's 100 MiB when 0), the rotated file is renamed with its UTC time
(``slime-2024-05-01T10-00-00.000.log``) and gzipped when ``compress`` is on, and rotated files beyond
``maxBackups`` or older than ``maxAgeDay`` days are deleted (0 keeps them all, as in lumberjack). With
``logRotate`` off, logs go to standard output. ``logFormat: json`` writes one JSON object per line (time,
level, logger, message, exception) for log pipelines.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import logging.handlers
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from lazystream.config import LogSettings

MIB = 1024 * 1024
DEFAULT_MAX_SIZE_MB = 100
"""lumberjack's size when ``maxSizeMB`` is 0."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S.%f"
HANDLER_NAME = "lazystream"

SLIME_LEVELS = {
    "": logging.INFO,
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


def level_of(name: str | None) -> int:
    """A Slime (logrus) level name as a Python level; empty or None is info."""
    return SLIME_LEVELS[(name or "").lower()]


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class RotatingFile(logging.handlers.RotatingFileHandler):
    """lumberjack's rotation: by size, timestamped backups, optional gzip, pruned by count and age."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        max_backups: int,
        max_age_days: int,
        compress: bool,
    ) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=0, encoding="utf-8", delay=True)
        self.max_backups = max_backups
        self.max_age_seconds = max_age_days * 86400
        self.compress = compress

    @property
    def path(self) -> Path:
        return Path(self.baseFilename)

    def backups(self) -> list[Path]:
        """Rotated files, newest first."""
        stem, suffix = self.path.stem, self.path.suffix
        found = [
            p
            for p in self.path.parent.glob(f"{stem}-*{suffix}*")
            if p.name.endswith((suffix, suffix + ".gz")) and p != self.path
        ]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def doRollover(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
        if self.path.exists():
            stamp = datetime.now(UTC).strftime(_TIME_FORMAT)[:-3]
            target = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
            self.path.rename(target)
            if self.compress:
                with target.open("rb") as src, gzip.open(f"{target}.gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.unlink()
        self.prune()
        self.stream = self._open()

    def prune(self) -> None:
        backups = self.backups()
        doomed = set(backups[self.max_backups :]) if self.max_backups > 0 else set()
        if self.max_age_seconds > 0:
            cutoff = time.time() - self.max_age_seconds
            doomed |= {p for p in backups if p.stat().st_mtime < cutoff}
        for path in doomed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def handlers_for(settings: LogSettings, stream: TextIO | None = None) -> list[logging.Handler]:
    """The handlers ``settings`` ask for: the rotating file, or ``stream`` (standard output)."""
    handler: logging.Handler
    if settings.log_rotate:
        rotate = settings.log_rotate_config
        handler = RotatingFile(
            rotate.file_path,
            max_bytes=(rotate.max_size_mb or DEFAULT_MAX_SIZE_MB) * MIB,
            max_backups=rotate.max_backups,
            max_age_days=rotate.max_age_day,
            compress=rotate.compress,
        )
    else:
        handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    return [handler]


def configure(
    settings: LogSettings, level: str | None = None, stream: TextIO | None = None
) -> list[logging.Handler]:
    """Route the root logger to the handlers of ``settings`` at ``level`` (else ``logLevel``); without
    rotation, to ``stream`` (standard output; the CLI's commands use standard error)."""
    handlers = handlers_for(settings, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:  # ours from an earlier call; others' (test capture) stay
            root.removeHandler(old)
            old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level_of(level if level is not None else settings.log_level))
    return handlers


def faust_worker_options(settings: LogSettings, level: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``faust.Worker`` so that it logs through these handlers (mode otherwise
    installs its own colored handler on standard output)."""
    number = level_of(level if level is not None else settings.log_level)
    return {
        "loglevel": logging.getLevelName(number).lower(),
        "loghandlers": handlers_for(settings),
        "logging_config": {
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"level": number, "handlers": []},
        },
    }
