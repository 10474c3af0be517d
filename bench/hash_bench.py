#!/usr/bin/env python
"""The hash stage on its own: LAION's hash alone (no read, no write) and through Sail.

    python bench/hash_bench.py --input data/bench/<size>/hash_input.parquet

`alone`: the URL/TEXT columns are loaded into Arrow first (not timed), then hashed in batches:
the compiled kernel on one thread and on all cores (it runs without the GIL), and the previous
implementation (`to_pylist` and a Python loop over mmh3) for comparison. `sail`: an in-process
Sail session reads the parquet and sums the hash, so every row is hashed and nothing is
written: `laion_hash(URL, TEXT)` in SQL (the pandas UDF the pipeline uses), the same hash by
`mapInArrow`, a pandas UDF that returns zeros (the cost of the Arrow -> pandas round trip alone)
and the read alone. Each is run once to warm up, then `--repeat` times; the best time counts.
The last stdout line is `RESULT <json>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BATCH_ROWS = 65_536


def best_of(repeat: int, run) -> tuple[float, object]:
    run()  # warm-up: numba's cache load, the engine's first plan
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - started)
    return min(times), value


def alone(path: Path, repeat: int, threads: int) -> tuple[int, list[dict]]:
    from etl.engine.hashing import hash_backend, laion_hash_arrow

    table = pq.read_table(path, columns=["URL", "TEXT"]).combine_chunks()
    rows = table.num_rows
    batches = [(table.column("URL").chunk(0).slice(i, BATCH_ROWS), table.column("TEXT").chunk(0).slice(i, BATCH_ROWS))
               for i in range(0, rows, BATCH_ROWS)]

    def compiled():
        return sum(int(laion_hash_arrow(u, t).to_numpy().sum(dtype=np.int64)) for u, t in batches)

    def compiled_threads():
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(lambda b: int(laion_hash_arrow(*b).to_numpy().sum(dtype=np.int64)), batches))

    def python_loop():
        import mmh3

        hash64 = mmh3.hash64
        total = 0
        for u, t in batches:
            total += int(np.fromiter((hash64(((a or "") + (b or "")).encode("utf-8"))[0]
                                      for a, b in zip(u.to_pylist(), t.to_pylist())), np.int64, len(u)).sum())
        return total

    results = []
    for name, run in ((f"compiled kernel ({hash_backend()}), 1 thread", compiled),
                      (f"compiled kernel ({hash_backend()}), {threads} threads", compiled_threads),
                      ("previous: to_pylist + mmh3 loop, 1 thread", python_loop)):
        seconds, checksum = best_of(repeat, run)
        results.append({"how": name, "scope": "hash alone", "rows": rows, "seconds": seconds,
                        "rows_per_s": rows / seconds, "checksum": checksum % 2**64})
        print(f"  alone  {name:45s} {seconds:7.2f} s  {rows / seconds / 1e6:6.2f} M rows/s", flush=True)
    return rows, results


def through_sail(path: Path, repeat: int, rows: int, batch_rows: int) -> list[dict]:
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    from etl.project.config import parse_config
    from etl.engine.hashing import laion_hash_batches
    from etl.engine.session import open_session

    warehouse = Path(tempfile.mkdtemp(prefix="hash_bench_"))
    config = parse_config({"warehouse": str(warehouse), "sources": {"s": {"base": "b", "joined": "j"}}}, warehouse)
    results = []
    with open_session(config) as spark:
        if batch_rows:
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
        df = spark.read.parquet(str(path.resolve())).select("URL", "TEXT")
        spark.udf.register("zeros_udf", pandas_udf(lambda u, t: pd.Series(np.zeros(len(u), np.int64)), "bigint"))
        queries = {
            "read only: sum(length(URL) + length(TEXT))": lambda: df.selectExpr("sum(length(URL) + length(TEXT))"),
            "SQL laion_hash(URL, TEXT) (pandas UDF)": lambda: df.selectExpr("sum(laion_hash(URL, TEXT))"),
            "mapInArrow(laion_hash_batches)": lambda: df.mapInArrow(
                laion_hash_batches("URL", "TEXT"), "URL string, TEXT string, hash bigint").selectExpr("sum(hash)"),
            "pandas UDF returning zeros (round trip only)": lambda: df.selectExpr("sum(zeros_udf(URL, TEXT))"),
        }
        for name, query in queries.items():
            seconds, value = best_of(repeat, lambda: query().first()[0])
            results.append({"how": name, "scope": "through sail (read included)", "rows": rows, "seconds": seconds,
                            "rows_per_s": rows / seconds, "checksum": None if value is None else int(value) % 2**64})
            print(f"  sail   {name:45s} {seconds:7.2f} s  {rows / seconds / 1e6:6.2f} M rows/s", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="parquet with URL and TEXT columns")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-rows", type=int, default=0,
                        help="spark.sql.execution.arrow.maxRecordsPerBatch for Sail (default: the engine's, 10000)")
    parser.add_argument("--skip-sail", action="store_true")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    rows, results = alone(args.input, args.repeat, args.threads)
    if not args.skip_sail:
        results += through_sail(args.input, args.repeat, rows, args.batch_rows)
    checksums = {r["checksum"] for r in results if r["checksum"] is not None and "length" not in r["how"]
                 and "zeros" not in r["how"]}
    if len(checksums) != 1:
        print(f"hash_bench: the hash sums disagree between methods: {checksums}", file=sys.stderr)
        return 1
    print("RESULT " + json.dumps({"rows": rows, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
