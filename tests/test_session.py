"""The session factory's guards around pyspark 4.0's shared ReleaseExecute pool."""

from __future__ import annotations

import threading

import pytest
from google.protobuf.message import DecodeError
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


@pytest.mark.parametrize("method", ["AnalyzePlan", "ExecutePlan"])
def test_a_reply_grpc_cannot_decode_is_asked_for_again_or_fails_the_query(tmp_path, method):
    """The CI failure: "Exception deserializing response!" (INTERNAL) for a build's first schema
    request. The first reply of `method` is made undecodable in gRPC's own path, as it was there:
    a schema request is asked again; a query fails saying so, never with a short result."""
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException
    from pyspark.sql.connect.proto import base_pb2

    config = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "demo.yaml"))
    with open_session(config) as spark:
        replies = {"AnalyzePlan": base_pb2.AnalyzePlanResponse, "ExecutePlan": base_pb2.ExecutePlanResponse}
        garbled = []

        def decode_all_but_the_first(data: bytes):
            if not garbled:
                garbled.append(data)
                raise DecodeError("Wire format was corrupt")
            return replies[method].FromString(data)

        call = getattr(spark.client._channel, "unary_unary" if method == "AnalyzePlan" else "unary_stream")
        setattr(spark.client._stub, method, call(
            f"/spark.connect.SparkConnectService/{method}",
            request_serializer=getattr(base_pb2, f"{method}Request").SerializeToString,
            response_deserializer=decode_all_but_the_first))

        frame = spark.range(7).withColumnRenamed("id", "n")
        if method == "AnalyzePlan":
            assert frame.columns == ["n"]
        else:
            with pytest.raises(SparkConnectGrpcException, match="Exception deserializing response"):
                frame.count()
            assert frame.count() == 7  # the session goes on
        assert garbled, "no reply was garbled: the test proved nothing"



def test_sail_sessions_turn_pysparks_call_site_recording_off(tmp_path):
    """PySpark records the caller of every `functions` call (a stack walk and a failed IPython
    import each time) unless the active session's setting says no: a build plans with thousands
    of them. (The JVM's sessions get it when they start: tests/test_jvm_settings.py.)"""
    from etl.engine.session import PYSPARK_CLIENT_SETTINGS

    config = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "demo.yaml"))
    with open_session(config) as spark:
        assert {key: spark.conf.get(key, None) for key in PYSPARK_CLIENT_SETTINGS} == PYSPARK_CLIENT_SETTINGS
