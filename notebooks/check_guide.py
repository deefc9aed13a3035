"""Checks docs/ANALYST_GUIDE.md against the repo and an export (used by scripts/notebooks).

    python notebooks/check_guide.py [--tidemark BIN] [--guide PATH]
    python notebooks/check_guide.py --columns TABLE [--major N]   # print a column table

1. Every column table of the guide (a heading ending in "`<table>` v<N>" followed by a
   markdown table whose rows start with a column name) must list exactly the columns of
   schemas/<table>/v<N>.json, in order, with the same type, nullability and description; and
   every published schemas/<table>/v<N>.json must have one.
2. Every ```sql block runs in DuckDB over the export (tidemark_nb.connect(); the export comes
   from TIDEMARK_EXPORT_DIR), with the placeholder path /data/export replaced by the export's
   Parquet root. Unless the block is preceded by a line `<!-- duckdb only -->` and when
   --tidemark is given, it also runs with `BIN query --dir <export> --format json`
   (DataFusion), and both must return the same number of rows. A block preceded by
   `<!-- not run: <reason> -->` is skipped (say why in the reason).
Exit 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import tidemark_nb

REPO = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^#+ .*`([a-z_]+)` v(\d+)\s*$")


def schema(table: str, major: int) -> dict:
    return json.loads((REPO / "schemas" / table / f"v{major}.json").read_text())


def columns_markdown(table: str, major: int) -> str:
    rows = ["| column | type | null | description |", "|---|---|---|---|"]
    for c in schema(table, major)["columns"]:
        null = "null" if c["nullable"] else "not null"
        rows.append(f"| `{c['name']}` | {c['type']} | {null} | {c['description']} |")
    return "\n".join(rows)


def check_columns(lines: list[str]) -> list[str]:
    errors = []
    documented = {(m.group(1), int(m.group(2))) for m in map(HEADING.match, lines) if m}
    for f in sorted((REPO / "schemas").glob("*/v*.json")):
        if f.stem[1:].isdigit() and (f.parent.name, int(f.stem[1:])) not in documented:
            errors.append(
                f"{f.relative_to(REPO)} is published but has no column table; add a heading "
                f"'### `{f.parent.name}` {f.stem}' and the output of: "
                f"python notebooks/check_guide.py --columns {f.parent.name} --major {f.stem[1:]}"
            )
    i = 0
    while i < len(lines):
        m = HEADING.match(lines[i])
        i += 1
        if not m:
            continue
        table, major = m.group(1), int(m.group(2))
        path = REPO / "schemas" / table / f"v{major}.json"
        if not path.exists():
            errors.append(f"guide documents {table} v{major}, but {path.relative_to(REPO)} does not exist")
            continue
        while i < len(lines) and not lines[i].startswith("| column "):
            if HEADING.match(lines[i]) or lines[i].startswith("#"):
                break
            i += 1
        found = []
        if i < len(lines) and lines[i].startswith("| column "):
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                found.append(lines[i].strip())
                i += 1
        expected = columns_markdown(table, major).splitlines()[2:]
        if found != expected:
            errors.append(
                f"the column table of {table} v{major} differs from {path.relative_to(REPO)}; "
                f"regenerate it with: python notebooks/check_guide.py --columns {table} --major {major}"
            )
    return errors


def sql_blocks(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line number, SQL, mode) of every ```sql block; mode is "both", "duckdb" or "skip"."""
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sql":
            start = i
            marker = lines[start - 1].strip() if start > 0 else ""
            mode = "duckdb" if marker == "<!-- duckdb only -->" else "both"
            if marker.startswith("<!-- not run:"):
                mode = "skip"
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            blocks.append((start + 1, "\n".join(body), mode))
        i += 1
    return blocks


def check_queries(lines: list[str], tidemark: str | None) -> list[str]:
    errors = []
    con = tidemark_nb.connect(quiet=True)
    root = tidemark_nb.export_dir()
    blocks = sql_blocks(lines)
    run_blocks = [b for b in blocks if b[2] != "skip"]
    for line, sql, mode in run_blocks:
        sql = sql.replace("/data/export/", str(root) + "/")
        try:
            n_duck = len(con.execute(sql).fetchall())
        except Exception as e:  # noqa: BLE001 - report whatever DuckDB says
            errors.append(f"line {line}: DuckDB: {e}")
            continue
        if mode == "duckdb" or not tidemark:
            continue
        run = subprocess.run(
            [tidemark, "--log", "warn", "query", "--dir", str(root), "--format", "json", sql],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            errors.append(f"line {line}: tidemark query exited {run.returncode}: {run.stderr.strip()}")
            continue
        n_df = sum(1 for row in run.stdout.splitlines() if row.strip())
        if n_df != n_duck:
            errors.append(f"line {line}: DuckDB returned {n_duck} rows, tidemark query {n_df}")
    both = sum(1 for b in run_blocks if b[2] == "both") if tidemark else 0
    print(
        f"guide: {len(run_blocks)} of {len(blocks)} SQL examples run with DuckDB, "
        f"{both} of them with tidemark query too",
        flush=True,
    )
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guide", type=Path, default=REPO / "docs" / "ANALYST_GUIDE.md")
    ap.add_argument("--tidemark", help="tidemark binary: also run the examples with `tidemark query`")
    ap.add_argument("--columns", metavar="TABLE", help="print the column table of TABLE and exit")
    ap.add_argument("--major", type=int, default=1)
    args = ap.parse_args()
    if args.columns:
        print(columns_markdown(args.columns, args.major))
        return 0
    lines = args.guide.read_text().splitlines()
    errors = check_columns(lines) + check_queries(lines, args.tidemark)
    for e in errors:
        print(f"{args.guide.name}: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
