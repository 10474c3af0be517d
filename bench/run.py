#!/usr/bin/env python
"""Benchmark the full rebuild: ours on Sail, the same joins in DuckDB, the same pipeline on JVM Spark.

    python bench/run.py --sizes 1000000,10000000 --out bench/results/$(date -u +%Y%m%dT%H%M%SZ).json
    python bench/run.py --table bench/results/<run>.json     # the README's table from that run

For each size (base rows over all subsets; joined rows are 99.5% of it) it writes synthetic
sources with `etl.synth.generate` (reused when already there) under data/bench/, then runs, each
in its own process whose whole process tree is sampled for memory every 0.2 s:

  sail               `laion-etl build` with format delta on Sail (ours), checks included
  duckdb             bench/duckdb_ref.py: the same ODS -> DMD -> DMS as plain SQL, mmh3 through a
                     DuckDB Python UDF (one call per row), parquet output, no checks
  duckdb-vectorised  the same, hashing with the project's compiled murmur3 kernel over Arrow batches
                     (the strongest single-machine peer a user could pick)
  jvm                `laion-etl build --engine spark` on JVM Spark local[2], format delta, checks
                     included, with the engine's own memory and query settings (logged, recorded)
  cluster            `laion-etl submit -- build` on a standalone Spark cluster started here (a
                     master and two one-core workers), format delta, checks included; its
                     per-core throughput gives the model for all of LAION-5B (docs/scale.md)
  hash               bench/hash_bench.py: the hash stage alone and through Sail

It prints per stage rows, seconds, rows/s per core, peak memory and output bytes, the ratios
ours/each other engine from this run, and the scaling exponent log(t2/t1)/log(n2/n1) between the
smallest and largest size; it checks that the DMS tables agree (row count and a fingerprint of
their columns), and writes the figures, the versions, the machine and the commit as JSON plus a
PNG plot beside it. Exit code 1 when an engine failed or the outputs disagree (the JSON is
written first).

`--tree` runs another checkout's etl/ and sql/ (this file's engines, sources and figures), so two
commits are compared on the same data, a regression guard:

    git worktree add /tmp/laion-base <commit>
    python bench/run.py --sizes 1M --engines sail --tree /tmp/laion-base --out /tmp/base.json
    python bench/run.py --sizes 1M --engines sail --out /tmp/head.json
    git worktree remove /tmp/laion-base
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("sail", "duckdb", "duckdb-vectorised", "jvm", "cluster", "hash")
PEERS = ("duckdb", "duckdb-vectorised", "jvm", "cluster")  # each compared with sail
JVM_ENGINES = ("jvm", "cluster")
FORMATS = {"sail": "delta", "jvm": "delta", "cluster": "delta", "duckdb": "parquet", "duckdb-vectorised": "parquet"}
DUCKDB_HASHES = {"duckdb": "mmh3", "duckdb-vectorised": "compiled"}
ENGINE_LABELS = {"sail": "Sail (ours, Delta, checks)", "duckdb": "DuckDB, mmh3 UDF (parquet)",
                 "duckdb-vectorised": "DuckDB, vectorised hash (parquet)",
                 "jvm": "JVM Spark local[2] (Delta, checks)", "cluster": "standalone cluster, 2 x 1 core (Delta, checks)"}
# The cluster engine: two one-core workers on this machine (as tests/standalone_cluster.py starts
# them), each executor with the memory a 1-core slot of a real node would have.
CLUSTER_WORKERS = 2
CLUSTER_WORKER_MEMORY = "4g"
CLUSTER_EXECUTOR_MEMORY = "3g"
# The scale model (docs/scale.md): all LAION-5B rows, costed at the cluster's measured core-seconds
# per base row, times REAL_ROW_COST (real URL+TEXT are 1.9x the synthetic bytes; part of the work
# is per row) over CLUSTER_EFFICIENCY (the share of a big cluster's cores busy on average).
LAION_ROWS = 5_860_068_373
REAL_ROW_COST = 1.5
CLUSTER_EFFICIENCY = 0.7
JVM_SETTINGS_LINE = re.compile(r"JVM Spark settings: (?P<settings>.*)$")
ROWS_PER_FILE = 300_000  # target rows in the largest source files (laion2B-en base)
EN_SHARE = 0.45  # etl.synth gives laion2B-en 45% of the base rows
SAMPLE_SECONDS = 0.2
STAGE_LINE = re.compile(r"\[(?P<layer>\w+)\] (?P<table>\S+) <- .*?(?P<end> done in [\d.]+ s| \.\.\.)$")
# The build's timing of a table's checks and quarantine (etl/build/materialise.py, etl.progress.timed).
PART_LINE = re.compile(r"\[(?P<layer>\w+)\] (?P<table>\S+): (?P<part>checks|quarantine) in (?P<seconds>[\d.]+) s$")
TABLE_CELL_SPLIT = re.compile(r"\s{2,}")
DMS_TABLE = "dms_laion_wide"


# --- arguments ---------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale) if scale > 1 else int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r}") from None
    if value < 1_000:
        raise argparse.ArgumentTypeError(f"sizes must be at least 1000 rows, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated base row counts, e.g. 1000000,10000000 (or 1M,10M)")
    parser.add_argument("--out", type=Path, help="results JSON to write (the PNG goes beside it)")
    parser.add_argument("--table", type=Path, metavar="RESULTS_JSON",
                        help="print the markdown table of a results JSON's largest size (for the README) and exit")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, from {','.join(ENGINES)} (default: all)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench",
                        help="where sources and outputs go (default data/bench, git-ignored)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the checkout whose etl/ and sql/ run (default: this one), e.g. a git worktree")
    parser.add_argument("--shuffle-partitions", type=int,
                        help="spark.shuffle_partitions for sail and jvm (default: the config default)")
    parser.add_argument("--jvm-driver-memory",
                        help="spark.driver.memory for local[2] (default: the engine's own, from the machine's memory)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per engine run")
    parser.add_argument("--keep-outputs", action="store_true", help="keep each engine's tables after measuring")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args(argv)
    if args.table is not None:
        if not args.table.is_file():
            parser.error(f"--table {args.table}: no such file")
        return args
    if not args.sizes or not args.out:
        parser.error("--sizes and --out are required (or --table RESULTS_JSON)")

    try:
        args.sizes = sorted(set(parse_size(s) for s in args.sizes.split(",") if s.strip()))
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--sizes: {exc}")
    if not args.sizes:
        parser.error("--sizes: give at least one size")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        parser.error(f"--engines: unknown {','.join(unknown) or '(none given)'}; choose from {','.join(ENGINES)}")
    args.engines = [e for e in ENGINES if e in engines]
    if args.out.suffix != ".json":
        parser.error(f"--out {args.out}: must end in .json")
    if args.out.exists() and not args.force:
        parser.error(f"--out {args.out}: exists (use --force to overwrite)")
    if not (args.tree / "etl" / "cli.py").is_file() or not (args.tree / "sql").is_dir():
        parser.error(f"--tree {args.tree}: not a checkout of this project (no etl/cli.py and sql/)")
    if args.shuffle_partitions is not None and args.shuffle_partitions < 1:
        parser.error("--shuffle-partitions: must be a positive integer")
    if args.timeout <= 0:
        parser.error("--timeout: must be positive")
    jvm = [e for e in args.engines if e in JVM_ENGINES]
    if jvm and shutil.which("java") is None:
        parser.error(f"--engines {','.join(jvm)}: java is not on PATH (install Java 17, or leave them out)")
    if any(e.startswith("duckdb") for e in args.engines):
        try:
            import duckdb  # noqa: F401
        except ImportError:
            parser.error("--engines duckdb: the duckdb package is not installed (pip install duckdb)")
    args.out = args.out.resolve()
    args.data = args.data.resolve()
    args.tree = args.tree.resolve()
    return args


# --- process-tree memory -----------------------------------------------------------------------

class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled every 0.2 s; with
    `other_roots`, of theirs too (a standalone cluster's JVMs are no children of the submit)."""

    def __init__(self, pid: int, other_roots: tuple[int, ...] = ()) -> None:
        self.roots = (pid, *other_roots)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            import psutil

            self._psutil = psutil
        except ImportError:
            self._psutil = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def start(self) -> "TreeMemory":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = -math.inf, end: float = math.inf) -> Optional[int]:
        # One sample period of slack on each side, so a stage shorter than a period still has one.
        values = [rss for t, rss in self.samples if start - SAMPLE_SECONDS <= t <= end + SAMPLE_SECONDS]
        return max(values) if values else None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._tree_rss()
            if rss:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(SAMPLE_SECONDS)

    def _tree_rss(self) -> int:
        if self._psutil is not None:
            processes = []
            for pid in self.roots:
                try:
                    root = self._psutil.Process(pid)
                    processes += [root, *root.children(recursive=True)]
                except self._psutil.Error:
                    continue
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except self._psutil.Error:
                    pass
            return total
        return self._proc_tree_rss()

    def _proc_tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    stat = handle.read().decode(errors="replace")
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        total, pending = 0, list(self.roots)
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1]) * self._page
            except OSError:
                continue
            pending.extend(children.get(pid, ()))
        return total


# --- one engine run ----------------------------------------------------------------------------

def run_engine(name: str, command: list[str], env: dict, log_path: Path, timeout: float, cwd: Path = REPO,
               other_roots: tuple[int, ...] = ()) -> dict:
    """Run `command` in its own session; time it, sample its tree's memory (and `other_roots`'
    trees), follow its stages on either stream (under spark-submit the build logs to stdout).

    `python -m` puts the working directory first on sys.path: run it in the tree being measured."""
    print(f"  [{name}] $ {' '.join(command)}", flush=True)
    stages: dict[str, dict] = {}
    stdout_lines: list[str] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   cwd=str(cwd), start_new_session=True, bufsize=1, errors="replace")
        memory = TreeMemory(process.pid, other_roots).start()

        def follow_stage(line: str) -> None:
            part = PART_LINE.search(line.rstrip())
            if part:
                stage = stages.setdefault(part["table"], {"layer": part["layer"]})
                stage[f"{part['part']}_seconds"] = stage.get(f"{part['part']}_seconds", 0.0) + float(part["seconds"])
                return
            match = STAGE_LINE.search(line.rstrip())
            if match:
                stage = stages.setdefault(match["table"], {"layer": match["layer"]})
                if match["end"].strip() == "...":
                    stage["start"] = time.monotonic()
                else:
                    stage["end"] = time.monotonic()
                    print(f"  [{name}] {line.strip()}", flush=True)

        def follow_stderr() -> None:
            for line in process.stderr:
                log.write(line)
                follow_stage(line)

        def follow_stdout() -> None:
            for line in process.stdout:
                stdout_lines.append(line.rstrip("\n"))
                follow_stage(line)

        readers = [threading.Thread(target=follow_stderr, daemon=True), threading.Thread(target=follow_stdout, daemon=True)]
        for reader in readers:
            reader.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)  # our own child's session only
            process.wait()
        wall = time.monotonic() - started
        for reader in readers:
            reader.join(timeout=10)
        memory.stop()
        log.write("\n--- stdout ---\n" + "\n".join(stdout_lines) + "\n")
    result = {
        "command": command,
        "exit_code": process.returncode,
        "timed_out": timed_out,
        "wall_seconds": wall,
        "peak_rss_bytes": memory.peak(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "log": str(log_path),
        "stdout": stdout_lines,
    }
    result["summary"] = parse_summary(stdout_lines)
    result["jvm_settings"] = jvm_settings_logged(log_path.read_text(errors="replace").splitlines())
    for table, window in stages.items():
        if "start" in window and "end" in window:
            window["peak_rss_bytes"] = memory.peak(window["start"], window["end"])
    result["stage_windows"] = stages
    status = "ok" if process.returncode == 0 else ("TIMED OUT" if timed_out else f"FAILED (exit {process.returncode})")
    print(f"  [{name}] {status} in {wall:.1f} s, peak memory {fmt_bytes(result['peak_rss_bytes'])}; log {log_path}",
          flush=True)
    return result


def parse_summary(lines: list[str]) -> list[dict]:
    """The build summary table (layer, table, rows in, rows out, ..., seconds) as dicts."""
    for i, line in enumerate(lines):
        header = TABLE_CELL_SPLIT.split(line.strip())
        if header[:2] == ["layer", "table"] and "seconds" in header and i + 1 < len(lines) \
                and set(lines[i + 1].replace(" ", "")) == {"-"}:
            rows = []
            for row_line in lines[i + 2:]:
                cells = TABLE_CELL_SPLIT.split(row_line.strip())
                if len(cells) != len(header):
                    break
                row = dict(zip(header, cells))
                rows.append({
                    "layer": row["layer"],
                    "table": row["table"].removeprefix("laion."),
                    "rows_in": number(row.get("rows in")),
                    "rows_out": number(row.get("rows out")),
                    "checks": row.get("checks"),  # the contract checks' verdict (DuckDB's reference has none)
                    "seconds": float(row["seconds"]),
                })
            return rows
    return []


def jvm_settings_logged(lines: list[str]) -> Optional[dict]:
    """The settings a JVM session logged at start (etl/engine/session.py), None when it logged none."""
    for line in lines:
        match = JVM_SETTINGS_LINE.search(line.rstrip())
        if match:
            return dict(item.split("=", 1) for item in match["settings"].split())
    return None


def number(cell: Optional[str]) -> Optional[int]:
    if cell is None or cell.strip() in ("", "-"):
        return None
    return int(cell.replace(",", ""))


# --- what each engine writes -------------------------------------------------------------------

def folder_size(path: Path) -> tuple[int, int]:
    """(bytes of every file under path, number of parquet data files)."""
    total, files = 0, 0
    if path.exists():
        for root, _, names in os.walk(path):
            for file_name in names:
                total += os.path.getsize(os.path.join(root, file_name))
                files += file_name.endswith(".parquet")
    return total, files


def data_files(path: Path, fmt: str) -> list[str]:
    if fmt == "delta":
        from deltalake import DeltaTable

        from etl.warehouse.store import current_data_files

        return [uri.removeprefix("file://") for uri in current_data_files(DeltaTable(str(path)))]
    return [str(p) for p in sorted(path.rglob("*.parquet"))]


def fingerprint(files: list[str]) -> Optional[dict]:
    """Row count and column sums/counts of a DMS table, the same whatever engine wrote it."""
    if not files:
        return None
    import duckdb

    con = duckdb.connect()
    try:
        listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        row = con.execute(f"""
            select count(*), sum(hash::hugeint)::varchar, count(sample_id), sum(sample_id::hugeint)::varchar,
                   count(aesthetic_score), round(sum(aesthetic_score::double), 2), count(language),
                   count(license), count(distinct hash)
            from read_parquet({listing}, union_by_name = true)""").fetchone()
    finally:
        con.close()
    keys = ("rows", "sum_hash", "count_sample_id", "sum_sample_id", "count_aesthetic_score", "sum_aesthetic_score",
            "count_language", "count_license", "distinct_hash")
    return dict(zip(keys, row))


# --- the benchmark -----------------------------------------------------------------------------

def parts_for(rows: int) -> int:
    """Part files per family and subset so the largest files hold about ROWS_PER_FILE rows."""
    return max(1, round(rows * EN_SHARE / ROWS_PER_FILE))


def ensure_sources(size_dir: Path, rows: int, seed: int, parts: int) -> dict:
    from etl.synth import generate

    sources = size_dir / "sources"
    marker = size_dir / "sources.json"
    wanted = {"rows": rows, "seed": seed, "parts": parts}
    if marker.exists():
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted and sources.is_dir():
            print(f"  sources: reusing {sources}", flush=True)
            return info
    if sources.exists():
        shutil.rmtree(sources)
    print(f"  sources: generating {rows:,} base rows in {parts} parts per family and subset ...", flush=True)
    started = time.monotonic()
    summary = generate(sources, rows=rows, seed=seed, parts=parts)
    seconds = time.monotonic() - started
    size, files = folder_size(sources)
    info = {**wanted, "seconds": seconds, "bytes": size, "files": files, "summary": summary}
    marker.write_text(json.dumps(info, indent=1, default=str))
    print(f"  sources: {files} files, {fmt_bytes(size)} in {seconds:.1f} s", flush=True)
    return info


def write_config(path: Path, sources: Path, warehouse: Path, engine: str, fmt: str, args,
                 planted_duplicates: int = 0, master: str = "local[2]") -> Path:
    """A build config over the benchmark's sources. On a cluster (`master` not local) each
    executor gets one core and CLUSTER_EXECUTOR_MEMORY; everything else is the engine's default."""
    import yaml

    def globs(folder: str) -> str:
        return str(sources / folder / "*.parquet")

    spark: dict = {"master": master}
    if args.shuffle_partitions:
        spark["shuffle_partitions"] = args.shuffle_partitions
    if not master.startswith("local"):
        spark["conf"] = {"spark.executor.cores": "1", "spark.executor.memory": CLUSTER_EXECUTOR_MEMORY}
    elif engine == "spark" and args.jvm_driver_memory:
        spark["conf"] = {"spark.driver.memory": args.jvm_driver_memory}
    config = {
        "engine": engine,
        "format": fmt,
        "warehouse": str(warehouse),
        "spark": spark,
        "sources": {
            "laion2B-en": {"language": "en", "base": globs("laion2B-en"), "joined": globs("laion2B-en-joined"),
                           "aesthetic": [globs("laion2B-en-aesthetic"), globs("improved_aesthetics_4.5plus")]},
            "laion2B-multi": {"base": globs("laion2B-multi"), "joined": globs("laion2B-multi-joined"),
                              "aesthetic": [globs("laion2B-multi-aesthetic")]},
            "laion1B-nolang": {"language": "nolang", "base": globs("laion1B-nolang"),
                               "joined": globs("laion1B-nolang-joined"),
                               "aesthetic": [globs("laion1B-nolang-aesthetic")]},
        },
        "images": [],
    }
    if planted_duplicates:
        # The synthetic sources plant one duplicated hash per 2,000 rows (real LAION has 6 in all),
        # so the wide table's absolute limit (1,000 rows) is raised to what was planted.
        config["dq"] = {"rules": {"dms_laion_wide.duplicate_hash_per_subset":
                                  {"max_unexpected": 2 * planted_duplicates}}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def engine_env(args, jvm: bool = False) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(args.tree), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if jvm:
        env["PYSPARK_PYTHON"] = sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    return env


def stage_figures(run: dict, warehouse: Optional[Path], cores: int) -> list[dict]:
    stages = []
    for row in run["summary"]:
        seconds = row["seconds"]
        rows = row["rows_in"] if row["rows_in"] is not None else row["rows_out"]
        window = run["stage_windows"].get(row["table"], {})
        out_bytes, out_files = folder_size(warehouse / row["layer"] / row["table"]) if warehouse else (None, None)
        stages.append({
            **row,
            "rows_per_s_per_core": (rows / seconds / cores) if rows and seconds > 0 else None,
            "window_seconds": (window["end"] - window["start"]) if "start" in window and "end" in window else None,
            "peak_rss_bytes": window.get("peak_rss_bytes"),
            "checks_seconds": window.get("checks_seconds"),
            "quarantine_seconds": window.get("quarantine_seconds"),
            "output_bytes": out_bytes,
            "output_files": out_files,
        })
    return stages


def run_size(rows: int, args, cores: int) -> dict:
    parts = parts_for(rows)
    size_dir = args.data / f"{rows}-seed{args.seed}"
    size_dir.mkdir(parents=True, exist_ok=True)
    print(f"\n=== {rows:,} base rows ===", flush=True)
    sources_info = ensure_sources(size_dir, rows, args.seed, parts)
    sources = size_dir / "sources"
    result: dict = {"rows": rows, "parts": parts, "sources": {k: v for k, v in sources_info.items() if k != "summary"},
                    "joined_rows": sum(sources_info["summary"][s]["joined"]
                                       for s in ("laion2B-en", "laion2B-multi", "laion1B-nolang")),
                    "engines": {}}
    logs = size_dir / "logs"
    logs.mkdir(exist_ok=True)
    python = sys.executable
    planted = sources_info["summary"]["planted"]["duplicate_hashes"]
    result["dq_overrides"] = {"dms_laion_wide.duplicate_hash_per_subset": {"max_unexpected": 2 * planted}}
    for engine in args.engines:
        out = size_dir / engine
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        fmt = FORMATS.get(engine)
        warehouse = out / "warehouse"
        engine_cores = cores
        if engine == "sail":
            config = write_config(size_dir / "sail.yaml", sources, warehouse, "sail", "delta", args, planted)
            run = run_engine(engine, [python, "-m", "etl.cli", "build", "--config", str(config)],
                             engine_env(args), logs / "sail.log", args.timeout, cwd=args.tree)
        elif engine == "jvm":
            config = write_config(size_dir / "jvm.yaml", sources, warehouse, "spark", fmt, args, planted)
            run = run_engine(engine, [python, "-m", "etl.cli", "build", "--config", str(config), "--engine", "spark"],
                             engine_env(args, jvm=True), logs / "jvm.log", args.timeout, cwd=args.tree)
        elif engine == "cluster":
            run, engine_cores = run_on_cluster(size_dir, sources, warehouse, args, planted)
        elif engine in DUCKDB_HASHES:
            # Only the config's sources are read; DuckDB writes its own layout under `out`.
            config = write_config(size_dir / "sail.yaml", sources, size_dir / "sail" / "warehouse", "sail", "delta", args,
                                  planted)
            run = run_engine(engine, [python, str(REPO / "bench" / "duckdb_ref.py"), "--config", str(config),
                                      "--out", str(out), "--threads", str(cores), "--hash", DUCKDB_HASHES[engine]],
                             engine_env(args), logs / f"{engine}.log", args.timeout)
            warehouse = out
        else:  # hash
            hash_input = size_dir / "hash_input.parquet"
            write_hash_input(sources, hash_input)
            run = run_engine(engine, [python, str(REPO / "bench" / "hash_bench.py"), "--input", str(hash_input)],
                             engine_env(args), logs / "hash.log", args.timeout)
            result["engines"]["hash"] = {
                "wall_seconds": run["wall_seconds"], "exit_code": run["exit_code"], "log": run["log"],
                "results": next((json.loads(line[7:])["results"] for line in run["stdout"] if line.startswith("RESULT ")),
                                None),
            }
            continue
        stages = stage_figures(run, warehouse, engine_cores)
        dms = next((s for s in stages if s["table"] == DMS_TABLE), None)
        figures = {
            "format": fmt,
            "cores": engine_cores,
            "exit_code": run["exit_code"],
            "timed_out": run["timed_out"],
            "wall_seconds": run["wall_seconds"],
            "stage_seconds": sum(s["seconds"] for s in stages),
            **checks_share(stages),
            "peak_rss_bytes": run["peak_rss_bytes"],
            "load_average_before": run["load_average_before"],
            "load_average_after": run["load_average_after"],
            "dms_rows": dms["rows_out"] if dms else None,
            "stages": stages,
            "log": run["log"],
        }
        if engine in JVM_ENGINES:
            figures["jvm_settings"] = run["jvm_settings"]
            figures["command"] = run["command"]
        if run["exit_code"] == 0 and dms:
            figures["dms_fingerprint"] = fingerprint(data_files(warehouse / "dms" / DMS_TABLE, fmt))
        result["engines"][engine] = figures
        if not args.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
        print_engine(engine, figures)
    result["checks"] = compare(result["engines"])
    result["ratios"] = ratios(result["engines"])
    cluster = result["engines"].get("cluster")
    if cluster and cluster["exit_code"] == 0 and cluster["stage_seconds"]:
        result["scale_model"] = scale_model(rows, cluster["stage_seconds"], cluster["cores"])
    return result


def checks_share(stages: list[dict]) -> dict:
    """The checks' and the quarantine's seconds over all tables, and their share of the stages'
    seconds; none where the engine does not log them (the DuckDB reference has neither)."""
    checks = [s["checks_seconds"] for s in stages if s.get("checks_seconds") is not None]
    quarantine = [s["quarantine_seconds"] for s in stages if s.get("quarantine_seconds") is not None]
    total = sum(s["seconds"] for s in stages)
    if not checks or not total:
        return {}
    return {"checks_seconds": sum(checks), "quarantine_seconds": sum(quarantine),
            "checks_quarantine_share": (sum(checks) + sum(quarantine)) / total}


def run_on_cluster(size_dir: Path, sources: Path, warehouse: Path, args, planted: int) -> tuple[dict, int]:
    """`laion-etl submit -- build` on a standalone cluster started for this run and stopped after
    it: the master, CLUSTER_WORKERS one-core workers; the driver runs here (client mode). Memory
    is sampled over the submit's tree and the cluster's JVMs (the executors are their children)."""
    sys.path.insert(0, str(REPO / "tests"))
    from standalone_cluster import StandaloneCluster  # the tests' cluster: one way to start and stop it

    cores = CLUSTER_WORKERS
    with StandaloneCluster(size_dir / "cluster", workers=CLUSTER_WORKERS, cores=1,
                           memory=CLUSTER_WORKER_MEMORY) as cluster:
        config = write_config(size_dir / "cluster.yaml", sources, warehouse, "spark", "delta", args, planted,
                              master=cluster.master_url)
        run = run_engine("cluster", cluster_command(config), engine_env(args, jvm=True),
                         size_dir / "logs" / "cluster.log", args.timeout, cwd=args.tree,
                         other_roots=tuple(p.pid for p in cluster.processes))
    return run, cores


def cluster_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "etl.cli", "submit", "--", "build", "--config", str(config)]


def scale_model(base_rows: int, stage_seconds: float, cores: int) -> dict:
    """Core-hours for all LAION-5B rows from the cluster's measured cost per base row (stages,
    whole build with its checks): rows x core-seconds per row x REAL_ROW_COST / CLUSTER_EFFICIENCY."""
    core_seconds_per_row = stage_seconds * cores / base_rows
    return {
        "base_rows_per_s_per_core": 1 / core_seconds_per_row,
        "laion_rows": LAION_ROWS,
        "real_row_cost": REAL_ROW_COST,
        "cluster_efficiency": CLUSTER_EFFICIENCY,
        "core_hours": LAION_ROWS * core_seconds_per_row * REAL_ROW_COST / CLUSTER_EFFICIENCY / 3600,
    }


def write_hash_input(sources: Path, path: Path) -> None:
    """The joined files' URL and TEXT in one parquet: the N rows the hash stage is timed on."""
    if path.exists():
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(sources.glob("*-joined/*.parquet"))
    with pq.ParquetWriter(path, pa.schema([("URL", pa.string()), ("TEXT", pa.string())])) as writer:
        for file in files:
            writer.write_table(pq.read_table(file, columns=["URL", "TEXT"]), row_group_size=100_000)


def compare(engines: dict) -> dict:
    """Do the DMS tables agree? Row counts always; the fingerprints where both were taken."""
    checks = {}
    ours = engines.get("sail")
    for other in PEERS:
        theirs = engines.get(other)
        if not ours or not theirs:
            continue
        same_rows = ours["dms_rows"] is not None and ours["dms_rows"] == theirs["dms_rows"]
        a, b = ours.get("dms_fingerprint"), theirs.get("dms_fingerprint")
        checks[f"sail_vs_{other}"] = {
            "dms_rows": [ours["dms_rows"], theirs["dms_rows"]],
            "rows_equal": same_rows,
            "fingerprint_equal": (a == b) if a and b else None,
            "fingerprint_differences": {k: [a[k], b[k]] for k in a if a[k] != b.get(k)} if a and b else None,
        }
    return checks


def ratios(engines: dict) -> dict:
    """ours / other for the same run: total wall, stage totals, each layer, peak memory."""
    out = {}
    ours = engines.get("sail")
    for other in PEERS:
        theirs = engines.get(other)
        if not ours or not theirs or ours["exit_code"] or theirs["exit_code"]:
            continue
        ratio = {"wall": ours["wall_seconds"] / theirs["wall_seconds"],
                 "stages": ours["stage_seconds"] / theirs["stage_seconds"] if theirs["stage_seconds"] else None,
                 "peak_memory": (ours["peak_rss_bytes"] / theirs["peak_rss_bytes"]
                                 if ours["peak_rss_bytes"] and theirs["peak_rss_bytes"] else None)}
        for layer in ("ods", "dmd", "dms"):
            a = sum(s["seconds"] for s in ours["stages"] if s["layer"] == layer)
            b = sum(s["seconds"] for s in theirs["stages"] if s["layer"] == layer)
            ratio[layer] = a / b if b else None
        out[f"sail_over_{other}"] = ratio
    return out


def exponents(sizes: list[dict]) -> dict:
    """log(t2/t1) / log(n2/n1) between the smallest and largest size, per engine and measure."""
    if len(sizes) < 2:
        return {}
    small, large = sizes[0], sizes[-1]
    out = {}
    for engine in ENGINES:
        a, b = small["engines"].get(engine), large["engines"].get(engine)
        if not a or not b or a.get("exit_code") or b.get("exit_code") or "stages" not in a:
            continue
        growth = math.log(large["joined_rows"] / small["joined_rows"])
        out[engine] = {measure: math.log(b[key] / a[key]) / growth
                       for measure, key in (("wall", "wall_seconds"), ("stages", "stage_seconds")) if a[key] and b[key]}
        for layer in ("ods", "dmd", "dms"):
            ta = sum(s["seconds"] for s in a["stages"] if s["layer"] == layer)
            tb = sum(s["seconds"] for s in b["stages"] if s["layer"] == layer)
            if ta > 0 and tb > 0:
                out[engine][layer] = math.log(tb / ta) / growth
    return out


# --- printing and plotting ---------------------------------------------------------------------

def fmt_bytes(value: Optional[float]) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def print_engine(engine: str, figures: dict) -> None:
    from etl.build.summary import format_rows

    rows = [(s["layer"], s["table"], s["rows_in"], s["rows_out"], f"{s['seconds']:.2f}",
             f"{s['rows_per_s_per_core']:,.0f}" if s["rows_per_s_per_core"] else "-",
             fmt_bytes(s["peak_rss_bytes"]), fmt_bytes(s["output_bytes"]), s["output_files"])
            for s in figures["stages"]]
    print(f"  {engine}: wall {figures['wall_seconds']:.1f} s, stages {figures['stage_seconds']:.1f} s, "
          f"peak {fmt_bytes(figures['peak_rss_bytes'])}, DMS rows {figures['dms_rows']}")
    table = format_rows(("layer", "table", "rows in", "rows out", "seconds", "rows/s/core", "peak mem",
                         "output", "files"), rows)
    print("\n".join("    " + line for line in table.splitlines()), flush=True)


def print_summary(results: dict) -> None:
    print("\n=== summary ===")
    for size in results["sizes"]:
        line = []
        for engine in ("sail", *PEERS):
            figures = size["engines"].get(engine)
            if figures:
                state = "" if figures["exit_code"] == 0 else " FAILED"
                line.append(f"{engine} {figures['wall_seconds']:.1f} s wall / {figures['stage_seconds']:.1f} s stages"
                            f" / {fmt_bytes(figures['peak_rss_bytes'])}{state}")
        print(f"  {size['rows']:,} base rows ({size['joined_rows']:,} joined): " + ";\n    ".join(line))
        for name, ratio in size["ratios"].items():
            print(f"    {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items() if v is not None))
        for name, check in size["checks"].items():
            print(f"    {name}: DMS rows {check['dms_rows']} equal={check['rows_equal']}, "
                  f"fingerprint equal={check['fingerprint_equal']}")
        hash_figures = size["engines"].get("hash", {}).get("results") or []
        for item in hash_figures:
            print(f"    hash [{item['scope']}] {item['how']}: {item['rows_per_s'] / 1e6:.2f} M rows/s")
        model = size.get("scale_model")
        if model:
            print(f"    scale model: {model['base_rows_per_s_per_core']:,.0f} base rows/s per core on the cluster -> "
                  f"{model['core_hours']:,.0f} core-hours for {model['laion_rows']:,} rows "
                  f"(x{model['real_row_cost']} real rows / {model['cluster_efficiency']} efficiency)")
    for engine, exponent in results["exponents"].items():
        print(f"  scaling exponent {engine}: " + ", ".join(f"{k} {v:.2f}" for k, v in exponent.items()))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sail": "tab:blue", "duckdb": "tab:orange", "duckdb-vectorised": "tab:brown", "jvm": "tab:green",
              "cluster": "tab:purple"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine, color in colors.items():
        points = [(s["joined_rows"], s["engines"][engine]["wall_seconds"]) for s in results["sizes"]
                  if engine in s["engines"] and s["engines"][engine]["exit_code"] == 0]
        if points:
            xs, ys = zip(*points)
            left.plot(xs, ys, "o-", color=color, label=engine)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("joined rows")
    left.set_ylabel("full rebuild, wall seconds")
    left.set_title("rebuild time by size")
    left.grid(True, which="both", alpha=0.3)
    left.legend()

    largest = results["sizes"][-1]
    engines = [e for e in colors if e in largest["engines"] and largest["engines"][e]["exit_code"] == 0]
    tables = [s["table"] for s in largest["engines"][engines[0]]["stages"]] if engines else []
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        seconds = {s["table"]: s["seconds"] for s in largest["engines"][engine]["stages"]}
        right.bar([x + i * width for x in range(len(tables))], [seconds.get(t, 0) for t in tables], width,
                  color=colors[engine], label=engine)
    right.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(tables))])
    right.set_xticklabels([t.replace("_image_path_suffix_aesthetics", "").replace("ods_", "").replace("laion_", "")
                           for t in tables], rotation=20, fontsize=8)
    right.set_ylabel("seconds")
    right.set_title(f"per stage at {largest['joined_rows']:,} joined rows")
    right.legend()
    fig.suptitle(f"laion-etl benchmark {results['meta']['started']} ({results['meta']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meta(args, cores: int) -> dict:
    def version(package: str) -> Optional[str]:
        try:
            from importlib.metadata import version as v

            return v(package)
        except Exception:
            return None

    def git(*command: str) -> Optional[str]:
        try:
            return subprocess.run(["git", *command], cwd=args.tree, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    def first_line(command: list[str]) -> Optional[str]:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = (done.stdout + done.stderr).splitlines()  # java -version writes to stderr
        return lines[0].strip() if lines else None

    def cpu_model() -> Optional[str]:
        try:
            return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), None)
        except OSError:
            return None

    def delta_spark_jar() -> Optional[str]:
        # The measured tree's artifact, read (not imported: an older tree may not have the module).
        source = args.tree / "etl" / "engine" / "jvm_packages.py"
        found = re.search(r'DELTA_SPARK = "([^"]+)"', source.read_text()) if source.is_file() else None
        return found.group(1) if found else None

    status = git("status", "--porcelain")
    return {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": [sys.executable, *sys.argv],
        "tree": str(args.tree),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_files": status.splitlines() if status else [],
        "cores": cores,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "versions": {**{p: version(p) for p in ("pysail", "pyspark", "delta-spark", "duckdb", "numba", "mmh3",
                                                 "pyarrow", "deltalake")},
                     "delta-spark jar": delta_spark_jar(), "java": first_line(["java", "-version"])},
        "seed": args.seed,
        "engines": args.engines,
        "shuffle_partitions": args.shuffle_partitions,
        "jvm_driver_memory": args.jvm_driver_memory,
        "cluster": {"workers": CLUSTER_WORKERS, "cores_per_worker": 1, "worker_memory": CLUSTER_WORKER_MEMORY,
                    "executor_memory": CLUSTER_EXECUTOR_MEMORY},
        "rows_per_file_target": ROWS_PER_FILE,
    }


def markdown_table(results: dict) -> str:
    """The README's benchmark table from one results JSON: its largest size, every engine that
    ran there, then the ratios, the hash, the scale model and what was measured on what."""
    size = results["sizes"][-1]
    engines = [e for e in ("sail", *PEERS) if e in size["engines"]]
    runs = [size["engines"][e] for e in engines]

    def row(label: str, cells) -> str:
        return "| " + " | ".join([label, *cells]) + " |"

    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.1f}"

    def ok(run: dict, text: str) -> str:
        return text if run["exit_code"] == 0 else f"failed (exit {run['exit_code']})"

    lines = [row(f"{size['rows']:,} base rows ({size['joined_rows']:,} joined)", [ENGINE_LABELS[e] for e in engines]),
             "|" + "---|" * (len(engines) + 1),
             row("wall seconds", [ok(r, seconds(r["wall_seconds"])) for r in runs]),
             row("stage seconds", [ok(r, seconds(r["stage_seconds"])) for r in runs]),
             row("peak memory, whole process tree", [fmt_bytes(r["peak_rss_bytes"]) for r in runs])]
    tables = [s["table"] for s in runs[0]["stages"]] if runs else []
    for table in tables:
        stage_seconds = [next((s["seconds"] for s in r["stages"] if s["table"] == table), None) for r in runs]
        lines.append(row(table, [seconds(v) + " s" if v is not None else "-" for v in stage_seconds]))
    lines.append(row("checks + quarantine, seconds (share of stages)",
                     [f"{r['checks_seconds'] + r['quarantine_seconds']:.1f} ({r['checks_quarantine_share']:.0%})"
                      if "checks_quarantine_share" in r else "-" for r in runs]))
    lines.append(row("whole pipeline, base rows/s per core (stages)",
                     [f"{size['rows'] / r['stage_seconds'] / r['cores']:,.0f}" if r["stage_seconds"] else "-"
                      for r in runs]))
    lines.append(row("Sail / this engine, wall (stages)",
                     ["1" if e == "sail" else
                      (f"{ratio['wall']:.2f} ({ratio['stages']:.2f})" if (ratio := size["ratios"].get(f"sail_over_{e}"))
                       else "-") for e in engines]))
    notes = ["load average (1 min) before each run: "
             + ", ".join(f"{e} {r['load_average_before'][0]:.1f}" for e, r in zip(engines, runs))]
    for engine in JVM_ENGINES:
        settings = size["engines"].get(engine, {}).get("jvm_settings")
        if settings:
            notes.append(f"{engine} settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    for item in (size["engines"].get("hash", {}).get("results") or []):
        notes.append(f"hash [{item['scope']}] {item['how']}: {item['rows_per_s'] / 1e6:.2f} M rows/s")
    model = size.get("scale_model")
    if model:
        notes.append(f"scale model: {model['base_rows_per_s_per_core']:,.0f} base rows/s per core on the cluster -> "
                     f"{model['core_hours']:,.0f} core-hours for {model['laion_rows']:,} rows")
    for engine, exponent in results.get("exponents", {}).items():
        notes.append(f"scaling exponent {engine} {results['sizes'][0]['rows']:,} -> {size['rows']:,}: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in exponent.items()))
    info = results["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    notes.append(f"commit {(info['git_commit'] or '?')[:10]}{' (dirty)' if info['git_dirty_files'] else ''}, "
                 f"{info['started']}, {info['cores']} cores, {fmt_bytes(info['memory_bytes'])}; "
                 f"python {info['python']}, {versions}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    cores = os.cpu_count() or 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = {"meta": meta(args, cores), "sizes": []}
    print(f"benchmark: sizes {', '.join(f'{s:,}' for s in args.sizes)}; engines {','.join(args.engines)}; "
          f"{cores} cores; data under {args.data}", flush=True)
    for rows in args.sizes:
        results["sizes"].append(run_size(rows, args, cores))
        results["exponents"] = exponents(results["sizes"])
        args.out.write_text(json.dumps(results, indent=1, default=str))  # partial results survive a crash
    results["exponents"] = exponents(results["sizes"])
    results["meta"]["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    args.out.write_text(json.dumps(results, indent=1, default=str))
    plot_path = args.out.with_suffix(".png")
    plot(results, plot_path)
    print_summary(results)
    print(f"\nresults: {args.out}\nplot:    {plot_path}")
    failed = [f"{s['rows']}:{e}" for s in results["sizes"] for e, f in s["engines"].items() if f.get("exit_code")]
    disagree = [f"{s['rows']}:{name}" for s in results["sizes"] for name, c in s["checks"].items()
                if not c["rows_equal"] or c["fingerprint_equal"] is False]
    if failed or disagree:
        print(f"bench: failed runs {failed or '-'}; disagreeing outputs {disagree or '-'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
