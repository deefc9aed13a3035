"""Runs SQL statements against a Snowflake endpoint with the official Python connector
(snowflake-connector-python 4.8.1) and prints the last statement's result as one JSON object:
{"columns": [...], "rows": [[...], ...]}. Values are strings (None stays null): int and
Decimal as plain digits, float as repr (shortest round trip), bool as true/false, dates and
datetimes in ISO 8601, VARIANT/ARRAY as the JSON text the connector returns.

The independent read-back of tidemark's Snowflake tests: it shares no code with tidemark.

    SF_PASSWORD=... python snowflake_query.py --port 8085 --account A --user U \
        --password-env SF_PASSWORD [--database DB --schema S] "SQL" ["SQL" ...]
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import snowflake.connector  # noqa: E402


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    return str(v)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-env", required=True)
    p.add_argument("--database")
    p.add_argument("--schema")
    p.add_argument("sql", nargs="+")
    a = p.parse_args()
    conn = snowflake.connector.connect(
        host=a.host, port=a.port, protocol="http", account=a.account, user=a.user,
        password=os.environ[a.password_env], database=a.database, schema=a.schema,
        network_timeout=20, login_timeout=20,
    )
    cur = conn.cursor()
    result = {"columns": [], "rows": []}
    for sql in a.sql:
        cur.execute(sql)
        cols = [d[0] for d in (cur.description or [])]
        rows = [[text(v) for v in row] for row in cur.fetchall()]
        result = {"columns": cols, "rows": rows}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
