#!/usr/bin/env python3
"""Independent read-back of an ICEBERG_S3 table, twice: pyiceberg and DuckDB.

    read_iceberg.py --catalog-uri postgresql+psycopg2://USER@HOST:PORT/DB --catalog-name NAME \
        --warehouse s3://B/P|file:///DIR --table NS.TABLE [--s3-endpoint URL] \
        [--dump-dir DIR --org UUID --from T --to T] [--duckdb-ext-dir DIR]

pyiceberg opens the table through its SqlCatalog on the same Postgres database (the catalog
layout tidemark writes with iceberg-rust), scans it with pyarrow and reports the schema (field
ids), the partition spec, every snapshot's summary, every data file with its partition. DuckDB
looks up the metadata location in the catalog table itself (psycopg2) and reads it with
iceberg_scan(), through httpfs for s3://. Neither shares code with tidemark.

Prints one JSON object:
    {"metadata_location", "schema": [[id, name, type, required, element_id]],
     "partition_spec": [[source_id, field_id, name, transform]],
     "snapshots": [{"id", "parent", "operation", "summary"}],
     "files": [{"path", "records", "partition"}],
     "pyiceberg": {"total", "latest": [[id, updated_at], ...]},
     "duckdb": {"total", "latest": [...]}}
"latest" is the newest updated_at per id (the analyst view of the history table).
With --dump-dir, the rows of one organization and updated_at range are also written as
pyiceberg.parquet and duckdb.parquet there, for verify_export.py to compare value by value.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import sys
import tempfile

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso(micros: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=micros)).isoformat()


def latest_of(ids, micros):
    latest: dict[str, int] = {}
    for i, u in zip(ids, micros):
        if i not in latest or u > latest[i]:
            latest[i] = u
    return [[i, iso(u)] for i, u in sorted(latest.items())]


def read_pyiceberg(a, out):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
    from pyiceberg.types import ListType

    props = {"uri": a.catalog_uri, "warehouse": a.warehouse}
    if a.s3_endpoint:
        props.update({
            "s3.endpoint": a.s3_endpoint,
            "s3.access-key-id": "test",
            "s3.secret-access-key": "test",
            "s3.region": "us-east-1",
        })
    catalog = SqlCatalog(a.catalog_name, **props)
    table = catalog.load_table(a.table)
    out["pyiceberg_metadata_location"] = table.metadata_location
    out["schema"] = [
        [f.field_id, f.name, str(f.field_type), f.required,
         f.field_type.element_id if isinstance(f.field_type, ListType) else None]
        for f in table.schema().fields
    ]
    out["partition_spec"] = [[p.source_id, p.field_id, p.name, str(p.transform)] for p in table.spec().fields]
    out["snapshots"] = [
        {"id": s.snapshot_id, "parent": s.parent_snapshot_id,
         "operation": str(s.summary.operation.value) if s.summary else None,
         "summary": dict(s.summary.additional_properties) if s.summary else {}}
        for s in table.metadata.snapshots
    ]
    if table.current_snapshot() is None:
        out["files"] = []
        out["pyiceberg"] = {"total": 0, "latest": []}
        return
    files = table.inspect.files()
    out["files"] = [
        {"path": p, "records": r, "partition": {k: str(v) for k, v in part.items()}}
        for p, r, part in zip(files.column("file_path").to_pylist(), files.column("record_count").to_pylist(),
                              files.column("partition").to_pylist())
    ]
    scanned = table.scan(selected_fields=("id", "updated_at")).to_arrow()
    micros = pc.cast(scanned.column("updated_at"), pa.int64()).to_pylist()
    out["pyiceberg"] = {"total": scanned.num_rows, "latest": latest_of(scanned.column("id").to_pylist(), micros)}
    if a.dump_dir:
        f = And(EqualTo("organization_id", a.org),
                And(GreaterThanOrEqual("updated_at", getattr(a, "from")), LessThan("updated_at", a.to)))
        rows = table.scan(row_filter=f).to_arrow()
        pq.write_table(rows, os.path.join(a.dump_dir, "pyiceberg.parquet"))
        out["pyiceberg"]["dumped"] = rows.num_rows


def catalog_metadata_location(a):
    """The pointer straight from the catalog table, not through pyiceberg."""
    import psycopg2

    dsn = a.catalog_uri.replace("postgresql+psycopg2://", "postgresql://")
    ns, name = a.table.rsplit(".", 1)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT metadata_location FROM iceberg_tables "
            "WHERE catalog_name = %s AND table_namespace = %s AND table_name = %s",
            (a.catalog_name, ns, name),
        )
        row = cur.fetchone()
    if row is None:
        raise SystemExit(f"table {a.table} is not in catalog {a.catalog_name}")
    return row[0]


def read_duckdb(a, out):
    import duckdb

    location = catalog_metadata_location(a)
    out["metadata_location"] = location
    if a.duckdb_ext_dir:
        read_duckdb_with(a, out, location, a.duckdb_ext_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="duckdb-ext-") as ext_dir:
            read_duckdb_with(a, out, location, ext_dir)


def read_duckdb_with(a, out, location, ext_dir):
    import duckdb

    con = duckdb.connect(config={"extension_directory": ext_dir, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    for ext in ("avro", "httpfs", "iceberg"):
        (path,) = glob.glob(os.path.join(site, f"duckdb_extension_{ext}", "extensions", "*", f"{ext}.duckdb_extension"))
        con.execute(f"INSTALL '{path}'")
        con.execute(f"LOAD {ext}")
    if a.s3_endpoint:
        host = a.s3_endpoint.split("://", 1)[1]
        con.execute(
            f"CREATE SECRET moto (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
            f"ENDPOINT '{host}', USE_SSL false, URL_STYLE 'path')"
        )
    scan = location[len("file://"):] if location.startswith("file://") else location
    scan_sql = "iceberg_scan(?)"
    total = con.execute(f"SELECT count(*) FROM {scan_sql}", [scan]).fetchone()[0]
    rows = con.execute(f"SELECT id, epoch_us(updated_at) FROM {scan_sql}", [scan]).fetchall()
    out["duckdb"] = {"total": total, "latest": latest_of([r[0] for r in rows], [r[1] for r in rows])}
    if a.dump_dir:
        target = os.path.join(a.dump_dir, "duckdb.parquet")
        con.execute(
            f"COPY (SELECT * FROM {scan_sql} WHERE organization_id = ? AND updated_at >= ?::TIMESTAMPTZ "
            f"AND updated_at < ?::TIMESTAMPTZ) TO '{target}' (FORMAT parquet)",
            [scan, a.org, getattr(a, "from"), a.to],
        )
        out["duckdb"]["dumped"] = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog-uri", required=True)
    ap.add_argument("--catalog-name", required=True)
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--s3-endpoint")
    ap.add_argument("--dump-dir")
    ap.add_argument("--org")
    ap.add_argument("--from")
    ap.add_argument("--to")
    ap.add_argument("--duckdb-ext-dir")
    a = ap.parse_args()
    out: dict = {}
    read_pyiceberg(a, out)
    read_duckdb(a, out)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
