#!/usr/bin/env python
"""What a table's contract checks cost: seconds per table and, on JVM Spark, Spark jobs per table.

    python bench/checks_cost.py --config conf/demo.yaml [--engine spark] [--repeat 3]

A measuring tool, not part of the product: it validates the current version of every built table
of the config's warehouse with the project's Validator (etl.quality.validation), as `laion-etl dq`
does, timing each table's `validate` and, on the JVM, counting the queries (SQL executions in the
session's status store) and the Spark jobs it starts (a job group per table, read back from the
status tracker; adaptive execution makes a query one job per shuffle stage; a temporary view
counts as an execution without a job). Sail counts neither;
its seconds are the figure. The last stdout line is `RESULT <json>`.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--engine", choices=("sail", "spark"), default="sail")
    parser.add_argument("--repeat", type=int, default=1, help="validate each table this many times (best time kept)")
    args = parser.parse_args()

    from etl.build.materialise import register_existing_tables
    from etl.engine.session import open_session
    from etl.project.config import load_config
    from etl.project.project import load_project
    from etl.quality.validation import Validator, expected_totals
    from etl.warehouse.store import table_store

    config = load_config(args.config, overrides={"engine": args.engine})
    project = load_project(config.project_dir)
    figures = {}
    with open_session(config) as spark:
        tables = register_existing_tables(spark, project, config)
        store = table_store(config)
        validator = Validator(config.dq_rules, {}, expected_totals(config))
        tracker = spark.sparkContext.statusTracker() if args.engine == "spark" else None
        executions = spark._jsparkSession.sharedState().statusStore() if tracker is not None else None
        for table in tables:
            df = store.read(spark, table.path(config))
            seconds, jobs, queries = [], None, None
            for attempt in range(args.repeat):
                group = f"checks-{table.name}-{attempt}"
                if tracker is not None:
                    spark.sparkContext.setJobGroup(group, group)
                    before = executions.executionsCount()
                started = time.perf_counter()
                rules = validator.validate(table.contract, df, store.null_counts(table.path(config)))
                seconds.append(time.perf_counter() - started)
                if tracker is not None:
                    time.sleep(2)  # Spark's listener bus records jobs and executions a moment after they end
                    jobs = len(tracker.getJobIdsForGroup(group))
                    queries = executions.executionsCount() - before
            figures[table.name] = {"rules": len(rules), "seconds": round(min(seconds), 3), "queries": queries,
                                 "spark_jobs": jobs}
            print(f"{table.name:40s} rules={len(rules):3d} seconds={min(seconds):6.2f} queries={queries} spark_jobs={jobs}",
                  flush=True)
    print("RESULT " + json.dumps(figures))


if __name__ == "__main__":
    main()
