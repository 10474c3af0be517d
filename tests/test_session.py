"""The session factory's guard against pyspark 4.0's shared ReleaseExecute pool being left dead."""

from __future__ import annotations

from pyspark.sql.connect.client.reattach import ExecutePlanResponseReattachableIterator

from etl.project.config import load_config
from etl.engine.session import open_session
from helpers import demo_config


def test_a_dead_release_pool_does_not_fail_the_next_query(tmp_path):
    config = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "demo.yaml"))
    with open_session(config) as spark:
        assert spark.range(10).count() == 10
        # The state a concurrent stop() or a finaliser inside it leaves behind: a pool that is shut down.
        ExecutePlanResponseReattachableIterator._get_or_create_release_thread_pool().shutdown()
        assert spark.sql("select 1 as one").collect()[0].one == 1
        assert spark.range(100).filter("id % 2 = 0").count() == 50
