#!/usr/bin/env python3
"""tidemark benchmark harness: tidemark vs the Postgres COPY floor vs the peers, on one machine.

    python3 bench/run.py [--rows 5000000] [--days 30] [--reps 3] [--workers 2]
                         [--window-rows 50000] [--skip-peers X,Y] [--keep]

One run: set up (venv with the Python peers, pg2parquet, tidemark release build), start a
throwaway Postgres (`tidemark reference postgres`), generate the reference `events` table with
the project's generator (database `app`, one organization, N rows) and a second database `win`
whose ~50k rows sit in one 15-minute window, then time every tool interleaved and repeated,
check every output's row count with an independent reader (pyarrow Parquet metadata), and
write docs/PERFORMANCE.md plus raw JSON in bench/results/. See bench/README.md.

The harness re-executes itself inside its venv (so it can read Parquet with pyarrow); each tool
runs as its own process under /usr/bin/time, so wall, CPU and peak RSS are that process's alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = Path(os.environ.get("TIDEMARK_CACHE", str(Path.home() / ".cache" / "tidemark")))
REQUIREMENTS = BENCH / "requirements.txt"
PG2PARQUET_VERSION = "0.2.2"
PEERS = ["duckdb", "connectorx", "adbc", "pg2parquet"]
OPTIONAL_TOOLS = ["duckdb-scan", "copy-unordered", "tidemark-iceberg"]
WINDOW_SECONDS = 900
# Tools in the tables that are not peers (the 1.3× target is against the others).
NOT_PEERS = ("tidemark", "copy", "copy-unordered", "tidemark-iceberg")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 2) -> None:
    log(f"ERROR: {msg}")
    sys.exit(code)


# --------------------------------------------------------------------------------------------
# Setup: venv (re-exec), /usr/bin/time, pg2parquet, tidemark, DuckDB extension
# --------------------------------------------------------------------------------------------


def venv_dir() -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return CACHE / f"venv-bench-{digest}"


def ensure_venv_and_reexec() -> None:
    venv = venv_dir()
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    if not (venv / ".complete").exists():
        log(f"creating the benchmark venv {venv} (pip install -r {REQUIREMENTS.relative_to(REPO)})")
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
        (venv / ".complete").write_text("ok\n")
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


def ensure_time() -> str:
    if Path("/usr/bin/time").exists():
        return "/usr/bin/time"
    log("/usr/bin/time missing: installing the Debian package `time`")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "time"], check=True)
    return "/usr/bin/time"


def ensure_pg2parquet() -> Path:
    root = CACHE / "bench-tools"
    binary = root / "bin" / "pg2parquet"
    if binary.exists():
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
        if PG2PARQUET_VERSION in out:
            return binary
    log(f"installing pg2parquet {PG2PARQUET_VERSION} from crates.io into {root} (once; a few minutes)")
    subprocess.run(
        [
            "cargo", "install", "pg2parquet", "--version", PG2PARQUET_VERSION, "--locked", "--force",
            "--root", str(root), "--target-dir", str(root / "target"),
        ],
        check=True,
    )
    shutil.rmtree(root / "target", ignore_errors=True)  # ~600 MB of build artefacts
    return binary


def ensure_tidemark(args) -> Path:
    if args.tidemark_bin:
        b = Path(args.tidemark_bin).resolve()
        if not b.exists():
            die(f"--tidemark-bin {b} does not exist")
        return b
    target = Path(os.environ.get("TIDEMARK_BENCH_TARGET_DIR", str(CACHE / "target-release")))
    binary = target / "release" / "tidemark"
    if args.no_build and not args.rev and binary.exists():
        return binary
    src = REPO
    if args.rev:
        # Build a committed revision from `git archive`, leaving the working tree alone.
        commit = subprocess.run(["git", "rev-parse", "--verify", f"{args.rev}^{{commit}}"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        src = CACHE / "bench-src" / commit[:12]
        if not (src / "Cargo.toml").exists():
            src.mkdir(parents=True, exist_ok=True)
            archive = subprocess.Popen(["git", "archive", commit], cwd=REPO, stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
            if archive.wait() != 0:
                die(f"git archive {commit} failed")
        if args.no_build and (src / "tidemark").exists():
            return src / "tidemark"
    log(f"cargo build --release --locked in {src} (CARGO_TARGET_DIR={target}); the first build takes 10+ minutes")
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tidemark"], cwd=src, env=env, check=True)
    if args.rev:
        # Keep this revision's binary apart, so a later build of another tree cannot swap it mid-run.
        kept = src / "tidemark"
        shutil.copy2(binary, kept)
        return kept
    return binary


def duckdb_extension_file() -> Path:
    import duckdb_extension_postgres  # noqa: F401  (the wheel that ships the binary)

    base = Path(duckdb_extension_postgres.__file__).parent
    found = sorted(base.glob("extensions/*/postgres.duckdb_extension"))
    if not found:
        die(f"no postgres.duckdb_extension under {base}")
    return found[0]


def ensure_duckdb_extension() -> Path:
    """INSTALLs the postgres extension from the wheel into a private directory (once)."""
    import duckdb

    ext_dir = CACHE / f"bench-duckdb-ext-{duckdb.__version__}"
    marker = ext_dir / ".installed"
    if not marker.exists():
        ext_dir.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(config={"extension_directory": str(ext_dir), "autoinstall_known_extensions": False})
        con.execute(f"INSTALL '{duckdb_extension_file()}'")
        con.execute("LOAD postgres")
        con.close()
        marker.write_text("ok\n")
    return ext_dir


# --------------------------------------------------------------------------------------------
# Postgres helpers
# --------------------------------------------------------------------------------------------


def psql(url: str, sql: str, check: bool = True) -> str:
    r = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", url, "-c", sql], capture_output=True, text=True
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed ({r.returncode}): {r.stderr.strip()}\nSQL: {sql}")
    return r.stdout.strip()


def db_url(url: str, db: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{db}"


class Cluster:
    """`tidemark reference postgres` in the background; SIGINT at the end."""

    def __init__(self, tidemark: Path, work: Path, tmpdir=None):
        self.log_path = work / "cluster.log"
        env = dict(os.environ)
        if tmpdir:
            Path(tmpdir).mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(tmpdir)
        self.proc = subprocess.Popen(
            [str(tidemark), "reference", "postgres", "--database", "app"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("postgres"):
            self.stop()
            die(f"`tidemark reference postgres` printed no URL; see {self.log_path}: {self.log_path.read_text()[-2000:]}")
        self.url = line
        self.data_dir = Path(psql(self.url, "SHOW data_directory"))
        self.postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_seconds(self) -> float:
        """CPU of the whole cluster so far: the postmaster, its live children, and (through the
        postmaster's cutime/cstime) every backend that has exited and been reaped."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        pm = self.postmaster
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            pid, ppid = int(entry), int(fields[1])
            if pid == pm:
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            elif ppid == pm:
                total += int(fields[11]) + int(fields[12])
        return total / tick


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def iceberg_commits(path: Path):
    """Snapshots in the newest metadata file of every Iceberg table under path (read as JSON,
    independently of tidemark), or None when there is no table."""
    total = None
    for meta_dir in sorted({p.parent for p in path.rglob("*.metadata.json")}):
        newest = max(meta_dir.glob("*.metadata.json"), key=lambda p: p.stat().st_mtime_ns)
        snaps = json.loads(newest.read_text()).get("snapshots") or []
        total = (total or 0) + len(snaps)
    return total


def dir_stats(path: Path):
    """(rows by pyarrow Parquet metadata, files, bytes) over every .parquet file under path."""
    import pyarrow.parquet as pq

    rows = files = size = 0
    for f in sorted(path.rglob("*.parquet")):
        rows += pq.ParquetFile(f).metadata.num_rows
        files += 1
        size += f.stat().st_size
    return rows, files, size


class Runner:
    def __init__(self, time_bin: str, cluster: Cluster, logs: Path, timeout: float):
        self.time_bin = time_bin
        self.cluster = cluster
        self.logs = logs
        self.timeout = timeout
        self.seq = 0

    def run(self, label: str, argv: list, env=None, cwd=None) -> dict:
        """Runs argv under /usr/bin/time; returns wall/cpu/rss, PG-side CPU, exit code, output paths."""
        self.seq += 1
        stem = self.logs / f"{self.seq:03d}-{label}"
        tfile, ofile, efile = stem.with_suffix(".time"), stem.with_suffix(".out"), stem.with_suffix(".err")
        full = [self.time_bin, "-f", "%e %U %S %M", "-o", str(tfile), "--", *map(str, argv)]
        pg0 = self.cluster.cpu_seconds()
        t0 = time.perf_counter()
        timed_out = False
        with open(ofile, "w") as out, open(efile, "w") as err:
            p = subprocess.Popen(full, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
            try:
                rc = p.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
                timed_out = True
            except BaseException:  # interrupted: do not leave the tool running in its own session
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
                raise
        outer = time.perf_counter() - t0
        time.sleep(0.2)  # let the postmaster reap the backend, so its CPU lands in cutime
        pg1 = self.cluster.cpu_seconds()
        res = {
            "argv": [str(a) for a in argv],
            "rc": rc,
            "timed_out": timed_out,
            "stdout": str(ofile),
            "stderr": str(efile),
            "pg_cpu_s": round(pg1 - pg0, 3),
            "outer_wall_s": round(outer, 3),
        }
        try:
            last = tfile.read_text().strip().splitlines()[-1].split()
            wall, user, sys_, rss_kb = float(last[0]), float(last[1]), float(last[2]), int(last[3])
            res.update(wall_s=wall, cpu_s=round(user + sys_, 3), user_s=user, sys_s=sys_, rss_mb=round(rss_kb / 1024, 1))
        except Exception as e:  # noqa: BLE001
            res.update(wall_s=None, cpu_s=None, rss_mb=None, time_error=str(e))
        return res


def tail(path: str, n: int = 600, lines: int = 3) -> str:
    """The last few non-empty lines of a log (a traceback's last lines say what went wrong)."""
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""
    last = [l.strip() for l in text.splitlines() if l.strip()][-lines:]
    return " / ".join(last)[-n:]


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def schema_columns() -> list:
    spec = json.loads((REPO / "schemas" / "events" / "v1.json").read_text())
    return [c["name"] for c in spec["columns"]]


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def align_down(t: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(t.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.timezone.utc)


class Bench:
    def __init__(self, args):
        self.args = args
        self.stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.work = Path(args.work_dir).resolve() if args.work_dir else CACHE / "bench-work" / self.stamp
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        self.results: dict = {"cases": {}, "setup": {}, "checks": [], "failures": []}
        self.mismatch = False
        self.cluster: Cluster | None = None

    # ---- setup -----------------------------------------------------------------------------

    def setup(self):
        a = self.args
        self.time_bin = ensure_time()
        self.tidemark = ensure_tidemark(a)
        self.tools = [t for t in (a.peers.split(",") if a.peers else PEERS) if t]
        skip = {t for t in (a.skip_peers or "").split(",") if t}
        unknown = (set(self.tools) | skip) - set(PEERS) - set(OPTIONAL_TOOLS)
        if unknown:
            die(f"unknown peer(s): {', '.join(sorted(unknown))}; known: {', '.join(PEERS + OPTIONAL_TOOLS)}")
        self.tools = [t for t in self.tools if t not in skip]
        # A peer whose set-up fails is reported as failed; the run goes on.
        self.setup_errors: dict = {}
        self.pg2parquet = self.duck_ext = None
        if "pg2parquet" in self.tools:
            try:
                self.pg2parquet = ensure_pg2parquet()
            except Exception as e:  # noqa: BLE001
                self.setup_errors["pg2parquet"] = f"setup failed: cargo install pg2parquet {PG2PARQUET_VERSION}: {e}"
        if any(t.startswith("duckdb") for t in self.tools):
            try:
                self.duck_ext = ensure_duckdb_extension()
            except Exception as e:  # noqa: BLE001
                for t in ("duckdb", "duckdb-scan"):
                    self.setup_errors[t] = f"setup failed: INSTALL of the postgres extension from its wheel: {e}"
        for tool, err in self.setup_errors.items():
            if tool in self.tools:
                log(f"{tool}: {err} (reported as failed)")
        self.check_disk()
        self.columns = schema_columns()
        self.versions = self.tool_versions()

    def check_disk(self) -> None:
        """Warns when the cluster's temp dir or the work dir look too small for --rows."""
        need_pg = self.args.rows * 1300  # heap ~0.9 KB/row + indexes + WAL headroom
        need_out = self.args.rows * 250  # one tool's output at a time (deleted after counting unless --keep)
        if self.args.keep:
            need_out *= 2 + len(self.tools) * self.args.reps
        pg_dir = Path(self.args.pg_tmpdir or os.environ.get("TMPDIR", "/tmp"))
        for where, need in ((pg_dir, need_pg), (self.work, need_out)):
            free = shutil.disk_usage(where).free
            if free < need:
                log(f"WARNING: {where} has {free / 1e9:.0f} GB free; this run needs roughly {need / 1e9:.0f} GB there")

    def tool_versions(self) -> dict:
        import importlib.metadata as md

        v = {}
        v["tidemark"] = subprocess.run([str(self.tidemark), "--version"], capture_output=True, text=True).stdout.strip()
        v["psql"] = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
        for pkg in ["duckdb", "duckdb-extension-postgres", "connectorx", "adbc-driver-postgresql", "adbc-driver-manager", "pyarrow"]:
            try:
                v[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                v[pkg] = None
        if self.pg2parquet:
            v["pg2parquet"] = subprocess.run([str(self.pg2parquet), "--version"], capture_output=True, text=True).stdout.strip()
        v["python"] = platform.python_version()
        return v

    # ---- data --------------------------------------------------------------------------------

    def tm_env(self, url: str) -> dict:
        return dict(os.environ, TIDEMARK_DATABASE_URL=url, TIDEMARK_LOG=self.args.tidemark_log,
                    BENCH_ICEBERG_CATALOG_URL=url)

    def tm(self, url: str, *argv, check=True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.tidemark), *argv], env=self.tm_env(url), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"tidemark {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        return r

    def start_cluster(self):
        log("starting a throwaway PostgreSQL cluster (tidemark reference postgres)")
        self.cluster = Cluster(self.tidemark, self.work, self.args.pg_tmpdir)
        self.app = self.cluster.url
        self.win = db_url(self.app, "win")
        log(f"cluster up: {self.app} (data {self.cluster.data_dir})")

    def generate(self):
        a = self.args
        now = dt.datetime.now(dt.timezone.utc)
        # Whole table: history ends two hours ago, so every window of it is closed.
        self.end = align_down(now - dt.timedelta(hours=2), 3600)
        self.begin = self.end - dt.timedelta(days=a.days)
        t = time.perf_counter()
        log(f"app: reference install + generate --seed {a.seed} --orgs 1 --rows {a.rows} --days {a.days} --end {rfc3339(self.end)} --only-events")
        self.tm(self.app, "reference", "install")
        # --only-events: the very same events rows as a full run (tests/cli.rs checks it), without
        # the nine other tables, which no case reads and which would take 7 GB at 50M rows.
        self.tm(
            self.app, "reference", "generate", "--seed", str(a.seed), "--orgs", "1", "--rows", str(a.rows),
            "--days", str(a.days), "--end", rfc3339(self.end), "--only-events",
        )
        gen_s = time.perf_counter() - t
        self.tm(self.app, "migrate")
        log(f"app: generated in {gen_s:.1f}s; VACUUM (FREEZE, ANALYZE) events")
        psql(self.app, "VACUUM (FREEZE, ANALYZE) events")
        self.org = psql(self.app, "SELECT id FROM organizations ORDER BY id LIMIT 1")
        self.whole_rows = int(psql(self.app, "SELECT count(*) FROM events"))
        if self.whole_rows != a.rows:
            die(f"generator wrote {self.whole_rows} events, expected {a.rows}")

        # Window: one organization's rows squeezed into one closed 15-minute window.
        self.w_start = align_down(now, WINDOW_SECONDS) - dt.timedelta(hours=1)
        self.w_end = self.w_start + dt.timedelta(seconds=WINDOW_SECONDS)
        day_end = self.w_start
        day_start = day_end - dt.timedelta(days=1)
        log(f"win: CREATE DATABASE win; generate --seed {a.window_seed} --orgs 1 --rows {a.window_rows} --days 1; squeeze into [{rfc3339(self.w_start)}, {rfc3339(self.w_end)})")
        psql(self.app, "CREATE DATABASE win")
        self.tm(self.win, "reference", "install")
        self.tm(
            self.win, "reference", "generate", "--seed", str(a.window_seed), "--orgs", "1", "--rows",
            str(a.window_rows), "--days", "1", "--end", rfc3339(day_end),
        )
        ws, ds = rfc3339(self.w_start), rfc3339(day_start)
        last = f"'{ws}'::timestamptz + interval '{WINDOW_SECONDS} seconds' - interval '1 microsecond'"
        squeeze = lambda col: f"LEAST('{ws}'::timestamptz + ({col} - '{ds}'::timestamptz) / {86400 // WINDOW_SECONDS}, {last})"  # noqa: E731
        psql(
            self.win,
            "BEGIN; SET LOCAL session_replication_role = replica; "
            f"UPDATE events SET created_at = {squeeze('created_at')}, updated_at = {squeeze('updated_at')}; COMMIT;",
        )
        psql(self.win, "VACUUM (FULL, ANALYZE) events")
        psql(self.win, "VACUUM (FREEZE, ANALYZE) events")
        self.tm(self.win, "migrate")
        self.win_org = psql(self.win, "SELECT id FROM organizations ORDER BY id LIMIT 1")
        self.window_rows = int(
            psql(self.win, f"SELECT count(*) FROM events WHERE organization_id = '{self.win_org}' AND updated_at >= '{ws}' AND updated_at < '{rfc3339(self.w_end)}'")
        )
        total_win = int(psql(self.win, "SELECT count(*) FROM events"))
        if self.window_rows != a.window_rows or total_win != a.window_rows:
            die(f"window squeeze: {self.window_rows} of {total_win} rows in the window, expected {a.window_rows}")

        self.results["setup"].update(
            generate_s=round(gen_s, 1),
            end=rfc3339(self.end),
            begin=rfc3339(self.begin),
            org=self.org,
            window_start=ws,
            window_end=rfc3339(self.w_end),
            window_org=self.win_org,
            whole_rows=self.whole_rows,
            window_rows=self.window_rows,
            events_total_bytes=int(psql(self.app, "SELECT pg_total_relation_size('events')")),
            events_heap_bytes=int(psql(self.app, "SELECT pg_relation_size('events')")),
            pg_version=psql(self.app, "SHOW server_version").split()[0],
            pg_settings={
                k: psql(self.app, f"SHOW {k}")
                for k in ["shared_buffers", "fsync", "synchronous_commit", "max_wal_size", "work_mem", "max_parallel_workers_per_gather"]
            },
        )

    # ---- the tools ---------------------------------------------------------------------------

    def queries(self, case: str) -> dict:
        cols = ", ".join(self.columns)
        adbc_cols = ", ".join(f"{c}::text AS {c}" if c == "actor_ip" else c for c in self.columns)
        if case == "whole":
            where = ""
        else:
            where = f" WHERE organization_id = '{self.win_org}' AND updated_at >= '{rfc3339(self.w_start)}' AND updated_at < '{rfc3339(self.w_end)}'"
        order = " ORDER BY updated_at, id"
        return {
            "sql": f"SELECT {cols} FROM events{where}{order}",
            "sql_unordered": f"SELECT {cols} FROM events{where}",
            "adbc": f"SELECT {adbc_cols} FROM events{where}{order}",
            "duckdb_scan": f"SELECT {cols} FROM pg.public.events{where}{order}",
        }

    def run_tool(self, case: str, tool: str, rep: int, runner: Runner) -> dict:
        a = self.args
        url = self.app if case == "whole" else self.win
        q = self.queries(case)
        out = self.work / "out" / case / f"{tool}-r{rep}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        label = f"{case}-{tool}-r{rep}"
        if tool in self.setup_errors:
            return {"tool": tool, "case": case, "rep": rep, "ok": False, "error": self.setup_errors[tool], "argv": [], "rc": None}
        py = sys.executable
        lvl = ["--zstd-level", str(a.peer_zstd_level)]
        extra: dict = {}
        cleanup = None
        if tool in ("tidemark", "tidemark-iceberg"):
            name = f"bench-{case}-{self.stamp}-{tool}-r{rep}"
            start_from = "now" if case == "whole" else rfc3339(self.w_start)
            org = self.org if case == "whole" else self.win_org
            if tool == "tidemark":
                kind, config = "PARQUET_S3", {"url": f"file://{out}"}
            else:
                # ICEBERG_S3 on the same local disk, its SQL catalog in the benchmarked database
                # (by reference, as every credential); a namespace per run keeps runs apart.
                kind = "ICEBERG_S3"
                config = {"warehouse": f"file://{out}", "namespace": f"bench_{self.stamp.lower()}_r{rep}",
                          "catalog": {"type": "sql", "url": {"env": "BENCH_ICEBERG_CATALOG_URL"}}}
            self.tm(
                url, "destination", "add", "--org", org, "--kind", kind, "--name", name,
                "--tables", "events", "--start-from", start_from, "--config", json.dumps(config),
            )
            cleanup = lambda: self.tm(url, "destination", "remove", name, "--yes", check=False)  # noqa: E731
            if case == "whole":
                argv = [
                    self.tidemark, "backfill", "--destination", name, "--table", "events",
                    "--from", rfc3339(self.begin), "--to", rfc3339(self.end), "--workers", a.workers, "--json",
                ]
                if a.backfill_chunk:
                    argv[-1:-1] = ["--chunk", a.backfill_chunk]
            else:
                argv = [self.tidemark, "run", "--until-idle", "--workers", a.workers, "--json"]
            res = runner.run(label, argv, env=self.tm_env(url), cwd=self.work)
            if tool == "tidemark-iceberg":
                res["commits"] = iceberg_commits(out)
        elif tool in ("copy", "copy-unordered"):
            sql = q["sql"] if tool == "copy" else q["sql_unordered"]
            argv = ["psql", "-X", "-v", "ON_ERROR_STOP=1", url, "-c", f"\\copy ({sql}) TO '/dev/null' WITH (FORMAT binary)"]
            res = runner.run(label, argv, cwd=self.work)
        elif tool in ("duckdb", "duckdb-scan"):
            argv = [
                py, BENCH / "peers" / "duckdb_peer.py", "--ext-dir", self.duck_ext, "--url", url,
                "--query", q["sql"], "--out", out / "events.parquet", *lvl,
            ]
            if tool == "duckdb-scan":
                argv += ["--mode", "scan", "--scan-sql", q["duckdb_scan"]]
            res = runner.run(label, argv, cwd=out)
        elif tool == "connectorx":
            argv = [py, BENCH / "peers" / "connectorx_peer.py", "--url", url, "--query", q["sql"], "--out", out / "events.parquet", *lvl]
            res = runner.run(label, argv, cwd=out)
        elif tool == "adbc":
            argv = [py, BENCH / "peers" / "adbc_peer.py", "--url", url, "--query", q["adbc"], "--out", out / "events.parquet", *lvl]
            res = runner.run(label, argv, cwd=out)
        elif tool == "pg2parquet":
            zl = [] if a.peer_zstd_level == "default" else ["--compression-level", str(a.peer_zstd_level)]
            argv = [
                self.pg2parquet, "export", "--connection", url, "--query", q["sql"], "--output-file", out / "events.parquet",
                "--compression", "zstd", *zl, "--numeric-handling", "decimal", "--decimal-scale", "2", "--decimal-precision", "6", "--quiet",
            ]
            # pg2parquet prompts on the TTY for a password when none is given, even under trust auth.
            res = runner.run(label, argv, env=dict(os.environ, PGPASSWORD=os.environ.get("PGPASSWORD", "unused")), cwd=out)
        else:
            raise ValueError(tool)
        res.update(tool=tool, case=case, rep=rep)
        try:
            self.check(case, tool, res, out)
        finally:
            if cleanup:
                cleanup()
            if not a.keep:
                shutil.rmtree(out, ignore_errors=True)
        return res

    def check(self, case: str, tool: str, res: dict, out: Path) -> None:
        expected = self.whole_rows if case == "whole" else self.window_rows
        res["expected_rows"] = expected
        if res["rc"] != 0 or res["timed_out"]:
            res["ok"] = False
            why = "timed out" if res["timed_out"] else f"exit {res['rc']}"
            res["error"] = f"{why}: {tail(res['stderr']) or tail(res['stdout'])}"
            return
        stdout = Path(res["stdout"]).read_text(errors="replace")
        if tool in ("copy", "copy-unordered"):
            tag = [l for l in stdout.splitlines() if l.startswith("COPY ")]
            rows = int(tag[-1].split()[1]) if tag else -1
            res.update(rows=rows, output_bytes=0, files=0)
        else:
            rows, files, size = dir_stats(out)
            res.update(rows=rows, output_bytes=size, files=files)
            if tool in ("tidemark", "tidemark-iceberg"):
                try:
                    report = json.loads(stdout)
                    summary = report.get("summary", report)
                    res["tool_report"] = {k: summary.get(k) for k in ["delivered", "failed", "dead_letter", "fenced", "rows", "bytes", "seconds", "planned_windows"]}
                    res["tool_report"]["remaining"] = report.get("remaining")
                    secs = [o.get("seconds") for o in summary.get("outcomes") or [] if o.get("status") == "delivered"]
                    if secs:
                        res["tool_report"]["delivery_seconds_sum"] = round(sum(secs), 4)
                        res["tool_report"]["delivery_seconds_max"] = round(max(secs), 4)
                    res["inner_s"] = summary.get("seconds")
                    if summary.get("rows") != rows:
                        res.setdefault("warnings", []).append(f"tidemark reported {summary.get('rows')} rows, files hold {rows}")
                except (ValueError, AttributeError) as e:
                    res.setdefault("warnings", []).append(f"cannot parse tidemark --json output: {e}")
            elif tool != "pg2parquet":
                try:
                    line = [l for l in stdout.splitlines() if l.startswith("{")][-1]
                    peer = json.loads(line)
                    res["inner_s"] = peer.get("inner_s")
                    res["tool_version"] = peer.get("version")
                    res["notes"] = peer.get("notes")
                except (ValueError, IndexError) as e:
                    res.setdefault("warnings", []).append(f"cannot parse peer output: {e}")
        res["ok"] = rows == expected
        self.results["checks"].append({"case": case, "tool": tool, "rep": res["rep"], "rows": rows, "expected": expected, "ok": res["ok"]})
        if not res["ok"]:
            self.mismatch = True
            res["error"] = f"ROW COUNT MISMATCH: {rows} rows, expected {expected}"
            log(f"!!! {case} {tool} rep {res['rep']}: ROW COUNT MISMATCH: {rows} rows, expected {expected}")

    def run_case(self, case: str, tools: list, runner: Runner):
        a = self.args
        runs = []
        if not a.no_warmup:
            log(f"{case}: warm-up COPY (not timed)")
            runner.run(f"{case}-warmup", ["psql", "-X", self.app if case == "whole" else self.win, "-c",
                                          f"\\copy ({self.queries(case)['sql']}) TO '/dev/null' WITH (FORMAT binary)"])
        reps = a.reps if case == "whole" else a.window_reps
        for rep in range(1, reps + 1):
            for tool in tools:
                res = self.run_tool(case, tool, rep, runner)
                runs.append(res)
                if res.get("ok"):
                    log(f"{case} rep {rep}/{reps} {tool:<14} wall {res['wall_s']:>8.2f}s  cpu {res['cpu_s']:>8.2f}s  "
                        f"pg cpu {res['pg_cpu_s']:>7.2f}s  rss {res['rss_mb']:>8.1f} MB  rows {res['rows']}")
                else:
                    log(f"{case} rep {rep}/{reps} {tool:<14} FAILED: {res.get('error', '')[:400]}")
        self.results["cases"][case] = {"runs": runs, "summary": summarize(runs, tools)}

    def main(self):
        a = self.args
        self.setup()
        try:
            self.start_cluster()
            self.generate()
            runner = Runner(self.time_bin, self.cluster, self.work / "logs", a.timeout or max(900.0, 600 + a.rows * 400e-6))
            tools = ["tidemark", "copy"] + [t for t in self.tools if t == "copy-unordered"] + [t for t in self.tools if t != "copy-unordered"]
            cases = [c for c in a.cases.split(",") if c]
            for case in cases:
                self.run_case(case, tools, runner)
        finally:
            if self.cluster:
                self.cluster.stop()
        self.write_outputs()
        if self.mismatch:
            log("!!! ROW COUNT MISMATCH in at least one output: see the report; exiting 1")
            sys.exit(1)
        tm_failed = [c for c, v in self.results["cases"].items() if v["summary"].get("tidemark", {}).get("failed_reps")]
        if tm_failed:
            log(f"!!! tidemark failed in {', '.join(tm_failed)}: exiting 1")
            sys.exit(1)
        # The memory bound is asserted, not just reported: any tidemark run above it fails the run.
        over = [r for c in self.results["cases"].values() for r in c["runs"]
                if r["tool"] == "tidemark" and r.get("ok") and r.get("rss_mb", 0) > RSS_BOUND_MB]
        if over:
            log(f"!!! tidemark peak RSS above {RSS_BOUND_MB} MB: {max(r['rss_mb'] for r in over):.1f} MB: exiting 1")
            sys.exit(1)

    # ---- report --------------------------------------------------------------------------------

    def write_outputs(self):
        a = self.args
        self.results["meta"] = meta = machine_info()
        meta.update(
            stamp=self.stamp,
            date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            args=vars(a),
            versions=self.versions,
            git=git_info(a.rev),
            work_dir=str(self.work),
        )
        results_dir = BENCH / "results"
        results_dir.mkdir(exist_ok=True)
        raw = results_dir / f"{self.stamp}.json"
        raw.write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        md = render_markdown(self)
        out = Path(a.output).resolve() if a.output else REPO / "docs" / "PERFORMANCE.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        print(render_tables_text(self))
        log(f"wrote {out} and {raw}")


def summarize(runs: list, tools: list) -> dict:
    s = {}
    for tool in tools:
        rs = [r for r in runs if r["tool"] == tool]
        ok = [r for r in rs if r.get("ok")]
        def med(k):
            values = [r[k] for r in ok if r.get(k) is not None]
            return statistics.median(values) if values else None

        entry = {
            "reps": len(rs),
            "ok_reps": len(ok),
            "failed_reps": len(rs) - len(ok),
            "errors": sorted({r.get("error", "")[:500] for r in rs if not r.get("ok")}),
            "wall_s": med("wall_s"),
            "cpu_s": med("cpu_s"),
            "pg_cpu_s": med("pg_cpu_s"),
            "rss_mb": med("rss_mb"),
            "output_mb": (med("output_bytes") / 1e6) if med("output_bytes") is not None else None,
            "files": med("files"),
            "commits": med("commits"),
            "inner_s": med("inner_s") if ok and all(r.get("inner_s") is not None for r in ok) else None,
            "walls": [r.get("wall_s") for r in ok],
            "rows": ok[0]["rows"] if ok else None,
        }
        entry["rows_per_s"] = entry["rows"] / entry["wall_s"] if ok and entry["wall_s"] else None
        s[tool] = entry
    return s


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "os": platform.platform(),
    }


def git_info(rev=None) -> dict:
    def g(*a):
        r = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip()

    if rev:
        return {"commit": g("rev-parse", "--short", f"{rev}^{{commit}}"), "dirty": False, "rev": rev}
    return {"commit": g("rev-parse", "--short", "HEAD"), "dirty": bool(g("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "schemas", "migrations"))}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

TOOL_LABEL = {
    "tidemark": "tidemark",
    "copy": "Postgres binary COPY → /dev/null (floor)",
    "copy-unordered": "Postgres binary COPY, no ORDER BY → /dev/null",
    "duckdb": "DuckDB + postgres extension",
    "duckdb-scan": "DuckDB + postgres extension (attached-table scan)",
    "connectorx": "ConnectorX → pyarrow",
    "adbc": "ADBC PostgreSQL → pyarrow",
    "pg2parquet": "pg2parquet",
    "tidemark-iceberg": "tidemark → ICEBERG_S3 (local warehouse, SQL catalog)",
}


def tool_version(b: Bench, tool: str) -> str:
    v = b.versions
    return {
        "tidemark": v.get("tidemark", "").replace("tidemark ", "") + tidemark_rev(b),
        "copy": f"PostgreSQL {b.results['setup'].get('pg_version', '?')}",
        "copy-unordered": f"PostgreSQL {b.results['setup'].get('pg_version', '?')}",
        "duckdb": f"duckdb {v.get('duckdb')}, ext {v.get('duckdb-extension-postgres')}",
        "duckdb-scan": f"duckdb {v.get('duckdb')}, ext {v.get('duckdb-extension-postgres')}",
        "connectorx": f"connectorx {v.get('connectorx')}, pyarrow {v.get('pyarrow')}",
        "adbc": f"adbc-driver-postgresql {v.get('adbc-driver-postgresql')}, pyarrow {v.get('pyarrow')}",
        "pg2parquet": (v.get("pg2parquet") or "").replace("pg2parquet ", ""),
        "tidemark-iceberg": v.get("tidemark", "").replace("tidemark ", "") + tidemark_rev(b),
    }.get(tool, "?")


def tidemark_rev(b: Bench) -> str:
    if b.args.tidemark_bin:
        return " (given binary)"
    g = b.results.get("meta", {}).get("git", {})
    return f" @ {g.get('commit', '?')}{'+dirty' if g.get('dirty') else ''}"


def fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def table_rows(b: Bench, case: str) -> list:
    s = b.results["cases"][case]["summary"]
    tm = s.get("tidemark", {})
    rows = []
    for tool, e in s.items():
        if not e["ok_reps"]:
            err = (e["errors"] or ["?"])[0].replace("|", "\\|").replace("\n", " ")
            rows.append([TOOL_LABEL[tool], tool_version(b, tool), f"FAILED: {err[:300]}", "", "", "", "", "", "", "", ""])
            continue
        ratio = (tm["wall_s"] / e["wall_s"]) if tm.get("wall_s") and tool != "tidemark" else None
        note = ""
        if e["failed_reps"]:
            note = f"{e['failed_reps']} of {e['reps']} reps failed: {(e['errors'] or [''])[0][:200]}"
        rows.append([
            TOOL_LABEL[tool],
            tool_version(b, tool),
            fmt(e["wall_s"]),
            fmt(e["cpu_s"]),
            fmt(e["pg_cpu_s"]),
            fmt(e["rss_mb"], 1),
            fmt(e["output_mb"], 1) if tool not in ("copy", "copy-unordered") else "– (/dev/null)",
            f"{e['rows_per_s']:,.0f}" if e["rows_per_s"] else "–",
            (f"{ratio:.2f}×" if ratio else ("1" if tool == "tidemark" else "–")),
            fmt(e["inner_s"]) if e["inner_s"] is not None else "–",
            ", ".join(fmt(w) for w in e["walls"]) + (f"; {note}" if note else ""),
        ])
    return rows


HEADERS = ["tool", "version", "wall s", "CPU s", "PG CPU s", "peak RSS MB", "output MB", "rows/s",
           "tidemark wall ÷ tool wall", "in-process s", "wall s per rep"]


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


RSS_BOUND_MB = 256


def targets(b: Bench) -> list:
    lines = []
    cases = b.results["cases"]
    if "window" in cases:
        s = cases["window"]["summary"]
        tm, cp = s.get("tidemark", {}), s.get("copy", {})
        if tm.get("wall_s") and cp.get("wall_s"):
            r = tm["wall_s"] / cp["wall_s"]
            lines.append(f"- One window, tidemark ≤ 1.2× binary COPY: **{'met' if r <= 1.2 else 'not met'}** — "
                         f"tidemark {tm['wall_s']:.2f} s vs COPY {cp['wall_s']:.2f} s = {r:.2f}×.")
        else:
            lines.append("- One window, tidemark ≤ 1.2× binary COPY: **not measured** (a run failed).")
        peers = {t: e for t, e in s.items() if t not in NOT_PEERS and e.get("wall_s")}
        if tm.get("wall_s") and peers:
            best = min(peers, key=lambda t: peers[t]["wall_s"])
            r = peers[best]["wall_s"] / tm["wall_s"]
            lines.append(f"- One window, tidemark ≥ 1.5× faster than the fastest peer: **{'met' if r >= 1.5 else 'not met'}** — "
                         f"fastest peer {best} {peers[best]['wall_s']:.2f} s vs tidemark {tm['wall_s']:.2f} s = {r:.2f}× faster.")
        else:
            lines.append("- One window, tidemark ≥ 1.5× faster than the fastest peer: **not measured**.")
    if "whole" in cases:
        s = cases["whole"]["summary"]
        tm, cp = s.get("tidemark", {}), s.get("copy", {})
        peers = {t: e for t, e in s.items() if t not in NOT_PEERS and e.get("wall_s")}
        if tm.get("wall_s") and peers:
            best = min(peers, key=lambda t: peers[t]["wall_s"])
            r = peers[best]["wall_s"] / tm["wall_s"]
            lines.append(f"- Whole table, tidemark rows/s ≥ 1.3× the fastest peer: **{'met' if r >= 1.3 else 'not met'}** — "
                         f"fastest peer {best} {peers[best]['wall_s']:.2f} s vs tidemark {tm['wall_s']:.2f} s = {r:.2f}×.")
        else:
            lines.append("- Whole table, tidemark rows/s ≥ 1.3× the fastest peer: **not measured**.")
        if tm.get("wall_s") and cp.get("wall_s"):
            r = cp["wall_s"] / tm["wall_s"]
            lines.append(f"- Whole table, tidemark rows/s ≥ single-stream binary COPY: **{'met' if r >= 1.0 else 'not met'}** — "
                         f"COPY {cp['wall_s']:.2f} s vs tidemark {tm['wall_s']:.2f} s = {r:.2f}×.")
        else:
            lines.append("- Whole table, tidemark rows/s ≥ single-stream binary COPY: **not measured**.")
        n = b.results["setup"].get("whole_rows")
        if tm.get("rss_mb") is not None:
            worst = max(r["rss_mb"] for r in cases["whole"]["runs"] if r["tool"] == "tidemark" and r.get("ok"))
            lines.append(f"- Peak RSS ≤ 256 MB at {n:,} rows: **{'met' if worst <= 256 else 'not met'}** — "
                         f"tidemark backfill peak RSS {worst:.1f} MB (worst of {tm['ok_reps']} reps; median {tm['rss_mb']:.1f} MB).")
            if n and n not in (5_000_000, 50_000_000):
                lines.append(f"  (The target is stated for 5,000,000 and 50,000,000 rows; this run has {n:,}.)")
        else:
            lines.append(f"- Peak RSS ≤ 256 MB at {n:,} rows: **not measured** (backfill failed).")
    return lines


def render_markdown(b: Bench) -> str:
    a, res, m = b.args, b.results, b.results["meta"]
    st = res["setup"]
    L = []
    L.append("# Performance")
    L.append("")
    L.append("Written by `bench/run.py` (see [bench/README.md](../bench/README.md)); do not edit by hand — re-run the harness.")
    L.append("")
    if a.tidemark_bin:
        built = f"tidemark binary given with `--tidemark-bin` (`{a.tidemark_bin}`; harness at commit `{m['git']['commit']}`)"
    else:
        built = f"tidemark built from commit `{m['git']['commit']}`{' with uncommitted changes in src/' if m['git']['dirty'] else ''}"
    L.append(f"- **Date:** {m['date']} · {built}")
    L.append(f"- **Machine:** {m['nproc']} cores, {m['ram_gib']} GiB RAM, {m['cpu_model']}; Linux {m['kernel']}")
    L.append(f"- **PostgreSQL:** {st.get('pg_version')} (throwaway cluster from `tidemark reference postgres`: "
             + ", ".join(f"{k}={v}" for k, v in st.get("pg_settings", {}).items()) + "), on the same machine as the tools")
    L.append(f"- **Data:** `events` from `tidemark reference generate --seed {a.seed} --orgs 1 --rows {a.rows} --days {a.days} --end {st.get('end')} --only-events`: "
             f"{st.get('whole_rows', 0):,} rows, `pg_total_relation_size` {st.get('events_total_bytes', 0) / 1e9:.2f} GB "
             f"(heap {st.get('events_heap_bytes', 0) / 1e9:.2f} GB); generated in {st.get('generate_s')} s, then `VACUUM (FREEZE, ANALYZE)`.")
    L.append(f"- **Window case:** database `win`, `generate --seed {a.window_seed} --orgs 1 --rows {a.window_rows} --days 1`, "
             f"then every row's `created_at`/`updated_at` squeezed (÷96, trigger off) into [{st.get('window_start')}, {st.get('window_end')}): "
             f"{st.get('window_rows', 0):,} rows in one 15-minute window.")
    L.append(f"- **Method:** {a.reps} repetition{'s' if a.reps != 1 else ''} of the whole table and {a.window_reps} of the window, interleaved (each rep runs every tool once, in the order of the tables); "
             "medians reported. Every tool runs as its own process under `/usr/bin/time -f '%e %U %S %M'`: wall, "
             "CPU = user + sys of that process, peak RSS of that process. *PG CPU s* is the Postgres cluster's CPU during the run "
             "(postmaster + backends, from /proc), the server-side cost each tool causes. A warm-up COPY (untimed) precedes each case"
             f"{' (disabled)' if a.no_warmup else ''}. tidemark `--workers {a.workers}`; peers write zstd level {a.peer_zstd_level} "
             "(tidemark's encoder uses zstd level 1). Every output's rows are counted with pyarrow's Parquet metadata over all its "
             "files and compared with `SELECT count(*)`; COPY's count is its `COPY n` tag.")
    L.append("")
    for case, title in (("whole", "Whole table"), ("window", "One 15-minute window")):
        if case not in res["cases"]:
            continue
        n = st.get("whole_rows") if case == "whole" else st.get("window_rows")
        L.append(f"## {title} ({n:,} rows)")
        L.append("")
        L.append(md_table(HEADERS, table_rows(b, case)))
        L.append("")
        if case == "whole":
            tmrep = [r for r in res["cases"][case]["runs"] if r["tool"] == "tidemark" and r.get("ok")]
            if tmrep:
                chunk = f"`--chunk {a.backfill_chunk}`" if a.backfill_chunk else "its default `--chunk`"
                L.append(f"tidemark wrote {tmrep[0].get('files')} files under `events/v1/org_id=…/date=…/` (one object per "
                         f"delivery: a backfill chunk, {chunk}, of whole 15-minute windows); each peer writes one file.")
                L.append("")
        ice = [r for r in res["cases"][case]["runs"] if r["tool"] == "tidemark-iceberg" and r.get("ok")]
        if ice:
            tm_s = res["cases"][case]["summary"].get("tidemark", {})
            ice_s = res["cases"][case]["summary"]["tidemark-iceberg"]
            rel = (f"; {ice_s['rows_per_s'] / tm_s['rows_per_s']:.2f}× the PARQUET_S3 rate of the same run"
                   if tm_s.get("rows_per_s") and ice_s.get("rows_per_s") else "")
            L.append(f"ICEBERG_S3 (same binary, same data, local warehouse, SQL catalog in the same cluster): "
                     f"{ice_s['rows_per_s']:,.0f} rows/s{rel}; {ice[0].get('files')} data files and "
                     f"{ice[0].get('commits')} commits (snapshots, counted in the table's newest metadata JSON) "
                     f"per run: one commit per delivery. Rows counted from the data files' Parquet metadata.")
            L.append("")
    L.append("## Targets")
    L.append("")
    L.extend(targets(b))
    L.append("")
    L.append("## Row-count checks")
    L.append("")
    bad = [c for c in res["checks"] if not c["ok"]]
    if bad:
        L.append("**ROW COUNT MISMATCH:** " + "; ".join(f"{c['case']} {c['tool']} rep {c['rep']}: {c['rows']} ≠ {c['expected']}" for c in bad))
    else:
        L.append(f"All {len(res['checks'])} outputs held exactly the expected rows.")
    L.append("")
    L.append("## Exact commands")
    L.append("")
    L.append("`$APP` / `$WIN` are the throwaway cluster's `app` / `win` database URLs; `$OUT` a fresh empty directory per run.")
    L.append("")
    used: set = set()
    cmds = []
    for case in res["cases"]:
        seen = set()
        for r in res["cases"][case]["runs"]:
            if r["tool"] in seen:
                continue
            seen.add(r["tool"])
            cmds.append(f"# {case} / {r['tool']}")
            cmds.append(redact(b, r["argv"], used))
    L.append("```sh")
    L.append(f"python3 bench/run.py {' '.join(shlex.quote(x) for x in sys.argv[1:])}".rstrip())
    for name, sql in sql_placeholders(b):
        if name in used:
            L.append(f"{name}={shlex.quote(sql)}")
    L.extend(cmds)
    L.append("```")
    L.append("")
    L.append("Setup not timed: `tidemark destination add --org <org> --kind PARQUET_S3 --name <new name per run> --tables events "
             "--start-from now|<window start> --config '{\"url\":\"file://$OUT\"}'` before each tidemark run and "
             "`tidemark destination remove <name> --yes` after it.")
    L.append("")
    L.append("## Notes on the peers")
    L.append("")
    L.append("- All tools run the same SQL: the schema's 16 columns (`schemas/events/v1.json`) `ORDER BY updated_at, id` "
             "(tidemark's extraction order), with the window's `organization_id`/`updated_at` predicate in the window case.")
    L.append("- **DuckDB**: `ATTACH … (TYPE postgres, READ_ONLY)` then `COPY (SELECT * FROM postgres_query('pg', <sql>)) TO … "
             "(FORMAT parquet, COMPRESSION zstd)`; the extension is installed from the `duckdb-extension-postgres` wheel into a "
             "private extension directory, never downloaded. uuid → UUID, inet → string, jsonb → string, numeric(6,2) → DECIMAL(6,2).")
    L.append("- **ConnectorX**: `read_sql(…, return_type=\"arrow_stream\")` batches into `pyarrow.parquet.ParquetWriter` "
             "(the default `return_type=\"arrow\"` holds the whole result in memory). No casts needed, but uuid → string, "
             "int2/int4 → int64, numeric(6,2) → decimal(38,10), jsonb re-serialized (keys re-ordered).")
    L.append("- **ADBC**: `cursor.fetch_record_batch()` (streaming) into `ParquetWriter`. `actor_ip` is cast `::text` in its SQL: "
             "without it the driver returns inet as an opaque binary extension type (Postgres' wire bytes). numeric arrives as an "
             "opaque string extension type; uuid as arrow.uuid, jsonb as arrow.json.")
    L.append("- **pg2parquet**: `--compression zstd` plus `--numeric-handling decimal --decimal-scale 2 --decimal-precision 6` "
             "(its default maps numeric to float64).")
    L.append("- The Python peers' wall time includes interpreter start and imports (*in-process s* is the time after imports, "
             "measured by the peer script; for tidemark it is the report's own `seconds`).")
    L.append("")
    L.append(f"Raw results: `bench/results/{m['stamp']}.json`.")
    L.append("")
    return "\n".join(L)


def sql_placeholders(b: Bench) -> list:
    """(name, sql) pairs that the exact-commands section prints once and then refers to."""
    pairs = []
    for case in b.results["cases"]:
        q = b.queries(case)
        up = case.upper()
        pairs += [(f"{up}_SQL", q["sql"]), (f"{up}_SQL_ADBC", q["adbc"]), (f"{up}_SQL_UNORDERED", q["sql_unordered"]),
                  (f"{up}_SQL_DUCKDB_SCAN", q["duckdb_scan"])]
    return pairs


def redact(b: Bench, argv: list, used: set) -> str:
    subs = [(b.win, "$WIN"), (b.app, "$APP"), (str(b.work / "out"), "$WORK/out"), (str(b.tidemark), "tidemark"),
            (sys.executable, "python"), (str(BENCH), "bench")]
    if b.pg2parquet:
        subs.append((str(b.pg2parquet), "pg2parquet"))
    if b.duck_ext:
        subs.append((str(b.duck_ext), "$DUCKDB_EXT_DIR"))
    # Longest SQL first: the ordered query is a prefix of nothing, but be safe.
    sqls = sorted(sql_placeholders(b), key=lambda p: -len(p[1]))
    words = []
    for x in argv:
        x = str(x)
        placeholder = False
        for name, sql in sqls:
            if sql in x:
                x = x.replace(sql, "${" + name + "}")
                used.add(name)
                placeholder = True
                break
        for old, new in subs:
            if old in x:
                x = x.replace(old, new)
                placeholder = placeholder or new.startswith("$")
        if placeholder or x.startswith("$"):
            words.append('"' + x.replace('"', '\\"') + '"')
        else:
            words.append(shlex.quote(x))
    return " ".join(words)


def render_tables_text(b: Bench) -> str:
    out = []
    for case in b.results["cases"]:
        out.append(f"\n== {case} ==")
        rows = table_rows(b, case)
        widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(HEADERS[:-1])]
        out.append("  ".join(h.ljust(w) for h, w in zip(HEADERS[:-1], widths)))
        for r in rows:
            out.append("  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)))
    out.append("")
    out.extend(targets(b))
    return "\n".join(out)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000, help="rows of events in the whole-table case (default 5,000,000)")
    p.add_argument("--days", type=int, default=30, help="days of history the rows span (default 30)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool, interleaved; medians reported (default 3)")
    p.add_argument("--workers", type=int, default=2, help="tidemark --workers (default 2)")
    p.add_argument("--window-rows", type=int, default=50_000, help="rows in the one-window case (default 50,000)")
    p.add_argument("--window-reps", type=int, default=None,
                   help="repetitions of the one-window case (default max(--reps, 9): sub-second runs need more samples)")
    p.add_argument("--backfill-chunk", default=None, help="tidemark backfill --chunk (default: tidemark's own default)")
    p.add_argument("--seed", type=int, default=42, help="generator seed of the whole table")
    p.add_argument("--window-seed", type=int, default=7, help="generator seed of the window database")
    p.add_argument("--peers", default=None, help=f"comma-separated peers (default {','.join(PEERS)}; optional extras: {','.join(OPTIONAL_TOOLS)})")
    p.add_argument("--skip-peers", default="", help="comma-separated peers to leave out, e.g. connectorx,pg2parquet")
    p.add_argument("--cases", default="whole,window", help="whole,window (default both)")
    p.add_argument("--peer-zstd-level", default="1", help="zstd level for the peers (default 1 = tidemark's); 'default' = each tool's own")
    p.add_argument("--keep", action="store_true", help="keep every output directory (default: deleted after its row count)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up COPY before each case")
    p.add_argument("--no-build", action="store_true", help="use the existing release binary without running cargo build")
    p.add_argument("--tidemark-bin", default=None, help="benchmark this tidemark binary instead of building one")
    p.add_argument("--rev", default=None, help="build tidemark from this git revision (via git archive) instead of the working tree")
    p.add_argument("--tidemark-log", default="warn", help="TIDEMARK_LOG for the timed tidemark runs (default warn)")
    p.add_argument("--pg-tmpdir", default=None, help="TMPDIR for the throwaway cluster's data directory (50M rows need ~65 GB)")
    p.add_argument("--work-dir", default=None, help="outputs and logs (default $TIDEMARK_CACHE/bench-work/<timestamp>)")
    p.add_argument("--output", default=None, help="report path (default docs/PERFORMANCE.md)")
    p.add_argument("--timeout", type=float, default=None, help="seconds before one timed process is killed (default scales with --rows)")
    a = p.parse_args()
    if a.rev and a.tidemark_bin:
        p.error("--rev and --tidemark-bin exclude each other")
    if a.reps < 1:
        p.error("--reps must be at least 1")
    if a.window_reps is None:
        a.window_reps = max(a.reps, 9)
    if a.window_reps < 1:
        p.error("--window-reps must be at least 1")
    if a.peer_zstd_level != "default" and not a.peer_zstd_level.lstrip("-").isdigit():
        p.error("--peer-zstd-level takes an integer or 'default'")
    bad = set(a.cases.split(",")) - {"whole", "window", ""}
    if bad:
        p.error(f"unknown case(s) {bad}")
    return a


def main():
    args = parse_args()  # before the venv: --help works anywhere
    ensure_venv_and_reexec()
    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.main()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
