"""LAION's hash as a JVM function, so JVM Spark hashes rows without a Python worker.

The pandas UDF of etl/engine/hashing.py sends every row from the JVM to a Python worker and
back; the ODS base table ran at about 43k rows/s per core so. `java/LaionHash.java`
(next to this module) is the same hash as a Spark `UDF2`. It is compiled here, against pyspark's
own jars, into a jar in the cache folder named by the digest of its source: the same source is
compiled once per machine, and a session never runs a jar of other code. `python -m
etl.engine.jvm_hash` builds it ahead (scripts/setup.sh does).

JVM sessions get the jar (`spark.jars`, or `--jars` from `laion-etl submit`) and register the
Java function as `laion_hash`. Without a JDK (no `javac`) and no jar cached, or under a
spark-submit line that did not pass the jar, they keep the pandas UDF: correct, slower, and said
once in a warning. Sail and Spark Connect always use the pandas UDF.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Optional

from etl.engine.artifacts import cache_folder, named_by_content, spark_home, write_stable_zip
from etl.engine.hashing import SQL_FUNCTION_NAME, register_laion_hash

log = logging.getLogger(__name__)

JAVA_CLASS = "laionetl.LaionHash"
JAVA_SOURCE = "java/LaionHash.java"  # inside this package; its Java package is laionetl
JAR_NAME = "laion-hash.jar"  # in the cache as laion-hash-<digest of the source>.jar
JAR_PREFIX = "laion-hash-"
JAVA_RELEASE = "17"  # pyspark 4's minimum Java
JAVAC_SECONDS = 300


class JarBuildError(RuntimeError):
    """The jar cannot be built here (no javac, or javac failed)."""


def java_source() -> bytes:
    return resources.files("etl.engine").joinpath(JAVA_SOURCE).read_bytes()


def jar_path() -> Path:
    """Where the jar of this process's source is (or will be) cached."""
    return named_by_content(cache_folder(), JAR_NAME, java_source())


def build_jar() -> Path:
    """The jar of this process's source: the cached one, else compiled now (a few seconds)."""
    jar = jar_path()
    if jar.exists():
        return jar
    javac = shutil.which("javac")
    if javac is None:
        raise JarBuildError("javac (JDK 17) not found; scripts/setup.sh --test installs it")
    log.info("compiling the JVM laion_hash into %s (once for this source)", jar)
    with tempfile.TemporaryDirectory(prefix="laion-hash-") as scratch:
        source = Path(scratch, "src", JAVA_SOURCE)
        source.parent.mkdir(parents=True)
        source.write_bytes(java_source())
        classes = Path(scratch, "classes")
        # javac expands the `*` of a classpath entry itself: every jar pyspark ships.
        done = subprocess.run([javac, "--release", JAVA_RELEASE, "-cp", str(spark_home() / "jars" / "*"),
                               "-d", str(classes), str(source)], capture_output=True, text=True, timeout=JAVAC_SECONDS)
        if done.returncode != 0:
            raise JarBuildError(f"javac failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
        write_stable_zip(jar, {path.relative_to(classes).as_posix(): path.read_bytes()
                               for path in sorted(classes.rglob("*.class"))})
    return jar


_jar_problem: Optional[str] = None  # why this process cannot build the jar; warned about once


def hash_jar() -> Optional[Path]:
    """The jar for a JVM this process starts, or None (with one warning a process) when it cannot be built."""
    global _jar_problem
    if _jar_problem is None:
        try:
            return build_jar()
        except (JarBuildError, OSError, subprocess.TimeoutExpired) as exc:
            _jar_problem = str(exc)
            log.warning("laion_hash will run in Python workers (correct, slower): no JVM jar: %s", _jar_problem)
    return None


def with_hash_jar(jars: Optional[str]) -> Optional[str]:
    """A `spark.jars` value (comma-separated) with the hash jar added, when there is one."""
    jar = hash_jar()
    return ",".join(filter(None, [jars, str(jar) if jar else None])) or None


def register_jvm_laion_hash(spark) -> bool:
    """`laion_hash(url, text)` on a JVM session: the Java function when the JVM was given its jar,
    else the pandas UDF. True when it is the Java function."""
    from pyspark.sql.types import LongType

    given = spark.sparkContext.getConf().get("spark.jars", "") or ""
    if JAR_PREFIX in given:
        spark.udf.registerJavaFunction(SQL_FUNCTION_NAME, JAVA_CLASS, LongType())
        return True
    if _jar_problem is None:  # else hash_jar has said why already
        log.warning("laion_hash will run in Python workers (correct, slower): this JVM was not given the jar "
                    "(spark.jars); `laion-etl submit` passes it, `python -m etl.engine.jvm_hash` builds it")
    register_laion_hash(spark)
    return False


def main() -> int:
    try:
        print(build_jar())
    except JarBuildError as exc:
        print(f"laion-etl: cannot build the JVM laion_hash: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
