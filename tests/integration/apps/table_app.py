"""A tiny faust worker for the RocksDB/changelog test, built with lazystream's own app factory.

It copies records of an input topic into a RocksDB-backed table (the last value per key wins) and, every
0.2 s, writes the table's contents and the number of records it processed to a JSON file, which the test
reads. Configured by environment: TABLE_APP_ID, TABLE_APP_TOPIC, TABLE_APP_PARTITIONS, TABLE_APP_DUMP,
plus the usual LAZYSTREAM_KAFKA_BOOTSTRAP, LAZYSTREAM_TABLES_DATA_DIR and LAZYSTREAM_WEB_PORT.
"""

from __future__ import annotations

import os
from pathlib import Path

import faust
import orjson

from lazystream.config import load_config
from lazystream.stream.app import create_app, rocksdb_options

config = load_config(
    overrides={
        "kafka.appId": os.environ["TABLE_APP_ID"],
        "topics.partitions": int(os.environ["TABLE_APP_PARTITIONS"]),
    }
)
app = create_app(config)
source = app.topic(os.environ["TABLE_APP_TOPIC"], key_type=bytes, value_type=bytes)
table = app.Table(
    "learned",
    default=None,
    key_type=bytes,
    value_type=bytes,
    partitions=config.topics.partitions,
    options=rocksdb_options(config),
)
dump_file = Path(os.environ["TABLE_APP_DUMP"])
processed = 0


@app.agent(source)
async def copy(stream: faust.StreamT[bytes]) -> None:
    global processed
    async for event in stream.events():
        table[event.key] = event.value
        processed += 1


@app.timer(interval=0.2)
async def dump() -> None:
    items = {k.decode(): v.decode() for k, v in table.items()}
    tmp = dump_file.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"table": items, "processed": processed}))
    tmp.replace(dump_file)


if __name__ == "__main__":
    faust.Worker(app, loglevel="info", quiet=True).execute_from_commandline()
