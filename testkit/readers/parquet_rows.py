"""The rows of Parquet objects as pyarrow reads them, printed as one JSON document.

An independent reader of what the transporter writes: nothing here shares code with it. Bytes
are given as hex (keys, values, header values), timestamps as ms since the epoch, so that the
Rust test compares exact values.

Usage: python3 parquet_rows.py FILE...
"""

import json
import sys

import pyarrow.parquet as pq


def hexed(b):
    return None if b is None else b.hex()


def main(paths):
    out = []
    for path in paths:
        f = pq.ParquetFile(path)
        meta = {k.decode(): v.decode() for k, v in (f.metadata.metadata or {}).items()}
        table = f.read()
        rows = []
        # The timestamps as stored (ms), not through datetime and floating point.
        stamps = table.column("timestamp").cast("int64").to_pylist()
        for r, ts in zip(table.to_pylist(), stamps):
            rows.append(
                {
                    "topic": r["topic"],
                    "partition": r["partition"],
                    "offset": r["offset"],
                    "timestamp": ts,
                    "timestamp_type": r["timestamp_type"],
                    "key": hexed(r["key"]),
                    "value": hexed(r["value"]),
                    "headers": [[h["key"], hexed(h["value"])] for h in r["headers"]],
                    # Typed columns from JSON values (parquet.value-schema), when there are.
                    "fields": r.get("value_fields"),
                }
            )
        out.append(
            {
                "path": path,
                "meta": meta,
                "row_groups": f.metadata.num_row_groups,
                "schema": [f"{field.name}:{field.type}" for field in table.schema],
                "rows": rows,
            }
        )
    # Typed timestamps come back as datetimes: written as their ISO text.
    json.dump(out, sys.stdout, default=lambda v: v.isoformat())


if __name__ == "__main__":
    main(sys.argv[1:])
