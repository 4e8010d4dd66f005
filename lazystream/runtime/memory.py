"""Where a worker's memory goes: the process's RSS split by what the kernel and glibc's allocator say, and
the size of each of the worker's own structures.

A worker's RSS is Python (objects, imports), native libraries (RocksDB's caches and memtables, OpenSSL,
aiokafka's buffers) and memory glibc keeps after it was freed: every thread that allocates gets its own
malloc arena (up to eight per core), and the Kubernetes watch threads, the sink's pool and RocksDB's own
threads each churn through short-lived objects. :func:`tune_allocator` caps the arenas at start;
:func:`trim` hands free memory back to the kernel. The admin API serves :func:`report` at
``GET /debug/memory`` (``?deep=1`` adds the size of every structure, ``?trim=1`` trims first).

Linux and glibc only; elsewhere the allocator parts are left out of the report.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import logging
import sys
import threading
import tracemalloc
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena cap (``MALLOC_ARENA_MAX``)."""
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the size from which blocks are mapped on their own
(``MALLOC_MMAP_THRESHOLD_``)."""
WORKER_ARENAS = 2
WORKER_MMAP_THRESHOLD = 128 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    """glibc, or None (another C library, or no ``mallinfo2``: glibc older than 2.33)."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_allocator(environ: Mapping[str, str]) -> dict[str, int]:
    """Set the worker's allocator up for a long-lived process with many threads, before it starts them
    (a thread keeps the arena it was given); what was set. glibc's own variables win when set.

    - At most :data:`WORKER_ARENAS` malloc arenas (glibc's default is eight per core): memory one thread
      freed is reused by the others instead of staying in that thread's arena.
    - Blocks from :data:`WORKER_MMAP_THRESHOLD` up are mapped on their own and unmapped when freed. By
      default glibc raises that threshold after freeing a large block, up to 32 MiB, and the large buffers
      of list responses and request bodies then land in the arenas, where they fragment.
    """
    done: dict[str, int] = {}
    if _LIBC is None:
        return done
    if "MALLOC_ARENA_MAX" not in environ and _LIBC.mallopt(M_ARENA_MAX, WORKER_ARENAS):
        done["arena_max"] = WORKER_ARENAS
    if "MALLOC_MMAP_THRESHOLD_" not in environ and _LIBC.mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD):
        done["mmap_threshold"] = WORKER_MMAP_THRESHOLD
    return done


def trim() -> bool:
    """Return the allocator's free memory (at the top of every arena and in free pages inside them) to the
    kernel; True when some was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def allocator() -> dict[str, int]:
    """glibc's totals over all arenas, in bytes: ``arena`` (obtained with brk/mmap for arenas),
    ``mmapped`` (large blocks mapped on their own), ``in_use`` and ``free`` (inside the arenas)."""
    if _LIBC is None:
        return {}
    info = _LIBC.mallinfo2()
    return {
        "arena": int(info.arena),
        "mmapped": int(info.hblkhd),
        "in_use": int(info.uordblks),
        "free": int(info.fordblks),
        "releasable_top": int(info.keepcost),
    }


def process() -> dict[str, int]:
    """RSS and its kinds from ``/proc/self/smaps_rollup`` and ``status``, in bytes."""
    out: dict[str, int] = {}
    wanted = {"Rss", "Anonymous", "Private_Dirty", "Private_Clean", "Shared_Clean", "Swap"}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in wanted:
                out[name.lower()] = int(rest.split()[0]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "RssFile", "RssAnon", "Threads"):
                value = int(rest.split()[0])
                out[name.lower()] = value if name == "Threads" else value * 1024
    except OSError:
        pass
    return out


_CONTAINERS = (dict, list, tuple, set, frozenset, collections.deque)


def deep_size(root: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``root`` and everything it references that is not in ``seen`` (which it extends):
    built-in containers, strings, bytes and numbers, and the attributes of lazystream's own instances.
    Shared objects count once, for the first structure measured; other libraries' objects (clients,
    executors, faust's tables) are counted without what they reference."""
    seen = set() if seen is None else seen
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)
        elif type(obj).__module__.startswith("lazystream."):
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
            for cls in type(obj).__mro__:
                stack.extend(
                    getattr(obj, slot) for slot in getattr(cls, "__slots__", ()) if hasattr(obj, slot)
                )
    return total


def attribute_sizes(objects: Mapping[str, object], minimum: int = 64 * 1024) -> dict[str, int]:
    """:func:`deep_size` of every attribute of each named object (``<name>.<attribute>``), largest first,
    those under ``minimum`` bytes summed as ``<name>.*``. Objects are measured in the order given: an
    object shared by two attributes counts for the first one."""
    seen: set[int] = set(map(id, objects.values()))
    sizes: dict[str, int] = {}
    for name, obj in objects.items():
        small = 0
        for attribute, value in (getattr(obj, "__dict__", None) or {}).items():
            size = deep_size(value, seen)
            if size >= minimum:
                sizes[f"{name}.{attribute}"] = size
            else:
                small += size
        sizes[f"{name}.*"] = small
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def traced(limit: int = 15) -> dict[str, Any]:
    """With tracemalloc on (``PYTHONTRACEMALLOC=1``): the traced total and the files allocating most."""
    if not tracemalloc.is_tracing():
        return {}
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("filename")
    return {
        "total": sum(s.size for s in stats),
        "top": [{"file": str(s.traceback[0].filename), "bytes": s.size} for s in stats[:limit]],
    }


def report(
    *,
    do_trim: bool = False,
    native: Iterable[tuple[str, int]] = (),
) -> dict[str, Any]:
    """Everything above in one document: ``process``, ``allocator``, ``threads``, ``gc`` (objects tracked),
    ``native`` (sizes native libraries report, e.g. RocksDB's), ``traced`` (only with
    tracemalloc on), and with ``do_trim`` the process figures before the trim."""
    out: dict[str, Any] = {}
    if do_trim:
        out["before_trim"] = {"process": process(), "allocator": allocator()}
        out["trimmed"] = trim()
    out["process"] = process()
    out["allocator"] = allocator()
    out["threads"] = sorted(t.name for t in threading.enumerate())
    out["gc_objects"] = len(gc.get_objects())
    out["native"] = dict(native)
    tm = traced()
    if tm:
        out["traced"] = tm
    return out
