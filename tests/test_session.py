"""The session factory's guards around pyspark 4.0's shared ReleaseExecute pool."""

from __future__ import annotations

import threading

from pyspark.sql.connect.client.reattach import ExecutePlanResponseReattachableIterator

from etl.engine.session import keep_release_pool_usable, open_session
from etl.project.config import load_config
from helpers import demo_config


def test_a_dead_release_pool_does_not_fail_the_next_query(tmp_path):
    config = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "demo.yaml"))
    with open_session(config) as spark:
        assert spark.range(10).count() == 10
        # The state a concurrent stop() or a finaliser inside it leaves behind: a pool that is shut down.
        ExecutePlanResponseReattachableIterator._get_or_create_release_thread_pool().shutdown()
        assert spark.sql("select 1 as one").collect()[0].one == 1
        assert spark.range(100).filter("id % 2 = 0").count() == 50


def test_closing_a_session_inside_the_pools_submit_does_not_deadlock():
    """The CI hang: the main thread inside `pool.submit()` (holding the pool's lock) when the garbage
    collector finalises an old SparkSession, whose close() shuts the shared pool down:

        reattach.py _release_all -> thread.py submit -> _adjust_thread_count -> (GC)
        session.py __del__ -> core.py close -> reattach.py shutdown -> thread.py shutdown  (waits forever)

    Replayed in a helper thread, so that without the guard the test fails instead of hanging."""
    keep_release_pool_usable()
    pool = ExecutePlanResponseReattachableIterator._get_or_create_release_thread_pool()

    def finaliser_inside_submit():
        with pool._shutdown_lock:  # what submit() holds
            ExecutePlanResponseReattachableIterator.shutdown()  # what the finalised session's close() calls

    replay = threading.Thread(target=finaliser_inside_submit, daemon=True)
    replay.start()
    replay.join(10)
    assert not replay.is_alive(), "a session closed inside the release pool's submit() deadlocked"
    assert ExecutePlanResponseReattachableIterator._get_or_create_release_thread_pool().submit(lambda: 7).result(5) == 7
