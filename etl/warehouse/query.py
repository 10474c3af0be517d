"""Spark SQL for analysts over the registered `laion.*` tables: statements given, or a prompt.

Every statement passes the read-only check first (etl/warehouse/read_only_sql.py); a refused
one is one line on stderr and runs nothing.
"""

from __future__ import annotations

import sys
from typing import Sequence

from pyspark.errors import PySparkException

from etl.build.summary import format_rows, plural
from etl.engine.session import engine_step
from etl.warehouse.read_only_sql import ReadOnlyError, check_read_only, split_statements


def run_statements(spark, text: str, limit: int, readable_roots: Sequence[str]) -> list[str]:
    """Check every statement in `text`, then run them in order; their formatted results."""
    statements = split_statements(text)
    for statement in statements:
        check_read_only(statement, readable_roots)
    results = []
    for statement in statements:
        with engine_step("query"):
            results.append(run_query(spark, statement, limit))
    return results


def run_query(spark, query: str, limit: int) -> str:
    """Run one statement and format at most `limit` rows (saying when more exist)."""
    df = spark.sql(query)
    if not df.columns:
        return "ok"
    rows = df.limit(limit + 1).collect()
    text = format_rows(df.columns, [tuple(r) for r in rows[:limit]])
    more = f"\n(first {limit} rows shown; use --limit for more)" if len(rows) > limit else ""
    return f"{text}\n{plural(min(len(rows), limit), 'row')}{more}"


def interactive_prompt(spark, limit: int, readable_roots: Sequence[str]) -> None:
    """Read statements ending in ';' until EOF or `quit`; errors are printed, not fatal."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    # By position: JVM Spark names the first column `namespace`, Sail names it `database`.
    tables = [f"{r[0]}.{r[1]}" for r in spark.sql("show tables in laion").collect()]
    print("laion-etl sql: tables " + (", ".join(tables) or "(none)") + ". End statements with ';', quit with 'quit' or Ctrl-D.")
    buffer: list[str] = []
    while True:
        try:
            line = input("laion> " if not buffer else "  ...> ")
        except EOFError:
            print()
            return
        if not buffer and line.strip().lower() in ("quit", "exit", r"\q"):
            return
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        statement = "\n".join(buffer)
        buffer = []
        try:
            for result in run_statements(spark, statement, limit, readable_roots):
                print(result)
        except (ReadOnlyError, PySparkException) as exc:
            print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
