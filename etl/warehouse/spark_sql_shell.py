"""Spark's own `spark-sql` shell over the warehouse: the init file that names every table
`laion.<table>`, and the command line that reads it.

pip's pyspark ships `bin/spark-sql` with the Hive thrift-server jars it runs on. The command
line makes the shell's catalog in-memory: the init file is the whole catalog, registered afresh
at each start as every pipeline session registers it, so no Hive metastore (`metastore_db/`,
`derby.log`) is left behind and no registration outlives a warehouse that moved or was rebuilt.
"""

from __future__ import annotations

from typing import Iterator

from etl.engine.jvm_packages import jvm_packages
from etl.engine.session import PYSPARK_CLIENT_SETTINGS, jvm_settings
from etl.project.config import Config
from etl.project.project import Project
from etl.project.tables import DATABASE
from etl.warehouse.meta import META_TABLES, meta_path
from etl.warehouse.store import table_store

IN_MEMORY_CATALOG = {"spark.sql.catalogImplementation": "in-memory"}


def present_tables(project: Project, config: Config) -> list[tuple[str, str, bool]]:
    """(name, path, partitioned) of every table of the project and every bookkeeping table that exists."""
    store = table_store(config)
    return [(name, path, partitioned) for name, path, partitioned in _tables(project, config) if store.exists(path)]


def init_file_text(config: Config, tables: list[tuple[str, str, bool]]) -> str:
    """The database, then the statements registering `tables`, each ending in `;` as spark-sql -i wants."""
    store = table_store(config)
    statements = [f"create database if not exists {DATABASE}"]
    for name, path, partitioned in tables:
        statements.extend(store.registration_sql(name, path, partitioned))
    return "".join(f"{statement};\n" for statement in statements)


def shell_command(config: Config, init_file: str) -> list[str]:
    """`spark-sql` with the config's master, the JVM packages and settings, reading `init_file`."""
    command = ["spark-sql", "--master", config.spark.master]
    packages = jvm_packages(config.format, config.uses_s3)
    if packages:
        command += ["--packages", ",".join(packages)]
    # The shell runs no Python, so PySpark's own settings have nothing to act on there.
    settings = {key: value for key, value in jvm_settings(config).items() if key not in PYSPARK_CLIENT_SETTINGS}
    for key, value in {**IN_MEMORY_CATALOG, **settings}.items():
        command += ["--conf", f"{key}={value}"]
    return command + ["-i", init_file]


def _tables(project: Project, config: Config) -> Iterator[tuple[str, str, bool]]:
    for table in project.tables:
        yield table.name, table.path(config), bool(table.partition_by(config))
    for name in META_TABLES:
        yield name, meta_path(config, name), bool(project.meta_contracts[name].partition_by)
