"""Analysts read; only the pipeline writes: the statements `laion-etl sql` lets through.

The prompt runs SELECT (with WITH, set operations, VALUES), SHOW, DESCRIBE and EXPLAIN of those.
Everything else (INSERT, DELETE, UPDATE, MERGE, CREATE, DROP, SET, CACHE, ...) is refused before
it reaches the engine: a write through the prompt would change a published table behind the
build's back. Reads are confined too: a path-addressed table (``delta.`/some/path` ``,
``parquet.`s3://…` ``) must lie under the warehouse or a configured source folder, table-valued
functions that read files are refused, and so are the functions that call into the JVM.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from etl.ingest.storage import is_within, normal_location

DIALECT = "spark"
READ_STATEMENTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery, exp.Describe)
READ_COMMANDS = ("SHOW",)
EXPLAIN_MODIFIERS = ("EXTENDED", "FORMATTED", "CODEGEN", "COST", "LOGICAL")
FILE_FORMATS = ("parquet", "delta", "csv", "json", "orc", "text", "avro", "binaryfile")
SAFE_TABLE_FUNCTIONS = ("range",)
REFUSED_FUNCTIONS = ("reflect", "java_method", "try_reflect")
ONLY_READS = "laion-etl sql only reads (SELECT, WITH … SELECT, SHOW, DESCRIBE, EXPLAIN)"


class ReadOnlyError(ValueError):
    """A statement the analyst prompt does not run; the message says why in one line."""


def split_statements(text: str) -> list[str]:
    """The statements in `text`, split at the semicolons that end them (not those inside quotes),
    each exactly as written."""
    try:
        tokens = Dialect.get_or_raise(DIALECT).tokenize(text)
    except SqlglotError:
        return [text.strip().rstrip(";").strip()]  # the engine's own parser names the error
    statements, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append(text[start:token.start])
            start = token.end + 1
    statements.append(text[start:])
    return [s.strip() for s in statements if s.strip()]


def check_read_only(statement: str, readable_roots: Sequence[str]) -> None:
    """Raise ReadOnlyError unless `statement` only reads, and only under `readable_roots`."""
    try:
        parsed = [p for p in sqlglot.parse(statement, read=DIALECT) if p is not None]
    except SqlglotError:
        return  # not parsable here: the engine refuses it with its own message, it cannot write
    for expression in parsed:
        _check(expression, readable_roots)


def _check(expression: exp.Expression, roots: Sequence[str]) -> None:
    if isinstance(expression, exp.Command):
        keyword = str(expression.this).upper()
        if keyword == "EXPLAIN":
            rest = expression.expression
            words = str(rest.this if isinstance(rest, exp.Literal) else rest or "").split(None, 1)
            explained = words[1] if len(words) > 1 and words[0].upper() in EXPLAIN_MODIFIERS else " ".join(words)
            check_read_only(explained, roots)
            return
        if keyword in READ_COMMANDS:
            return
        raise ReadOnlyError(f"{keyword} statements are refused: {ONLY_READS}")
    if isinstance(expression, exp.With):
        expression = expression.this
    if not isinstance(expression, READ_STATEMENTS):
        kind = expression.key.upper()
        raise ReadOnlyError(f"{kind} statements are refused: {ONLY_READS}")
    for table in expression.find_all(exp.Table):
        _check_table(table, roots)
    for function in expression.find_all(exp.Anonymous, exp.Func):
        name = (function.name if isinstance(function, exp.Anonymous) else function.sql_name()).lower()
        if name in REFUSED_FUNCTIONS:
            raise ReadOnlyError(f"{name}() is refused: it calls into the JVM")


def _check_table(table: exp.Table, roots: Sequence[str]) -> None:
    if isinstance(table.this, exp.Func):
        name = (table.this.name if isinstance(table.this, exp.Anonymous) else table.this.sql_name()).lower()
        if name not in SAFE_TABLE_FUNCTIONS:
            raise ReadOnlyError(f"the table function {name}() is refused: laion-etl sql reads tables as "
                                "laion.<table>")
        return
    if table.db.lower() in FILE_FORMATS:
        path = table.name
        if not _under_any(path, roots):
            raise ReadOnlyError(f"{table.db}.`{path}` is refused: laion-etl sql reads paths only under the "
                                "warehouse and the configured sources")


def _under_any(path: str, roots: Iterable[str]) -> bool:
    target = normal_location(path)
    return any(is_within(target, root) for root in map(normal_location, roots))

