"""Executes notebooks headlessly with nbclient and checks them (used by scripts/notebooks).

    python notebooks/execute.py [--timeout SECONDS] [--out DIR] NOTEBOOK...

For each notebook, in order: it must be committed without outputs (no outputs, no execution
counts); every cell must run without error within the per-cell timeout; and the executed
notebook must hold at least one image (a matplotlib chart). With --out, the executed copies are
written there. Exit status 0 when every notebook passes, 1 otherwise. The export the notebooks
read comes from the environment (TIDEMARK_EXPORT_DIR, see tidemark_nb.py).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError


def committed_outputs(nb) -> list[str]:
    """Cells that carry outputs or execution counts (notebooks are committed clean)."""
    return [
        cell.get("id", str(i))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def images(nb) -> int:
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if any(k.startswith("image/") for k in out.get("data", {}))
    )


def run(path: Path, timeout: int, out: Path | None) -> str | None:
    """Executes one notebook; returns an error message or None."""
    nb = nbformat.read(path, as_version=4)
    dirty = committed_outputs(nb)
    if dirty:
        return f"committed with outputs in cells {', '.join(dirty)} (clear them before committing)"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    error = None
    try:
        client.execute()
    except CellTimeoutError as e:
        error = f"a cell ran longer than {timeout}s: {e}"
    except CellExecutionError as e:
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # tracebacks come with terminal colours
    except DeadKernelError as e:
        error = f"the kernel died: {e}"
    except Exception as e:  # kernel start-up failures and the like
        error = f"{type(e).__name__}: {e}"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    if error is None and images(nb) == 0:
        error = "ran, but produced no image output (each notebook must show at least one chart)"
    return error


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    ap.add_argument("--out", type=Path, help="write the executed notebooks here")
    args = ap.parse_args()
    failed = 0
    for path in args.notebooks:
        t = time.monotonic()
        error = run(path, args.timeout, args.out)
        took = time.monotonic() - t
        if error is None:
            print(f"ok      {path.name} ({took:.1f}s)", flush=True)
        else:
            failed += 1
            print(f"FAILED  {path.name} ({took:.1f}s)\n{error}", flush=True)
    if failed:
        print(f"{failed} of {len(args.notebooks)} notebooks failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
