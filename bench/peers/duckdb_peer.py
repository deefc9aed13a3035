"""DuckDB + its postgres extension → zstd Parquet.

The extension is loaded from a private extension directory that the harness filled once from
the `duckdb-extension-postgres` wheel (`--install-from`); nothing is downloaded at run time.

--mode query (default): ATTACH, then COPY (SELECT * FROM postgres_query('pg', <sql>)) — Postgres
runs exactly the SQL every other tool runs, DuckDB streams it into Parquet.
--mode scan: COPY (<sql rewritten against pg.public.*>) — DuckDB's own parallel table scan,
with filters pushed down and the ORDER BY done by DuckDB. Only used when the harness asks.
"""

import _common

def main() -> None:
    import argparse
    import sys

    # Extra flags first, then the common ones.
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--ext-dir", required=True)
    extra.add_argument("--install-from", default=None, help="path of postgres.duckdb_extension to INSTALL first")
    extra.add_argument("--mode", choices=["query", "scan"], default="query")
    extra.add_argument("--scan-sql", default=None, help="for --mode scan: SQL against pg.public.<table>")
    known, rest = extra.parse_known_args()
    sys.argv = [sys.argv[0]] + rest
    args = _common.parse_args("DuckDB postgres extension → Parquet")

    import duckdb

    timer = _common.Timer()
    con = duckdb.connect(
        config={
            "extension_directory": known.ext_dir,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": True,
        }
    )
    if known.install_from:
        con.execute(f"INSTALL '{known.install_from}'")
    con.execute("LOAD postgres")
    url = args.url.replace("'", "''")
    con.execute(f"ATTACH '{url}' AS pg (TYPE postgres, READ_ONLY)")
    lvl = _common.level(args)
    opts = "FORMAT parquet, COMPRESSION zstd" + (f", COMPRESSION_LEVEL {lvl}" if lvl is not None else "")
    out = args.out.replace("'", "''")
    if known.mode == "query":
        sql = args.query.replace("'", "''")
        select = f"SELECT * FROM postgres_query('pg', '{sql}')"
    else:
        select = known.scan_sql
    res = con.execute(f"COPY ({select}) TO '{out}' ({opts})").fetchall()
    rows = int(res[0][0]) if res and res[0] else -1
    con.close()
    _common.report("duckdb", duckdb.__version__, rows, timer, [f"mode={known.mode}"])


if __name__ == "__main__":
    main()
