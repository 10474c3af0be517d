"""The JVM artifacts named in etl/engine/jvm_packages.py match what is installed, and the README names them."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pyspark

from etl.engine.jvm_packages import DELTA_SPARK, HADOOP_AWS, jvm_packages
from helpers import REPO


def test_delta_spark_jar_is_the_pip_packages_version_built_for_spark_4_0():
    group, artifact, version = DELTA_SPARK.split(":")
    assert (group, artifact) == ("io.delta", "delta-spark_2.13")  # Delta 4.0.x: the Spark 4.0 build
    assert version == metadata.version("delta-spark")
    assert pyspark.__version__.startswith("4.0.")


def test_hadoop_aws_matches_pysparks_hadoop_client():
    jars = Path(pyspark.__file__).parent / "jars"
    clients = sorted(p.name for p in jars.glob("hadoop-client-api-*.jar"))
    assert clients == [f"hadoop-client-api-{HADOOP_AWS.split(':')[2]}.jar"]


def test_packages_follow_format_and_storage():
    assert jvm_packages("delta", uses_s3=False) == [DELTA_SPARK]
    assert jvm_packages("parquet", uses_s3=False) == []
    assert jvm_packages("parquet", uses_s3=True) == [HADOOP_AWS]


def test_readme_names_the_coordinates():
    readme = (REPO / "README.md").read_text()
    assert DELTA_SPARK in readme and HADOOP_AWS in readme
