"""Independent read-back of an object destination for the conformance suite.

    read_objects.py --endpoint URL --bucket B --prefix P --format parquet|jsonl

Lists every object under s3://B/P with boto3, reads it with pyarrow (Parquet) or the json
module (JSONL) and prints {"total": rows in all objects, "latest": [[id, updated_at], ...]}
where "latest" keeps the newest updated_at per id, the analyst view of an append-only lake.
"""

import argparse
import io
import json
import os
import sys
from datetime import datetime

import boto3
import pyarrow.parquet as pq


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--format", choices=["parquet", "jsonl"], required=True)
    a = ap.parse_args()
    s3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    latest: dict[str, datetime] = {}
    total = 0
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read()
            if a.format == "parquet":
                t = pq.read_table(io.BytesIO(body), columns=["id", "updated_at"])
                rows = [(str(i), u.isoformat()) for i, u in zip(t.column("id").to_pylist(),
                                                               t.column("updated_at").to_pylist())]
            else:
                rows = [(r["id"], r["updated_at"]) for r in map(json.loads, body.decode().splitlines())]
            for i, u in rows:
                total += 1
                # Compare as instants, not strings: JSONL and Parquet spell offsets differently.
                ts = datetime.fromisoformat(u.replace("Z", "+00:00"))
                if i not in latest or ts > latest[i]:
                    latest[i] = ts
    out = {"total": total, "latest": [[i, ts.isoformat()] for i, ts in sorted(latest.items())]}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    # Leave without running interpreter teardown: pyarrow's C++ thread pools can abort the
    # process at exit ("terminate called without an active exception") after the work is
    # done and printed, which would turn a correct read into a failed one.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
