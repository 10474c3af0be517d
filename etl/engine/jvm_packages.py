"""The JVM engine's Maven artifacts, named here and nowhere else in the code.

delta-spark must be the build for the pinned pyspark (4.0): Delta 4.0.1, `io.delta:delta-spark_2.13`,
whose only dependency beyond Spark is delta-storage. Later Delta releases for Spark 4.0
(`delta-spark_4.0_2.13:4.1+`) pull Delta Kernel with its own Hadoop and Parquet (3.4.2, 1.16),
which clash with pyspark's jars, and the 4.4.1 that pip's newest delta-spark names is not on Maven
Central. hadoop-aws gives the JVM `s3a://`; its version must equal pyspark's Hadoop client (3.4.1),
and it brings the AWS SDK v2 bundle (560 MB, fetched once).

Spark resolves them through Ivy (`spark.jars.packages`, `spark-submit --packages`) into its cache
(~/.ivy2.5.2); `python -m etl.engine.jvm_packages` fills that cache once, as the setup does, so a
build or a test run later finds everything local.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

DELTA_SPARK = "io.delta:delta-spark_2.13:4.0.1"
HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.4.1"
ALL_PACKAGES = (DELTA_SPARK, HADOOP_AWS)


def jvm_packages(table_format: str, uses_s3: bool) -> list[str]:
    """The artifacts a JVM session needs for the config's table format and storage."""
    packages = [DELTA_SPARK] if table_format == "delta" else []
    if uses_s3:
        packages.append(HADOOP_AWS)
    return packages


def fetch(packages: Sequence[str] = ALL_PACKAGES) -> float:
    """Resolve `packages` into Ivy's cache with a short-lived local JVM; returns the seconds it took."""
    from pyspark.sql import SparkSession

    started = time.monotonic()
    spark = (SparkSession.builder.master("local[1]").appName("laion-etl-fetch-jars")
             .config("spark.jars.packages", ",".join(packages)).config("spark.ui.enabled", "false")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
             .getOrCreate())
    spark.stop()
    return time.monotonic() - started


if __name__ == "__main__":
    seconds = fetch()
    print(f"jvm packages: {', '.join(ALL_PACKAGES)} in Ivy's cache ({seconds:.0f} s)", file=sys.stderr)
