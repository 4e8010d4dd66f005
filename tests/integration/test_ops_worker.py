"""``replay`` and ``topics scale`` with real worker processes, Kafka and the API server (audit log).

- Replay into empty state (records the group had already passed) reproduces what ``render`` computes from
  them; a second full replay over that state writes nothing to the API server.
- Scale from 4 to 12 partitions with the documented procedure and two workers: every fence's learned state
  is carried across identically, both workers own partitions, and learning goes on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from kubernetes.dynamic import DynamicClient

from lazystream.config import Config, load_config
from lazystream.kafka import clients
from lazystream.ops import kafka
from lazystream.testing import fluent_bit, global_sidecar_record
from tests.fixtures.kafka import delete_topics
from tests.fixtures.kube import AuditLog
from tests.fixtures.ops import FENCE, cli, group_lag, learned_hosts, sidecar_spec, writes_in
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, free_port
from tests.fixtures.worker import (
    LAZYSTREAM,
    apply_objects,
    bookinfo_in,
    get,
    oracle,
    produce,
    records_from,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.kube]


async def end_offsets(config: Config, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    async with clients.reader(config) as consumer:
        return await consumer.end_offsets(tps)


@pytest.mark.timeout(300)
def test_replay_into_empty_state_then_over_it_writes_nothing(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
    audit_log: AuditLog,
) -> None:
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    records = records_from(ips, ["details:9080", "reviews:9080", "ratings:9080", "details:9080"])
    expected = oracle(builder.objects(), records)
    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    env["LAZYSTREAM_FENCE_SEED_FROM_STATUS"] = "false"
    try:
        cli(env, "topics", "create")
        access = f"{fresh_name}-access"
        asyncio.run(produce(kafka_bootstrap, access, records))
        # the records were consumed by a broken deployment: the group is past them, state is empty
        config = load_config(None, environ=env)
        ends = asyncio.run(end_offsets(config, [TopicPartition(access, p) for p in range(2)]))
        asyncio.run(kafka.commit_group_offsets(config, f"{fresh_name}-ingest", ends))

        dry = json.loads((cli(env, "replay", "--from-beginning", "--dry-run", "-o", "json")).stdout)
        assert dry["records"] == len(records)
        assert dry["changes"] == [
            {
                "fence": f"{namespace}/productpage",
                "newHosts": sorted(
                    f"{s}.{namespace}.svc.cluster.local" for s in ("details", "ratings", "reviews")
                ),
                "statusChanges": True,
            }
        ]
        # replay, following the workers' progress in the background
        follower = subprocess.Popen(
            [LAZYSTREAM, "replay", "--from-beginning", "--wait", "150"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        lines = []
        while "offsets moved" not in "".join(lines):
            line = follower.stdout.readline()
            assert line, follower.communicate()
            lines.append(line)
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker.log")
        try:
            out, err = follower.communicate(timeout=170)
            assert follower.returncode == 0, out + err
            assert "replaying" in err  # the progress bar
            wait_for(
                lambda: sidecar_spec(kube_dynamic, namespace, "productpage") == expected["Sidecar"]["spec"],
                "the replayed Sidecar",
                worker=worker,
            )
            fence = get(kube_dynamic, FENCE, "ServiceFence", namespace, "productpage")
            assert fence["status"] == expected["ServiceFence"]["status"]
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]

        # replay everything again (access and edges) over that state: nothing to write
        dry = json.loads((cli(env, "replay", "--from-beginning", "--dry-run", "-o", "json")).stdout)
        assert dry["changes"] == []
        before = writes_in(audit_log, namespace)
        cli(env, "replay", "--from-beginning", "--topic", "access", "--topic", "edges")
        worker = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "worker2.log")
        try:
            worker.wait_for_output("lazystream ready", timeout=120)
            wait_for(lambda: group_lag(env, access) == 0, "the replay to be consumed", worker=worker)
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "the edges replay", worker=worker)
            time.sleep(5)  # two refresh periods and the sink's coalescing
            assert writes_in(audit_log, namespace) == before
            assert sidecar_spec(kube_dynamic, namespace, "productpage") == expected["Sidecar"]["spec"]
        finally:
            assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


@pytest.mark.heavy
@pytest.mark.timeout(420)
def test_scale_from_4_to_12_partitions_keeps_every_dependency(
    kafka_bootstrap: str,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    builder, ips = bookinfo_in(namespace)
    for name in ("reviews", "details", "ratings"):
        builder.fence(name, namespace, workloadSelector={"fromService": True})
    apply_objects(kube_dynamic, builder.objects())

    def calls(source: str, authorities: list[str]) -> list[bytes]:
        return [
            fluent_bit(
                global_sidecar_record(
                    authority=a, peer_address=f"{ips[source]}:{41000 + i}", time=time.time()
                )
            )
            for i, a in enumerate(authorities)
        ]

    records = (
        records_from(ips, ["details:9080", "reviews:9080"])
        + calls("reviews", ["ratings:9080"])
        + calls("details", ["ratings:9080", "reviews:9080"])
    )
    env = worker_env(kafka_bootstrap, kube_server, fresh_name, tmp_path, namespace)
    env.update(LAZYSTREAM_TOPICS_PARTITIONS="4", LAZYSTREAM_FENCE_SEED_FROM_STATUS="false")
    try:
        cli(env, "topics", "create")
        first = WorkerProcess([LAZYSTREAM, "worker"], env, tmp_path / "first.log")
        try:
            first.wait_for_output("lazystream ready", timeout=120)
            asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", records))
            expected = {
                name: oracle_for(builder.objects(), records, name)
                for name in ("productpage", "reviews", "details")
            }
            for name, spec in expected.items():
                wait_for(
                    lambda name=name, spec=spec: sidecar_spec(kube_dynamic, namespace, name) == spec,
                    f"{name}'s Sidecar",
                    worker=first,
                )
            wait_for(lambda: group_lag(env, f"{fresh_name}-edges") == 0, "edges consumed", worker=first)
        finally:
            assert first.stop() == 0, first.output()[-3000:]
        before = learned_hosts(env)
        assert sorted(before) == sorted(f"{namespace}/{n}" for n in ("details", "productpage", "reviews"))
        statuses = {
            n: get(kube_dynamic, FENCE, "ServiceFence", namespace, n)["status"]
            for n in ("productpage", "reviews", "details")
        }

        scaled = cli(env, "topics", "scale", "--partitions", "12")
        assert "carried 3 fences" in scaled.stdout
        assert "LAZYSTREAM_TABLES_VERSION=2" in scaled.stdout
        env.update(LAZYSTREAM_TABLES_VERSION="2", LAZYSTREAM_TOPICS_PARTITIONS="12")
        assert learned_hosts(env) == {}  # nothing in the new table until a worker runs

        workers = []
        for i in (1, 2):
            env_i = dict(
                env,
                LAZYSTREAM_TABLES_DATA_DIR=str(tmp_path / f"data{i}"),
                LAZYSTREAM_WEB_PORT=str(free_port()),
            )
            workers.append(WorkerProcess([LAZYSTREAM, "worker"], env_i, tmp_path / f"w{i}.log"))
        try:

            def both_own_partitions() -> bool:
                groups = json.loads(cli(env, "topics", "describe", "--scan", "0", "-o", "json").stdout)[
                    "groups"
                ]
                owned = [m["assignment"].get(f"{fresh_name}-edges") for m in groups[0]["members"]]
                return len(owned) == 2 and all(owned)

            for worker in workers:
                worker.wait_for_output("lazystream ready", timeout=150)
            wait_for(both_own_partitions, "two workers owning partitions", timeout=120, worker=workers[0])
            wait_for(lambda: learned_hosts(env) == before, "the learned state carried across", timeout=90)
            time.sleep(3)
            for name, status in statuses.items():
                assert get(kube_dynamic, FENCE, "ServiceFence", namespace, name)["status"] == status
            # learning goes on after the scale
            more = calls("reviews", ["details:9080"])
            asyncio.run(produce(kafka_bootstrap, f"{fresh_name}-access", more))
            want = oracle_for(builder.objects(), records + more, "reviews")
            wait_for(
                lambda: sidecar_spec(kube_dynamic, namespace, "reviews") == want,
                "reviews' Sidecar after the scale",
                worker=workers[0],
            )
        finally:
            for worker in workers:
                assert worker.stop() == 0, worker.output()[-3000:]
    finally:
        asyncio.run(delete_topics(f"{fresh_name}-", bootstrap_servers=kafka_bootstrap))


def oracle_for(objects: list[dict[str, Any]], records: list[bytes], name: str) -> dict[str, Any]:
    from lazystream.config.options import render_options
    from lazystream.domain.render import render

    result = render(objects, records, render_options(load_config(None, {})), time.time())
    return next(o for o in result.items if o["kind"] == "Sidecar" and o["metadata"]["name"] == name)["spec"]
