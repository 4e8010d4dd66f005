"""Garbage-collector settings for long-running lazystream processes.

CPython's cyclic collector runs a young-generation pass every 700 net allocations and, every so often, a
full pass over every tracked object. A worker holds hundreds of thousands of long-lived objects (faust,
the Kubernetes client, the watch cache), and its ingest allocates a few objects per access record that
live for one batch: with the default thresholds those batches kept triggering full passes, and the
collector took about 45 % of the worker's CPU time while it consumed a backlog (measured with
``gc.callbacks`` under ``bench.bench_worker``). Nearly all of that garbage is freed by reference counting
anyway; the collector is only needed for reference cycles.

The global-sidecar proxy has a smaller heap, and its CPU per request did not change, but its latency
tail did: with these settings its added p99 at 1k req/s went from 1.1-2.9 ms to 0.6-1.6 ms (three
``bench_proxy`` runs each on a quiet machine), as if full collections had been pausing it.

So a process calls :func:`tune` when it starts (fewer, larger young passes) and :func:`freeze` once its
start-up objects are in place (they move to the permanent generation, which full passes skip).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

THRESHOLDS = (50_000, 20, 100)
"""Young-generation pass every 50k net allocations (default 700); a middle pass every 20 young ones; a
full pass every 100 middle ones (and, as always in CPython 3.11, only when the objects that survived
since the last full pass are at least a quarter of those it would scan). The extra memory is bounded by
the cyclic garbage of 50k allocations."""


def tune() -> None:
    """Set :data:`THRESHOLDS`; call once, early in a long-running process."""
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Move every object tracked so far to the permanent generation: full passes no longer scan them.

    Call once the process's long-lived start-up state exists (imports, clients, the first cache sync).
    Frozen objects are still freed by reference counting when dropped; only cycles among them are kept.
    """
    gc.collect()  # what is garbage now is not frozen
    gc.freeze()
    log.info("garbage collector: %d start-up objects frozen", gc.get_freeze_count())
