#!/usr/bin/env python3
"""Independent BigQuery reader for tests/bigquery.rs (runs in the BigQuery venv).

Talks to the BigQuery REST API with Google's own client (google-cloud-bigquery),
sharing no code with tidemark.

  bq_read.py --endpoint URL --project P query SQL
      prints {"rows": [[v, ...], ...], "schema": [{"name", "type", "mode"}, ...]}
      with every value as JSON (numbers/NUMERIC/TIMESTAMP/DATE as strings).

  bq_read.py --endpoint URL --project P export --schema schemas/t/v1.json \
          --table dataset.table --out FILE.parquet [--jsonb-as json|string]
      reads the published columns of the table and writes them as Parquet with
      the published schema's Arrow types (int2 -> int16, numeric(P,S) ->
      decimal128(P,S), jsonb -> JSON text, ...), so tests/py/verify_export.py can
      compare them with the source rows. A value that does not fit its published
      type makes pyarrow raise: the conversion never rounds.
      Prints {"rows": N, "table_schema": [...]}.
"""

import argparse
import datetime
import decimal
import json
import re
import sys

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery


def client(args):
    return bigquery.Client(
        project=args.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=args.endpoint),
    )


def jsonable(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float, decimal.Decimal)):
        return str(v)
    if isinstance(v, datetime.datetime):
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return str(v)


def q(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def cmd_query(args):
    job = client(args).query(args.sql)
    result = job.result()
    rows = [[jsonable(v) for v in row.values()] for row in result]
    schema = [{"name": f.name, "type": f.field_type, "mode": f.mode} for f in (result.schema or [])]
    print(json.dumps({"rows": rows, "schema": schema}))


def cmd_export(args):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = json.load(open(args.schema))
    c = client(args)
    dataset, table = args.table.split(".", 1)
    meta = c.get_table(f"{args.project}.{dataset}.{table}")
    select = []
    for col in spec["columns"]:
        name = col["name"]
        if col["type"] == "jsonb" and args.jsonb_as == "json":
            # The JSON value's own text; SQL NULL stays NULL (a JSON null becomes 'null').
            select.append(f"IF({q(name)} IS NULL, NULL, TO_JSON_STRING({q(name)})) AS {q(name)}")
        else:
            select.append(q(name))
    sql = f"SELECT {', '.join(select)} FROM {q(args.project)}.{q(dataset)}.{q(table)}"
    rows = list(c.query(sql).result())

    fields, arrays = [], []
    for i, col in enumerate(spec["columns"]):
        t = col["type"]
        values = [row[i] for row in rows]
        m = re.fullmatch(r"numeric\((\d+),(\d+)\)", t)
        if t in ("uuid", "text", "inet"):
            typ = pa.string()
        elif t == "jsonb":
            typ = pa.string()
        elif t == "int2":
            typ = pa.int16()
        elif t == "int4":
            typ = pa.int32()
        elif t == "int8":
            typ = pa.int64()
        elif t == "float8":
            typ = pa.float64()
        elif t == "bool":
            typ = pa.bool_()
        elif m:
            p, s = int(m.group(1)), int(m.group(2))
            typ = pa.decimal128(p, s)
            quantum = decimal.Decimal(1).scaleb(-s)
            exact = []
            for v in values:
                if v is None:
                    exact.append(None)
                    continue
                r = v.quantize(quantum)
                if r != v:
                    raise SystemExit(f"{col['name']}: {v} does not fit numeric({p},{s})")
                exact.append(r)
            values = exact
        elif t == "timestamptz":
            typ = pa.timestamp("us", tz="UTC")
        elif t == "date":
            typ = pa.date32()
        elif t == "text[]":
            typ = pa.list_(pa.string())
        else:
            raise SystemExit(f"unknown type {t}")
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(col["name"], typ, nullable=True))
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), args.out)
    schema = [
        {"name": f.name, "type": f.field_type, "mode": f.mode, "precision": f.precision, "scale": f.scale}
        for f in meta.schema
    ]
    print(json.dumps({"rows": len(rows), "table_schema": schema}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--project", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    qp = sub.add_parser("query")
    qp.add_argument("sql")
    ep = sub.add_parser("export")
    ep.add_argument("--schema", required=True)
    ep.add_argument("--table", required=True)
    ep.add_argument("--out", required=True)
    ep.add_argument("--jsonb-as", choices=["json", "string"], default="json",
                    help="how the destination stored jsonb (its jsonb_as setting)")
    args = ap.parse_args()
    {"query": cmd_query, "export": cmd_export}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
