"""Runs PyPI hive-metastore-client (1.0.9) against a metastore address, in its own venv (it pins
thrift 0.13.0), and prints one JSON line: per action, {ok} or {error}. The client never calls
set_ugi: who it is depends on the proxy (a pinned identity).
Usage: hmc_as.py PORT ACTIONS_JSON, actions:
  ["create_database", name, location]
  ["create_table", db, table, location, partition_key]
  ["add_partitions", db, table, [value, ...], location_prefix]"""
import json
import sys

from hive_metastore_client import HiveMetastoreClient
from hive_metastore_client.builders import (ColumnBuilder, DatabaseBuilder, PartitionBuilder,
                                            SerDeInfoBuilder, StorageDescriptorBuilder,
                                            TableBuilder)

TEXT_IN = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"


def sd(location):
    return StorageDescriptorBuilder(
        columns=[ColumnBuilder("id", "int").build()], location=location, input_format=TEXT_IN,
        output_format=TEXT_OUT, serde_info=SerDeInfoBuilder(serialization_lib=SERDE).build()
    ).build()


def run(client, action):
    kind, *args = action
    if kind == "create_database":
        name, location = args
        client.create_database(DatabaseBuilder(name, location_uri=location).build())
    elif kind == "create_table":
        db, table, location, key = args
        client.create_table(TableBuilder(
            table, db, sd(location), partition_keys=[ColumnBuilder(key, "string").build()],
            table_type="EXTERNAL_TABLE", parameters={"EXTERNAL": "TRUE"}).build())
    elif kind == "add_partitions":
        db, table, values, prefix = args
        client.add_partitions_to_table(db, table, [
            PartitionBuilder([v], db, table, sd(f"{prefix}/{v}")).build() for v in values])
    else:
        raise ValueError(kind)


def main():
    port, actions = int(sys.argv[1]), json.loads(sys.argv[2])
    out = []
    with HiveMetastoreClient("127.0.0.1", port) as client:
        for a in actions:
            try:
                run(client, a)
                out.append({"action": a, "ok": True})
            except Exception as e:  # noqa: BLE001 - reported to the test
                out.append({"action": a, "ok": False,
                            "error": f"{type(e).__name__}: {getattr(e, 'message', e)}"})
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
