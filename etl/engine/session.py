"""The one session factory, shared by the CLI, the spark-submit jobs and the tests.

`sail`: LakeSail's Spark Connect server in a child process (no JVM, real Delta tables), watched
for stalls: a step on which neither it nor this process does any work for `engine_stall_seconds`
fails naming the step, and the server is killed (etl/engine/sail_server.py, stall_watchdog.py).
`spark`: a classic JVM SparkSession; under spark-submit it attaches to the submitted context.
`connect`: a remote Spark Connect endpoint.
Whatever the engine, the session has `laion_hash` registered and the `laion` database created.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

from etl.project.config import Config
from etl.engine.hashing import register_laion_hash
from etl.engine.jvm_hash import register_jvm_laion_hash, with_hash_jar
from etl.engine.jvm_packages import jvm_packages
from etl.engine.paths import EnginePaths, use_aliases
from etl.engine.sail_server import SailServerProcess
from etl.engine.stall_watchdog import StallWatchdog
from etl.project.tables import DATABASE
from etl.s3_settings import applied_s3_settings, jvm_s3_conf

log = logging.getLogger(__name__)

DELTA_SESSION_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Delta replays a table's log in this many tasks (default 50) each time it loads a snapshot,
    # and a build loads one per write, read and registration. The warehouse's logs are small (one
    # commit per write, a checkpoint every 10), so 50 tasks a replay is overhead: the planted
    # build on local[2] (a busy 2-core machine) ran 2,786 tasks in 153 s with 50 and 962 in 66 s
    # with 2. `spark.conf` in the config overrides it.
    "spark.databricks.delta.snapshotPartitions": "2",
}
# The driver logs warnings only, so a build's own progress lines are what a person reads; set
# when the SparkContext starts (also under a hand-written spark-submit line). The JVM's start-up
# before that is quietened by QUIET_LOG_CONFIG, where this package starts the JVM.
QUIET_SESSION_SETTINGS = {"spark.log.level": "WARN"}
QUIET_LOG_CONFIG = "log4j2-quiet.properties"  # next to this module
QUIET_LOGGERS = ("org.apache.spark.sql.execution.CacheManager", "org.apache.spark.sql.execution.window.WindowExec")
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# PySpark (4.0) records the Python caller of `pyspark.sql.functions` calls (`col` among them) for
# its error messages: it walks the stack, tries to import IPython (a failed import searches sys.path each
# time) and, on the JVM, makes three py4j calls. Our errors name the file, column or table
# themselves; cProfile of a 10M Sail build counted 15,947 recordings, 3.6 s of the main thread
# while it plans, and 2,000 small column expressions took 1.02 s with it and 0.20 s without on
# Sail, 29.4 s and 6.6 s on the JVM. A runtime setting on Sail, fixed when the SparkContext
# starts on the JVM; PySpark reads it once per process.
PYSPARK_CLIENT_SETTINGS = {"spark.python.sql.dataFrameDebugging.enabled": "false"}
# The JVM engine's query settings, set on its session unless the config's `spark.conf` or the
# spark-submit line (`--conf`, spark-defaults.conf) gives them: the user's figure always wins.
JVM_SQL_TUNING = {
    # Adaptive execution re-plans each stage from the sizes the stages before it measured: it
    # merges small shuffle partitions (so `shuffle_partitions: auto` may err wide), splits skewed
    # join keys (a few LAION hashes repeat thousands of times), and turns a join whose measured
    # side is small into a broadcast: the duplicate-key sides of the DMD and DMS queries and the
    # image index of a small build.
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.skewJoin.enabled": "true",
    # Static plans broadcast from file sizes (compressed, so up to ~5x that in memory): 32 MB keeps
    # a broadcast under ~200 MB of executor memory. At run time the measured (in-memory) size is
    # known, so the adaptive threshold can be higher.
    "spark.sql.autoBroadcastJoinThreshold": "32MB",
    "spark.sql.adaptive.autoBroadcastJoinThreshold": "64MB",
    # Bytes of source file one read task takes, and rows of one Arrow batch handed to a Python
    # UDF: together they bound a task's memory whatever the size of the build.
    "spark.sql.files.maxPartitionBytes": "128MB",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
}
# A local-mode JVM is driver and executor in one: its heap is the build's memory. A quarter of the
# machine, 1 to 3 GiB. The process tree measured ~3 GB above the heap at 1M rows (local[2], the
# hash still a pandas UDF: 4.2 GB with a 1 GiB heap, 7.1 GB with 4 GiB, no faster), so 3 GiB keeps
# a 24 GB machine's build under 8 GB with room to grow; a small laptop keeps the rest of its
# memory. Fixed when the JVM starts.
LOCAL_HEAP_SHARE = 4
LOCAL_HEAP_GIB = (1, 3)
LOCAL_MEMORY_FRACTION = "0.6"  # of the heap for execution and storage (Spark's default), the rest for objects
# What a JVM session logs at start and the benchmark records: the settings that decide its speed and memory.
REPORTED_JVM_SETTINGS = ("spark.master", "spark.driver.memory", "spark.executor.memory", "spark.executor.cores",
                         "spark.memory.fraction", *JVM_SQL_TUNING)


def keep_release_pool_usable() -> None:
    """Work around two pyspark 4.0 Spark Connect faults around its process-wide ReleaseExecute pool.

    Every session's close() shuts that shared pool down (and waits for it). 1. A deadlock: when
    the garbage collector finalises an old session while this thread is inside the pool's
    `submit()`, holding the pool's lock, the finaliser's shutdown waits for that same lock
    forever, CPU idle (a CI run hung so inside a Great Expectations `collect`; the stacks are in
    tests/test_session.py). 2. A race: a query that looks the pool up while another session stops
    gets a dead pool and fails with "cannot schedule new futures after shutdown". So the shared
    pool is never shut down (its idle threads cost nothing and end with the process), and a pool
    found dead anyway is replaced when asked for.
    """
    from pyspark.sql.connect.client.reattach import ExecutePlanResponseReattachableIterator as Iterator_

    if getattr(Iterator_, "_kept_usable_by_laion_etl", False):
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

    original_finaliser = Iterator_.__del__

    def quiet_finaliser(self) -> None:
        # An iterator dropped at interpreter exit (a run stopped mid-query) cannot schedule its
        # release any more; the server forgets the operation by itself, so that is no error.
        try:
            original_finaliser(self)
        except RuntimeError:
            pass

    Iterator_._get_or_create_release_thread_pool = classmethod(get_live_pool)
    Iterator_.shutdown = classmethod(lambda cls: None)
    Iterator_.__del__ = quiet_finaliser
    Iterator_._kept_usable_by_laion_etl = True


def local_cores() -> int:
    return os.cpu_count() or 2


# The engine of this process (one per process): its stall watchdog, when it has one, and how to
# stop the work it is doing from another thread.
_watchdog: Optional[StallWatchdog] = None
_abort: Optional[Callable[[], None]] = None
SESSION_STOP_SECONDS = 30.0


def engine_stalled() -> Optional[str]:
    """Why the engine was stopped for making no progress, if it was (it is gone then)."""
    return _watchdog.stalled if _watchdog is not None else None


def abort_engine() -> None:
    """Stop what the engine is doing, from any thread: the call waiting on it fails at once."""
    if _abort is not None:
        _abort()


@contextmanager
def engine_step(name: str) -> Iterator[None]:
    """Name what the engine is doing: a stall inside fails with this name (no-op without a watchdog)."""
    if _watchdog is None:
        yield
        return
    with _watchdog.busy(name):
        yield


@contextmanager
def open_session(config: Config, submitted: bool = False, interactive: bool = False) -> Iterator[object]:
    """A ready SparkSession for `config.engine`; stopped (session before server) on exit.

    `submitted=True` means we run under spark-submit: the JVM engine is used whatever the
    config says, and master/packages come from the spark-submit command line. `interactive=True`
    (the analyst prompt): waiting for the user is not a stall; only `engine_step`s are watched.
    """
    global _watchdog, _abort
    engine = "spark" if submitted else config.engine
    server = None
    aliases = None
    if engine != "spark":
        keep_release_pool_usable()
    # The engine's object store reads its S3 settings from the environment: set before it starts.
    with applied_s3_settings(config):
        if engine == "sail":
            server = SailServerProcess()
            log.info("sail: Spark Connect server on %s:%s (pid %s)", server.host, server.port, server.pid)
            try:
                spark = server.connect()
            except Exception:
                server.kill()
                raise
            _watchdog = StallWatchdog(lambda: time.process_time() + (server.cpu_seconds() or 0.0), server.kill,
                                      config.engine_stall_seconds, on_stuck=_exit_stuck)
            _abort = server.kill
            aliases = EnginePaths()  # Sail misplaces local paths that need URL encoding
            use_aliases(aliases)
        elif engine == "spark":
            spark = _jvm_session(config, submitted)
            _abort = spark.sparkContext.cancelAllJobs
        else:
            spark = _connect_session(config.connect_url)
            _abort = spark.interruptAll
        try:
            with engine_step("session start"):
                if engine != "spark":  # first: PySpark reads it at its first `functions` call
                    for key, value in PYSPARK_CLIENT_SETTINGS.items():
                        spark.conf.set(key, value)
                spark.conf.set("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions or local_cores()))
                spark.conf.set("spark.sql.session.timeZone", "UTC")
                if engine == "spark":
                    register_jvm_laion_hash(spark)
                else:
                    register_laion_hash(spark)
                spark.sql(f"create database if not exists {DATABASE}")
            if interactive:
                yield spark
            else:
                with engine_step("session"):
                    yield spark
        finally:
            _abort = None
            watchdog, _watchdog = _watchdog, None
            if watchdog is not None:
                watchdog.close()
            _stop_within(spark, SESSION_STOP_SECONDS)
            if server is not None:
                server.stop()
            if aliases is not None:
                use_aliases(None)
                aliases.close()


def _exit_stuck(reason: str) -> None:
    """The last resort for a step that a killed engine did not unblock: every stack, then exit 1."""
    import faulthandler

    print(f"laion-etl: failed: {reason}; exiting (the stacks follow)", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    os._exit(1)


def _stop_within(spark, seconds: float) -> None:
    """`spark.stop()`, abandoned after `seconds`: a session on a server that died must not hold the exit."""
    stopper = threading.Thread(target=spark.stop, name="spark-session-stop", daemon=True)
    stopper.start()
    stopper.join(seconds)
    if stopper.is_alive():
        log.warning("the Spark session did not stop within %.0f s; going on without it", seconds)


def _connect_session(url: Optional[str]):
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(url).create()  # not a session this process had on another server


def jvm_settings(config: Config) -> dict[str, str]:
    """What a JVM session of the config is given beside master and packages: Delta's extension
    and catalog for `format: delta`, S3A for `s3://` paths, the WARN log level, PySpark's call-site
    recording off, then the user's `spark.conf`, which wins."""
    settings = dict(DELTA_SESSION_SETTINGS) if config.format == "delta" else {}
    return {**settings, **jvm_s3_conf(config), **QUIET_SESSION_SETTINGS, **PYSPARK_CLIENT_SETTINGS, **config.spark.conf}


def local_memory_settings(machine_bytes: int) -> dict[str, str]:
    """Heap and memory fraction for a local-mode JVM on a machine of `machine_bytes`."""
    low, high = LOCAL_HEAP_GIB
    heap = min(high, max(low, machine_bytes // LOCAL_HEAP_SHARE // 2**30))
    return {"spark.driver.memory": f"{heap}g", "spark.memory.fraction": LOCAL_MEMORY_FRACTION}


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def apply_jvm_tuning(spark) -> dict[str, str]:
    """Set JVM_SQL_TUNING on the session where the launched context does not give a figure (the
    config's `spark.conf` reaches the context through the builder, spark-submit's through its
    line), then log the settings that decide speed and memory; returns them."""
    launched = spark.sparkContext.getConf()
    for key, value in JVM_SQL_TUNING.items():
        if not launched.contains(key):
            spark.conf.set(key, value)
    settings = {key: spark.conf.get(key, None) or launched.get(key, None) for key in REPORTED_JVM_SETTINGS}
    reported = {key: value for key, value in settings.items() if value is not None}
    log.info("JVM Spark settings: %s", " ".join(f"{key}={value}" for key, value in reported.items()))
    return reported


def quiet_driver_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """`spark.driver.extraJavaOptions` for a driver JVM not started yet (client mode), pointing
    log4j2 at this package's WARN configuration: `spark.log.level` only takes effect when the
    SparkContext starts, after the JVM has logged its start-up at INFO. The user's own options
    follow ours (the JVM keeps the last `-D` of a name, so their log4j2 file wins). Nothing when
    the package is imported from a zip (no file to point at)."""
    config_file = resources.files("etl.engine").joinpath(QUIET_LOG_CONFIG)
    if not isinstance(config_file, Path):
        return {}
    option = f"-Dlog4j2.configurationFile={config_file}"
    quoted = f'"{option}"' if " " in option else option  # Spark splits the options at spaces, minding quotes
    return {DRIVER_JAVA_OPTIONS: f"{quoted} {settings.get(DRIVER_JAVA_OPTIONS, '')}".strip()}


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
    settings = jvm_settings(config)
    if not submitted:  # pyspark starts the driver JVM here, with these options
        settings.update(quiet_driver_settings(settings))
        jars = with_hash_jar(settings.get("spark.jars"))
        if jars:
            settings["spark.jars"] = jars
        if config.spark.master.startswith("local"):
            settings = {**local_memory_settings(machine_memory_bytes()), **settings}
    for key, value in settings.items():
        builder = builder.config(key, value)
    packages = jvm_packages(config.format, config.uses_s3)
    if packages and not submitted:
        builder = builder.config("spark.jars.packages", ",".join(packages))
    spark = builder.getOrCreate()
    _quiet_known_warnings(spark)
    apply_jvm_tuning(spark)
    return spark


def _quiet_known_warnings(spark) -> None:
    """Silence the JVM warnings every build repeats and nobody can act on, hundreds of lines a
    build: Great Expectations asks to cache frames already cached, and a `sql` rule's bad rows are
    counted in one window without a partition beside its sample (etl/quality/validation.py)."""
    jvm = spark.sparkContext._jvm
    for logger in QUIET_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(logger, jvm.org.apache.logging.log4j.Level.ERROR)
