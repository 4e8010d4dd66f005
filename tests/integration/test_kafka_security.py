"""Kafka over TLS and SASL/SCRAM (issue 11 item 3) on the broker's SASL_SSL listener: the worker learns a
fence's edges, the operations commands work, and refused credentials or certificates fail at start with the
reason. Every client here reaches the broker through the secure listener only (brokers advertise the
listener a client came in on, so no connection falls back to the PLAINTEXT port)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fluent import sender
from kubernetes.dynamic import DynamicClient

from lazystream.testing import fluent_bit, global_sidecar_record
from lazystream.testing.fluentbit import ForwardToKafka
from tests.fixtures.kafka import delete_topics
from tests.fixtures.ops import cli, ops_env
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.servers import KubeServer, SecureKafka
from tests.fixtures.worker import (
    LAZYSTREAM,
    apply_objects,
    bookinfo_in,
    get,
    oracle,
    produce_with,
    records_from,
    wait_for,
    worker_env,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
# Tests here are synchronous and run their clients with asyncio.run: aiokafka runs each SASL step in the
# loop's default executor, whose thread only asyncio.run's shutdown ends (the thread-leak guard checks).
START_FAILS_WITHIN_S = 30.0
"""A start refused by the brokers must end this quickly, with the reason rather than a traceback."""


@pytest.fixture
def secure_topics(kafka_secure: SecureKafka, fresh_name: str) -> Iterator[str]:
    """A fresh deployment name whose topics (created over SASL_SSL) are deleted afterwards."""
    yield fresh_name
    asyncio.run(delete_topics(f"{fresh_name}-", **kafka_secure.client_kwargs()))


@pytest.mark.kube
def test_worker_learns_over_sasl_ssl(
    kafka_secure: SecureKafka,
    kube_server: KubeServer,
    kube_dynamic: DynamicClient,
    namespace: str,
    fresh_name: str,
    tmp_path: Path,
) -> None:
    builder, ips = bookinfo_in(namespace)
    apply_objects(kube_dynamic, builder.objects())
    records = records_from(ips, ["details:9080", "reviews:9080", "details:9080"])
    expected = oracle(builder.objects(), records)
    env = worker_env(
        kafka_secure.bootstrap, kube_server, fresh_name, tmp_path, namespace, **kafka_secure.env()
    )
    worker = WorkerProcess([LAZYSTREAM, "worker", "--loglevel", "debug"], env, tmp_path / "worker.log")
    try:
        # faust's consumer and producer authenticate, and create the app's topics, over SASL_SSL
        worker.wait_for_output("lazystream ready", timeout=120)
        asyncio.run(
            produce_with(kafka_secure.client_kwargs(), f"{fresh_name}-access", records)
        )  # read by the ingest stage

        def sidecar_learned() -> bool:
            sidecar = get(kube_dynamic, "networking.istio.io/v1alpha3", "Sidecar", namespace, "productpage")
            return sidecar is not None and sidecar["spec"] == expected["Sidecar"]["spec"]

        wait_for(sidecar_learned, "the learned Sidecar", worker=worker)
        fence = get(kube_dynamic, "microservice.slime.io/v1alpha1", "ServiceFence", namespace, "productpage")
        assert fence is not None
        assert sorted(fence["status"]["domains"]) == [
            f"details.{namespace}.svc.cluster.local",
            f"reviews.{namespace}.svc.cluster.local",
        ]
    finally:
        code = worker.stop()
        asyncio.run(delete_topics(f"{fresh_name}-", **kafka_secure.client_kwargs()))
    log = worker.output()
    assert code == 0, log[-3000:]
    assert " DEBUG faust." in log  # faust's debug logging was on: the check below means something
    assert kafka_secure.password() not in log, "the SASL password is in the worker's log"


def test_commands_over_sasl_ssl(kafka_secure: SecureKafka, secure_topics: str) -> None:
    name = secure_topics
    env = ops_env(kafka_secure.bootstrap, name, **kafka_secure.env())
    if kafka_secure.cert_file is not None:  # the broker checks a client certificate that is presented
        env["LAZYSTREAM_KAFKA_SECURITY_CERT_FILE"] = str(kafka_secure.cert_file)
        env["LAZYSTREAM_KAFKA_SECURITY_KEY_FILE"] = str(kafka_secure.key_file)
    created = cli(env, "topics", "create")
    assert created.stdout.count("created") == 4, created.stdout

    record = fluent_bit(
        global_sidecar_record(authority="details:9080", peer_address="10.9.8.7:40000", time=time.time())
    )
    asyncio.run(produce_with(kafka_secure.client_kwargs(), f"{name}-access", [record, b"not a record"]))
    tailed = cli(env, "tail", "access").stdout.splitlines()
    assert len(tailed) == 2, tailed
    assert any("authority=details:9080" in line for line in tailed)

    described = json.loads(cli(env, "topics", "describe", "-o", "json").stdout)
    topics = {t["kind"]: t for t in described["topics"]}
    assert sum(p["end"] for p in topics["access"]["partitions"]) == 2
    assert [g["name"] for g in described["groups"]] == [name, f"{name}-ingest"]

    # `config show` names the settings but never prints the password
    secret = "s3cret-in-env"  # noqa: S105 - a made-up password that must not be shown
    shown = cli(dict(env, LAZYSTREAM_KAFKA_SECURITY_PASSWORD=secret), "config", "show").stdout
    assert "protocol: SASL_SSL" in shown
    assert "password: <redacted>" in shown
    assert secret not in shown


def test_the_testing_kit_produces_over_sasl_ssl(kafka_secure: SecureKafka, secure_topics: str) -> None:
    topic = f"{secure_topics}-access"
    record = global_sidecar_record(authority="ratings:9080", peer_address="10.1.2.3:5000", time=time.time())

    async def forward_and_read() -> list[ConsumerRecord[bytes, bytes]]:
        security = kafka_secure.security()
        async with ForwardToKafka(kafka_secure.bootstrap, topic, security=security) as stand_in:
            # fluent-logger waits for no acknowledgement: the kernel takes the bytes while the loop waits
            logger = sender.FluentSender("lazystream", port=stand_in.port)
            try:
                assert logger.emit_with_time("access", int(time.time()), record), logger.last_error
            finally:
                logger.close()
            deadline = time.monotonic() + 30
            while stand_in.produced < 1:
                assert time.monotonic() < deadline, "the stand-in produced nothing"
                await asyncio.sleep(0.1)
        consumer = AIOKafkaConsumer(
            **kafka_secure.client_kwargs(), group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            batch = await consumer.getmany(timeout_ms=10_000)
        finally:
            await consumer.stop()
        return [m for messages in batch.values() for m in messages]

    (message,) = asyncio.run(forward_and_read())
    assert orjson.loads(message.value)["authority"] == "ratings:9080"


def run_command(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [LAZYSTREAM, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done, time.monotonic() - started


def test_a_wrong_password_fails_at_start_naming_the_authentication(
    kafka_secure: SecureKafka, secure_topics: str, tmp_path: Path
) -> None:
    wrong = "not-the-password-0123"
    env = dict(
        ops_env(kafka_secure.bootstrap, secure_topics, **kafka_secure.env()),
        LAZYSTREAM_KAFKA_SECURITY_PASSWORD=wrong,  # the environment wins over passwordFile
        LAZYSTREAM_TABLES_DATA_DIR=str(tmp_path / "data"),
        KUBECONFIG=str(tmp_path / "no-kubeconfig"),  # refused before anything else starts
    )
    worker, seconds = run_command(env, "worker")
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert seconds < START_FAILS_WITHIN_S
    assert "SASL authentication failed for user 'lazystream' with SCRAM-SHA-512" in worker.stderr
    assert "kafka.security.password" in worker.stderr
    assert wrong not in worker.stdout + worker.stderr
    assert "Traceback" not in worker.stdout + worker.stderr  # faust alone stops with one, and no reason

    tail, seconds = run_command(env, "tail", "access")
    assert tail.returncode == 1, tail.stdout + tail.stderr
    assert seconds < START_FAILS_WITHIN_S
    assert f"Kafka broker {kafka_secure.bootstrap} refused the connection" in tail.stderr
    assert "SASL authentication failed" in tail.stderr
    assert "Traceback" not in tail.stderr


def test_an_untrusted_certificate_or_a_missing_file_fails_naming_the_setting(
    kafka_secure: SecureKafka, secure_topics: str, tmp_path: Path
) -> None:
    env = ops_env(kafka_secure.bootstrap, secure_topics, **kafka_secure.env())
    # a CA file that does not sign the broker's certificate (a self-signed certificate of its own)
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
         "-keyout", str(tmp_path / "other.key"), "-out", str(other_ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    untrusted, seconds = run_command(
        dict(env, LAZYSTREAM_KAFKA_SECURITY_CA_FILE=str(other_ca)), "topics", "describe"
    )
    assert untrusted.returncode == 1, untrusted.stdout + untrusted.stderr
    assert seconds < START_FAILS_WITHIN_S
    assert "TLS: the broker's certificate is not trusted" in untrusted.stderr
    assert "kafka.security.caFile" in untrusted.stderr

    missing = str(tmp_path / "missing" / "ca.crt")
    for args in (["topics", "describe"], ["worker"]):
        done, _ = run_command(dict(env, LAZYSTREAM_KAFKA_SECURITY_CA_FILE=missing), *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"kafka.security.caFile: cannot read {missing}: No such file or directory" in done.stderr

    # PLAINTEXT clients pointed at the TLS listener get a reason, not a hang
    plaintext = {k: v for k, v in env.items() if not k.startswith("LAZYSTREAM_KAFKA_SECURITY_")}
    done, seconds = run_command(plaintext, "tail", "access")
    assert done.returncode == 1, done.stdout + done.stderr
    assert seconds < START_FAILS_WITHIN_S + 30  # aiokafka's connection attempt times out first
    assert f"cannot connect to Kafka at {kafka_secure.bootstrap}" in done.stderr
    assert "Traceback" not in done.stderr
