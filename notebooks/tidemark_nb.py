"""Shared helpers for the tidemark notebooks: find the export, register DuckDB views.

An export (what `tidemark demo` or a PARQUET_S3 destination on a local directory writes) looks
like

    <root>/<table>/v<major>/org_id=<organization>/date=<YYYY-MM-DD>/<table>_<start>_<end>_<delivery>.parquet

`connect()` opens an in-memory DuckDB database with, for every table and schema major ``N``
published in ``schemas/<table>/v<N>.json`` (and any other major found in the export), the names
`tidemark query` and the warehouse destinations use, so a query written in a notebook runs
there, and back:

* ``<table>_v<N>_raw``: the history, every delivered row version (a row updated in three
  windows appears three times), plus the hive partition columns ``org_id`` (text) and ``date``
  (the UTC date of the window) of the object keys;
* ``<table>_v<N>_latest`` and ``<table>_v<N>``: the newest version of each ``id`` (greatest
  ``updated_at``), published columns only; when the export carries delete tombstones (an
  ``_op`` column), ids whose newest version is a delete (``_op = 'D'``) are left out;
* ``<table>``: ``<table>_v<N>_latest`` of the newest published major. Notebooks pin a major
  instead (``findings_v1_latest``): a new major may rename or retype columns.

A published major without any file in the export is registered empty, with its published
column types, as `tidemark query` does: a query over it returns no rows instead of failing.

The export is located by, in order: the ``export`` argument, the ``TIDEMARK_EXPORT_DIR``
environment variable, then ``./tidemark-demo`` and ``<repo>/tidemark-demo`` (the default
``--dir`` of ``tidemark demo`` / ``scripts/demo``). Either the demo directory (which holds
``parquet/`` and ``jsonl/``) or the Parquet root itself may be given.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import duckdb

# DuckDB's DataFrame conversion calls a pandas API that pandas 3.1 deprecates; not ours to fix.
warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame.drop is deprecated")

TABLES = (
    "events",
    "findings",
    "rule_runs",
    "siem_deliveries",
    "workflow_deliveries",
    "audit_log",
    "oauth_grants",
    "identities",
    "assets",
    "baseline_scores",
)

_REPO = Path(__file__).resolve().parent.parent


def _parquet_root(candidate: Path) -> Path | None:
    """The directory holding ``<table>/v<major>/`` under ``candidate``, if any."""
    for root in (candidate / "parquet", candidate):
        if root.is_dir() and any((root / t).is_dir() for t in TABLES):
            return root
    return None


def export_dir(export: str | os.PathLike | None = None) -> Path:
    """The Parquet root of the export to read; raises FileNotFoundError naming what was tried."""
    tried = []
    if export is not None:
        candidates = [Path(export)]
    elif os.environ.get("TIDEMARK_EXPORT_DIR"):
        candidates = [Path(os.environ["TIDEMARK_EXPORT_DIR"])]
    else:
        candidates = [Path.cwd() / "tidemark-demo", _REPO / "tidemark-demo"]
    for c in candidates:
        root = _parquet_root(c.expanduser())
        if root is not None:
            return root.resolve()
        tried.append(str(c))
    raise FileNotFoundError(
        "no tidemark export found (tried: " + ", ".join(tried) + "). Run `scripts/demo` or "
        "`tidemark demo --dir DIR` and set TIDEMARK_EXPORT_DIR=DIR."
    )


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def published(schemas_dir: Path = _REPO / "schemas") -> dict[str, dict[int, dict]]:
    """table -> major -> published schema (the JSON of schemas/<table>/v<major>.json)."""
    found: dict[str, dict[int, dict]] = {}
    for f in sorted(schemas_dir.glob("*/v*.json")):
        if f.stem[1:].isdigit():
            found.setdefault(f.parent.name, {})[int(f.stem[1:])] = json.loads(f.read_text())
    return found


def majors(root: Path, table: str) -> list[int]:
    """Schema majors of ``table`` with at least one Parquet object in the export, ascending."""
    found = []
    for d in (root / table).glob("v*"):
        if d.name[1:].isdigit() and any(d.glob("**/*.parquet")):
            found.append(int(d.name[1:]))
    return sorted(found)


def duckdb_type(published_type: str) -> str:
    """The DuckDB type a published column type reads as from tidemark's Parquet."""
    m = re.fullmatch(r"numeric\((\d+),(\d+)\)", published_type)
    if m:
        return f"DECIMAL({m.group(1)},{m.group(2)})"
    return {
        "uuid": "VARCHAR", "text": "VARCHAR", "jsonb": "VARCHAR", "inet": "VARCHAR",
        "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float8": "DOUBLE",
        "bool": "BOOLEAN", "timestamptz": "TIMESTAMPTZ", "date": "DATE", "text[]": "VARCHAR[]",
    }[published_type]


def register(con: duckdb.DuckDBPyConnection, root: Path, table: str, major: int, schema: dict | None = None) -> int:
    """Registers ``<table>_v<major>_raw``, ``<table>_v<major>_latest`` and ``<table>_v<major>``;
    returns the number of Parquet objects behind them (0: an empty table of the published type)."""
    base = root / table / f"v{major}"
    objects = sum(1 for _ in base.glob("**/*.parquet"))
    raw = _ident(f"{table}_v{major}_raw")
    if objects:
        # union_by_name: files written before an additive (minor) schema change lack the new
        # columns; they read as NULL instead of failing.
        glob = _sql_str(str(base) + "/**/*.parquet")
        con.execute(
            f"CREATE OR REPLACE VIEW {raw} AS SELECT * FROM read_parquet({glob}, "
            "hive_partitioning = true, union_by_name = true)"
        )
    else:
        assert schema is not None, f"no files and no published schema for {table} v{major}"
        cols = [f"CAST(NULL AS {duckdb_type(c['type'])}) AS {_ident(c['name'])}" for c in schema["columns"]]
        cols += ["CAST(NULL AS DATE) AS date", "CAST(NULL AS VARCHAR) AS org_id"]
        con.execute(f"CREATE OR REPLACE VIEW {raw} AS SELECT {', '.join(cols)} WHERE false")
    columns = {r[0] for r in con.execute(f"DESCRIBE {raw}").fetchall()}
    # The latest rule of `tidemark query` and the warehouse views: newest updated_at per id,
    # on a tie the U (a delete and a re-insert in one transaction: docs/DELETES.md), published
    # columns only.
    drop = ["org_id", "date"] + (["_op"] if "_op" in columns else [])
    order = "updated_at DESC, _op DESC" if "_op" in columns else "updated_at DESC"
    newest = (
        f"SELECT * FROM {raw} "
        f"QUALIFY row_number() OVER (PARTITION BY id ORDER BY {order}) = 1"
    )
    if "_op" in columns:
        newest = f"SELECT * FROM ({newest}) WHERE _op IS DISTINCT FROM 'D'"
    newest = f"SELECT * EXCLUDE ({', '.join(_ident(c) for c in drop)}) FROM ({newest})"
    for name in (f"{table}_v{major}_latest", f"{table}_v{major}"):
        con.execute(f"CREATE OR REPLACE VIEW {_ident(name)} AS {newest}")
    return objects


def connect(export: str | os.PathLike | None = None, quiet: bool = False) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the history and latest views of every published table and major."""
    root = export_dir(export)
    schemas = published()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    found, empty = [], []
    for table in TABLES:
        versions = sorted(set(schemas.get(table, {})) | set(majors(root, table)))
        for major in versions:
            objects = register(con, root, table, major, schemas.get(table, {}).get(major))
            (found if objects else empty).append(f"{table}_v{major}")
        if versions:
            newest = max(schemas.get(table) or versions)
            con.execute(
                f"CREATE OR REPLACE VIEW {_ident(table)} AS SELECT * FROM {_ident(f'{table}_v{newest}_latest')}"
            )
    if not found:
        raise FileNotFoundError(f"{root} holds no Parquet files of any tidemark table")
    if not quiet:
        print(f"export: {root}")
        print(f"tables: {', '.join(found)} (each as _raw, _latest and plain)")
        if empty:
            print(f"published, no files in this export (registered empty): {', '.join(empty)}")
    return con


def overview(con: duckdb.DuckDBPyConnection):
    """One row per table and major: history rows, latest rows (ids), organizations, time span."""
    import pandas as pd

    names = [
        r[0][: -len("_raw")]
        for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND view_name LIKE '%\\_raw' ESCAPE '\\' "
            "ORDER BY view_name"
        ).fetchall()
    ]
    order = {t: i for i, t in enumerate(TABLES)}
    names.sort(key=lambda n: (order.get(n.rsplit("_v", 1)[0], 99), n))
    rows = [
        con.execute(
            f"SELECT ? AS relation, count(*) AS history_rows, "
            f"(SELECT count(*) FROM {_ident(n + '_latest')}) AS latest_rows, "
            f"count(DISTINCT organization_id) AS organizations, "
            f"min(updated_at) AS first_updated_at, max(updated_at) AS last_updated_at "
            f"FROM {_ident(n + '_raw')}",
            [n],
        ).df()
        for n in names
    ]
    return pd.concat(rows, ignore_index=True)


def org_labels(con: duckdb.DuckDBPyConnection, table: str = "findings_v1_raw") -> dict[str, str]:
    """Short, stable labels for the organization ids of ``table`` (the export carries ids, not
    names): ``org-1a2b3c4d``."""
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT organization_id FROM {_ident(table)} ORDER BY 1").fetchall()]
    return {i: "org-" + i[:8] for i in ids}
