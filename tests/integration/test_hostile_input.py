"""100k hostile records through a real worker on real Kafka and the real API server (issue 11 item 2; the
1M run is ``python -m bench.bench_hostile``): no crash, every unparseable record on the dead-letter topic with
the reason ``parse_record`` gives it, no host the cluster does not admit in any Sidecar, learning unharmed,
and the worker's resident memory bounded."""

from __future__ import annotations

import os

import pytest

from bench import bench_hostile
from lazystream.testing.hostile import KINDS

pytestmark = [pytest.mark.kafka, pytest.mark.kube, pytest.mark.heavy, pytest.mark.timeout(300)]
MIB = 1024 * 1024
RSS_LIMIT = 400 * MIB


async def test_hostile_records_through_a_real_worker(kafka_bootstrap: str, kube_server) -> None:
    if "LAZYSTREAM_TEST_KAFKA_BOOTSTRAP" not in os.environ:
        pytest.fail("the hostile-input run needs the local servers (scripts/infra/servers.sh env)")
    run = await bench_hostile.run(count=100_000, seed=7)
    print(run)
    assert run.exit_code == 0, run.log.read_text(errors="replace")[-3000:]
    assert set(run.kinds) == set(KINDS)
    assert sum(run.expected_dead.values()) > 30_000
    assert run.dead_on_topic == run.expected_dead
    assert run.dead_in_metrics == run.expected_dead
    assert not run.not_admitted()
    assert len(run.sidecar_hosts) == bench_hostile.FENCES
    assert run.learned_in_metrics == bench_hostile.FENCES * bench_hostile.TARGETS
    assert run.peak_rss < RSS_LIMIT, run
    log = run.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert run.problems() == []
