from __future__ import annotations

from pathlib import Path

import pytest

from lazystream.settings import Settings, SettingsError


def test_defaults_are_valid() -> None:
    settings = Settings()
    assert settings.broker_url == "kafka://127.0.0.1:19092"
    assert settings.rocksdb_block_cache_bytes < 2 * 1024**3


def test_environment_overrides_each_field_with_types() -> None:
    settings = Settings.from_env(
        {
            "LAZYSTREAM_KAFKA_BOOTSTRAP": "k1:9092, k2:9093",
            "LAZYSTREAM_TOPIC_PARTITIONS": "12",
            "LAZYSTREAM_DATA_DIR": "/var/lib/lazystream",
            "LAZYSTREAM_KUBECONFIG": "/etc/kube/config",
            "UNRELATED": "x",
        }
    )
    assert settings.broker_url == "kafka://k1:9092;kafka://k2:9093"
    assert settings.topic_partitions == 12
    assert settings.data_dir == Path("/var/lib/lazystream")
    assert settings.kubeconfig == Path("/etc/kube/config")


def test_explicit_overrides_win_and_none_means_unset() -> None:
    env = {"LAZYSTREAM_WEB_PORT": "7000", "LAZYSTREAM_APP_ID": "from-env"}
    settings = Settings.from_env(env, web_port=7100, app_id=None)
    assert settings.web_port == 7100
    assert settings.app_id == "from-env"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LAZYSTREAM_TOPIC_PARTITIONS": "many"}, "LAZYSTREAM_TOPIC_PARTITIONS"),
        ({"LAZYSTREAM_TOPIC_PARTITIONS": "0"}, "LAZYSTREAM_TOPIC_PARTITIONS"),
        ({"LAZYSTREAM_KAFKA_BOOTSTRAP": "no-port"}, "LAZYSTREAM_KAFKA_BOOTSTRAP"),
        ({"LAZYSTREAM_ACCESS_TOPIC": "bad topic!"}, "LAZYSTREAM_ACCESS_TOPIC"),
        ({"LAZYSTREAM_WEB_PORT": "70000"}, "LAZYSTREAM_WEB_PORT"),
    ],
)
def test_invalid_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)
