"""The one session factory, shared by the CLI, the spark-submit jobs and the tests.

`sail`: LakeSail's Spark Connect server started in this process (no JVM, real Delta tables).
`spark`: a classic JVM SparkSession; under spark-submit it attaches to the submitted context.
`connect`: a remote Spark Connect endpoint.
Whatever the engine, the session has `laion_hash` registered and the `laion` database created.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from etl.project.config import Config
from etl.engine.hashing import register_laion_hash
from etl.project.tables import DATABASE
from etl.s3_settings import applied_s3_settings

log = logging.getLogger(__name__)

DELTA_EXTENSIONS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def revive_release_pool() -> None:
    """Work around a pyspark 4.0 Spark Connect race that fails queries at random.

    The pool that sends ReleaseExecute RPCs is one per process, and every session's stop() shuts
    it down before forgetting it. An iterator finalised by the garbage collector inside that
    shutdown, or a query that looks the pool up in between, gets a dead pool, and the query fails
    with "cannot schedule new futures after shutdown" (seen in this project's test runs, where
    one process opens many sessions). A dead pool is replaced by a fresh one when asked for.
    """
    from pyspark.sql.connect.client.reattach import ExecutePlanResponseReattachableIterator as Iterator_

    if getattr(Iterator_, "_revived_by_laion_etl", False):
        return
    get_or_create = Iterator_._get_or_create_release_thread_pool.__func__

    def get_live_pool(cls):
        pool = get_or_create(cls)
        if getattr(pool, "_shutdown", False):
            with cls._lock:
                if cls._release_thread_pool_instance is pool:
                    cls._release_thread_pool_instance = None
            pool = get_or_create(cls)
        return pool

    Iterator_._get_or_create_release_thread_pool = classmethod(get_live_pool)
    Iterator_._revived_by_laion_etl = True


def local_cores() -> int:
    return os.cpu_count() or 2


@contextmanager
def open_session(config: Config, submitted: bool = False) -> Iterator[object]:
    """A ready SparkSession for `config.engine`; stopped (session before server) on exit.

    `submitted=True` means we run under spark-submit: the JVM engine is used whatever the
    config says, and master/packages come from the spark-submit command line.
    """
    engine = "spark" if submitted else config.engine
    server = None
    if engine != "spark":
        revive_release_pool()
    # The engine's object store reads its S3 settings from the environment: set before it starts.
    with applied_s3_settings(config):
        if engine == "sail":
            spark, server = _sail_session(config)
        elif engine == "spark":
            spark = _jvm_session(config, submitted)
        else:
            spark = _connect_session(config.connect_url)
        try:
            spark.conf.set("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions or local_cores()))
            spark.conf.set("spark.sql.session.timeZone", "UTC")
            register_laion_hash(spark)
            spark.sql(f"create database if not exists {DATABASE}")
            yield spark
        finally:
            spark.stop()
            if server is not None:
                server.stop()


def _sail_session(config: Config):
    from pysail.spark import SparkConnectServer

    # Sail logs every session start and shutdown at INFO; a user's RUST_LOG still wins.
    os.environ.setdefault("RUST_LOG", "error")
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    log.info("sail: Spark Connect server on %s:%s", host, port)
    try:
        return _connect_session(f"sc://{host}:{port}"), server
    except Exception:
        server.stop()
        raise


def _connect_session(url: Optional[str]):
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(url).getOrCreate()


def _jvm_session(config: Config, submitted: bool):
    from pyspark.sql import SparkSession

    # Python workers must run the interpreter that has mmh3 and pyarrow.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("laion-etl")
    if not submitted:
        builder = builder.master(config.spark.master).config("spark.ui.showConsoleProgress", "false")
        if config.spark.master.startswith("local"):
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    settings = dict(config.spark.conf)
    if config.format == "delta":
        settings = {**DELTA_EXTENSIONS, **settings}
    for key, value in settings.items():
        builder = builder.config(key, value)
    if config.format == "delta" and not submitted:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    return builder.getOrCreate()
