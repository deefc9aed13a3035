"""Shared argument parsing and reporting for the peer scripts.

Every peer runs as its own process (so /usr/bin/time sees only its CPU and RSS), reads the
same SQL text, writes one zstd Parquet file, and prints one JSON line on stdout:
{"tool": ..., "version": ..., "rows": <rows the tool says it wrote>, "inner_s": <seconds from
after the imports to the closed file>, "notes": [...]}. The harness counts the rows again with
its own reader; the number printed here is only cross-checked.
"""

import argparse
import json
import sys
import time


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="postgres:// URL of the source database")
    p.add_argument("--query", required=True, help="SELECT whose rows are exported")
    p.add_argument("--out", required=True, help="Parquet file to write")
    p.add_argument(
        "--zstd-level",
        default="1",
        help="zstd level, or 'default' for the tool's own default level",
    )
    p.add_argument("--batch-rows", type=int, default=65536, help="rows per streamed batch, where the tool has the knob")
    return p.parse_args()


def level(args: argparse.Namespace):
    return None if args.zstd_level == "default" else int(args.zstd_level)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def report(tool: str, version: str, rows: int, timer: Timer, notes=None) -> None:
    json.dump(
        {"tool": tool, "version": version, "rows": rows, "inner_s": round(timer.elapsed(), 4), "notes": notes or []},
        sys.stdout,
    )
    sys.stdout.write("\n")
    sys.stdout.flush()
