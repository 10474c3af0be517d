"""Spark SQL for analysts over the registered `laion.*` tables: one query, or a prompt."""

from __future__ import annotations

import sys

from pyspark.errors import PySparkException

from etl.build.summary import format_rows
from etl.engine.session import engine_step


def run_query(spark, query: str, limit: int) -> str:
    """Run one statement and format at most `limit` rows (saying when more exist)."""
    df = spark.sql(query.strip().rstrip(";"))
    if not df.columns:
        return "ok"
    rows = df.limit(limit + 1).collect()
    text = format_rows(df.columns, [tuple(r) for r in rows[:limit]])
    more = f"\n(first {limit} rows shown; use --limit for more)" if len(rows) > limit else ""
    return f"{text}\n{min(len(rows), limit)} rows{more}"


def interactive_prompt(spark, limit: int) -> None:
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
            with engine_step("query"):
                print(run_query(spark, statement, limit))
        except PySparkException as exc:
            print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
