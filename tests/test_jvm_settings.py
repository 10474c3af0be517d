"""The JVM engine's own settings (etl/engine/session.py): a local heap sized from the machine, and
query tuning that never overrides a figure the user gave. Without a JVM: the session is a stand-in
holding what the launched context and the session were given (tests/test_bench.py checks the
settings a real local[2] build logged)."""

from __future__ import annotations

import logging

import pytest

from etl.engine.session import JVM_SQL_TUNING, PYSPARK_CLIENT_SETTINGS, apply_jvm_tuning, jvm_settings, local_memory_settings
from etl.project.config import parse_config


class LaunchedConf:
    """What spark-submit or the builder gave the context (SparkConf's contains/get)."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def contains(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default=None):
        return self.values.get(key, default)


class SessionConf(LaunchedConf):
    def set(self, key: str, value: str) -> None:
        self.values[key] = value


class StandInSession:
    def __init__(self, launched: dict) -> None:
        self._launched = LaunchedConf(launched)
        self.conf = SessionConf(dict(launched))  # a session starts with its context's settings
        self.sparkContext = self

    def getConf(self) -> LaunchedConf:
        return self._launched


@pytest.mark.parametrize("machine_gib, heap", [(2, "1g"), (8, "2g"), (15, "3g"), (24, "3g"), (256, "3g")])
def test_local_jvm_heap_is_a_quarter_of_the_machine_within_bounds(machine_gib, heap):
    assert local_memory_settings(machine_gib * 2**30) == {"spark.driver.memory": heap, "spark.memory.fraction": "0.6"}


def test_tuning_fills_in_what_the_launch_did_not_give_and_keeps_what_it_did(caplog):
    user = {"spark.master": "spark://10.0.0.1:7077", "spark.executor.memory": "14g",
            "spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.skewJoin.enabled": "false"}
    session = StandInSession(user)
    with caplog.at_level(logging.INFO, logger="etl.engine.session"):
        reported = apply_jvm_tuning(session)

    expected = {**JVM_SQL_TUNING, "spark.sql.autoBroadcastJoinThreshold": "-1",
                "spark.sql.adaptive.skewJoin.enabled": "false"}
    assert {k: session.conf.get(k) for k in JVM_SQL_TUNING} == expected
    assert reported == {"spark.master": "spark://10.0.0.1:7077", "spark.executor.memory": "14g", **expected}
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("JVM Spark settings: ")]
    assert "spark.executor.memory=14g" in line and "spark.sql.autoBroadcastJoinThreshold=-1" in line
    assert "spark.sql.adaptive.enabled=true" in line and "spark.driver.memory" not in line  # not given, not made up


def test_jvm_sessions_start_with_pysparks_call_site_recording_off_unless_the_config_says(tmp_path):
    """Fixed when the SparkContext starts, so it rides in the builder's and spark-submit's settings."""
    (key,) = PYSPARK_CLIENT_SETTINGS
    config = parse_config({"warehouse": str(tmp_path), "sources": {"s": {"base": "b", "joined": "j"}}}, tmp_path)
    assert jvm_settings(config)[key] == "false"
    mine = parse_config({"warehouse": str(tmp_path), "sources": {"s": {"base": "b", "joined": "j"}},
                         "spark": {"conf": {key: "true"}}}, tmp_path)
    assert jvm_settings(mine)[key] == "true"
