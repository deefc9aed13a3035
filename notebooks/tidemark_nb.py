"""Shared helpers for the tidemark notebooks: find the export, register DuckDB views.

An export (what `tidemark demo` or a PARQUET_S3 destination on a local directory writes) looks
like

    <root>/<table>/v<major>/org_id=<organization>/date=<YYYY-MM-DD>/<table>_<start>_<end>_<delivery>.parquet

`connect()` opens an in-memory DuckDB database with two views per table:

* ``<table>``: the raw history, every delivered row version (one row per version of an ``id``;
  a row updated three times in three windows appears three times). The hive partition columns
  ``org_id`` (text) and ``date`` (the UTC date of the window) come along.
* ``<table>_latest``: the newest version of each ``id`` (greatest ``updated_at``), without the
  ids whose newest version is a delete tombstone (``_op = 'D'``) when the export carries an
  ``_op`` column.

The export is located by, in order: the ``export`` argument, the ``TIDEMARK_EXPORT_DIR``
environment variable, then ``./tidemark-demo`` and ``<repo>/tidemark-demo`` (the default
``--dir`` of ``tidemark demo`` / ``scripts/demo``). Either the demo directory (which holds
``parquet/`` and ``jsonl/``) or the Parquet root itself may be given.
"""

from __future__ import annotations

import os
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


def register(con: duckdb.DuckDBPyConnection, root: Path, table: str, major: int = 1) -> bool:
    """Registers ``<table>`` and ``<table>_latest`` for schema major ``major``; False if absent."""
    base = root / table / f"v{major}"
    if not any(base.glob("**/*.parquet")):
        return False
    glob = _sql_str(str(base) + "/**/*.parquet")
    t, latest = _ident(table), _ident(table + "_latest")
    con.execute(
        f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet({glob}, "
        "hive_partitioning = true, union_by_name = true)"
    )
    columns = {r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()}
    # Newest version per id; a tie on updated_at is the same version delivered twice.
    newest = f"SELECT * FROM {t} QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated_at DESC) = 1"
    if "_op" in columns:
        newest = f"SELECT * EXCLUDE (_op) FROM ({newest}) WHERE _op IS DISTINCT FROM 'D'"
    con.execute(f"CREATE OR REPLACE VIEW {latest} AS {newest}")
    return True


def connect(
    export: str | os.PathLike | None = None, majors: dict[str, int] | None = None, quiet: bool = False
) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with ``<table>`` and ``<table>_latest`` views over the export.

    ``majors`` pins a schema major per table (default 1 for every table); analysts pin the major
    they wrote their SQL against, since a new major may rename or retype columns.
    """
    root = export_dir(export)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    found = [t for t in TABLES if register(con, root, t, (majors or {}).get(t, 1))]
    if not found:
        raise FileNotFoundError(f"{root} holds no Parquet files of any tidemark table")
    if not quiet:
        print(f"export: {root}")
        print(f"tables: {', '.join(found)}")
    return con


def overview(con: duckdb.DuckDBPyConnection):
    """One row per registered table: versions (history rows), ids (latest rows), organizations, span."""
    rows = []
    for t in TABLES:
        exists = con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [t]
        ).fetchone()[0]
        if not exists:
            continue
        rows.append(
            con.execute(
                f"SELECT ? AS table_name, count(*) AS history_rows, "
                f"(SELECT count(*) FROM {_ident(t + '_latest')}) AS latest_rows, "
                f"count(DISTINCT organization_id) AS organizations, "
                f"min(updated_at) AS first_updated_at, max(updated_at) AS last_updated_at "
                f"FROM {_ident(t)}",
                [t],
            ).df()
        )
    import pandas as pd

    return pd.concat(rows, ignore_index=True)


def org_labels(con: duckdb.DuckDBPyConnection, table: str = "findings") -> dict[str, str]:
    """Short, stable labels for the organization ids of ``table`` (the export carries ids, not
    names): ``org-1a2b3c4d``."""
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT organization_id FROM {_ident(table)} ORDER BY 1").fetchall()]
    return {i: "org-" + i[:8] for i in ids}
