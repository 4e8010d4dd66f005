from __future__ import annotations

from pathlib import Path

from lazystream.config import Config, TablesSettings, TopicsSettings, load_config
from lazystream.stream.app import create_app, declare_topics, rocksdb_options


def test_app_uses_rocksdb_in_the_worker_data_dir_with_raw_codecs(tmp_path: Path) -> None:
    config = load_config(
        None,
        {},
        {"tables.dataDir": tmp_path / "data", "kafka.appId": "unit", "kafka.bootstrap": "k1:1,k2:2"},
    )
    app = create_app(config)
    assert str(app.conf.store) == "rocksdb:"
    assert Path(app.conf.datadir) == tmp_path / "data"
    assert (tmp_path / "data").is_dir()
    assert app.conf.key_serializer == "raw"
    assert app.conf.value_serializer == "raw"
    assert [str(u) for u in app.conf.broker] == ["kafka://k1:1", "kafka://k2:2"]
    assert app.conf.id == "unit"
    assert app.conf.topic_partitions == config.topics.partitions
    # bounded read-ahead of the table agent (faust's defaults buffer four times as much)
    assert app.conf.stream_buffer_maxsize == 1024
    assert app.conf.consumer_max_fetch_size == 256 * 1024
    options = rocksdb_options(config)
    assert options["block_cache_size"] == config.tables.block_cache_bytes == 512 * 1024
    assert options["write_buffer_size"] == config.tables.write_buffer_bytes == 2 * 1024 * 1024
    assert options["max_write_buffer_number"] == 2
    # faust accepts every key (its RocksDBOptions would raise on an unknown one)
    from faust.stores.rocksdb import RocksDBOptions

    assert RocksDBOptions(**options).write_buffer_size == 2 * 1024 * 1024


def test_topics_are_declared_with_settings(tmp_path: Path) -> None:
    config = Config(
        tables=TablesSettings(data_dir=tmp_path), topics=TopicsSettings(access="acc", partitions=6)
    )
    topics = declare_topics(create_app(config), config)
    assert topics.access.get_topic_name() == "acc"
    assert topics.edges.get_topic_name() == config.topics.edges
    assert topics.dead_letter.get_topic_name() == config.topics.dead_letter
    assert topics.access.partitions == 6
