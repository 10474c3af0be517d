"""Concurrent runs on one warehouse: the lock at `<warehouse>/meta/_lock.json`.

Unit level: a run holds the lock while it lasts and removes it after, exception or not; a second
run fails fast naming the holder; a stale lock (silent heartbeat) or one left by a dead process on
this host is taken over with a warning; a lock that changed hands is never removed by its former
owner; racing takeovers of one stale lock have one winner; the same on `s3://` (SeaweedFS).
End to end: two `laion-etl build` processes started together on the planted sources, one wins,
the other exits 1 at once with the lock message, and the tables equal a single build's; a lock
left by a SIGKILLed build is taken over by the next build.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etl.project.config import ConfigError, load_config, parse_config
from etl.warehouse.lock import LOCK_FILE, LockError, LockOwner, acquire, lock_store, warehouse_lock
from etl.project.project import load_project
from helpers import REPO, assert_same_rows, one_line, read_delta, runs, write_planted_config
from planted import write_planted_sources

HOST = socket.gethostname()


def lock_config(tmp_path: Path, warehouse: str | None = None, stale: int = 600, endpoint: str | None = None):
    raw = {"warehouse": warehouse or str(tmp_path / "warehouse"), "lock_stale_seconds": stale,
           "sources": {"laion2B-en": {"base": "base/*.parquet", "joined": "joined/*.parquet"}}}
    if endpoint:
        raw["s3"] = {"endpoint": endpoint}
    return parse_config(raw, base_dir=tmp_path)


def lock_path(config) -> Path:
    return Path(config.warehouse) / "meta" / LOCK_FILE


def plant_lock(path: Path, run_id: str, host: str = HOST, pid: int | None = None, silent_for: float = 0.0) -> None:
    """A lock as another run would have left it: its owner and how long its heartbeat has been silent."""
    now = datetime.now(timezone.utc)
    owner = LockOwner(run_id=run_id, command="build", host=host, pid=os.getpid() if pid is None else pid,
                      acquired_at=now - timedelta(seconds=silent_for + 60),
                      heartbeat_at=now - timedelta(seconds=silent_for))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(owner.to_json())


def lock_owner(path: Path) -> dict:
    return json.loads(path.read_text())


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------------------------------------
# unit level: local warehouse


def test_lock_is_held_while_the_run_lasts_and_removed_after(tmp_path):
    config = lock_config(tmp_path)
    with warehouse_lock(config, "run-a", "build"):
        held = lock_owner(lock_path(config))
        assert (held["run_id"], held["command"], held["host"], held["pid"]) == ("run-a", "build", HOST, os.getpid())
        assert held["acquired_at"] == held["heartbeat_at"]
    assert not lock_path(config).exists()


def test_second_run_fails_fast_naming_the_holder(tmp_path):
    config = lock_config(tmp_path)
    with warehouse_lock(config, "run-a", "build"):
        started = time.monotonic()
        with pytest.raises(LockError) as refused:
            with warehouse_lock(config, "run-b", "dq"):
                pytest.fail("the second run entered the locked warehouse")
        assert time.monotonic() - started < 1
        message = str(refused.value)
        assert "\n" not in message
        for part in (f"warehouse {config.warehouse}", "build run run-a", f"host {HOST}", f"pid {os.getpid()}",
                     "started 0 s ago", "last heartbeat 0 s ago",
                     f"wait, or remove {lock_path(config)} if that run is dead"):
            assert part in message, (part, message)
        assert lock_owner(lock_path(config))["run_id"] == "run-a"  # the refused run left it alone
    assert not lock_path(config).exists()


def test_fresh_lock_of_another_host_is_respected(tmp_path):
    config = lock_config(tmp_path)
    plant_lock(lock_path(config), "remote-run", host="another-host", pid=dead_pid(), silent_for=30)
    with pytest.raises(LockError, match=r"build run remote-run \(host another-host, pid \d+\), started 90 s ago, "
                                        r"last heartbeat 30 s ago"):
        with warehouse_lock(config, "run-b", "build"):
            pass
    assert lock_owner(lock_path(config))["run_id"] == "remote-run"


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    config = lock_config(tmp_path, stale=600)
    plant_lock(lock_path(config), "silent-run", host="another-host", pid=1, silent_for=601)
    with warehouse_lock(config, "run-b", "build"):
        assert lock_owner(lock_path(config))["run_id"] == "run-b"
    assert not lock_path(config).exists()
    warning = next(r.getMessage() for r in caplog.records if r.name == "etl.warehouse.lock")
    assert "taking over the lock of build run silent-run (host another-host, pid 1)" in warning
    assert "last heartbeat is 10 min old (stale after 10 min)" in warning


def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    config = lock_config(tmp_path)
    pid = dead_pid()
    plant_lock(lock_path(config), "killed-run", pid=pid, silent_for=1)
    with warehouse_lock(config, "run-b", "build"):
        assert lock_owner(lock_path(config))["run_id"] == "run-b"
    assert f"taking over the lock of build run killed-run (host {HOST}, pid {pid}): process {pid} no longer " \
           "runs on this host" in caplog.text


def test_lock_is_released_when_the_run_raises(tmp_path):
    config = lock_config(tmp_path)
    with pytest.raises(RuntimeError, match="the engine died"):
        with warehouse_lock(config, "run-a", "build"):
            raise RuntimeError("the engine died")
    assert not lock_path(config).exists()
    with warehouse_lock(config, "run-b", "build"):  # and the next run gets it
        assert lock_owner(lock_path(config))["run_id"] == "run-b"


def test_a_lock_that_changed_hands_is_not_removed_by_its_former_owner(tmp_path, caplog):
    config = lock_config(tmp_path)
    with warehouse_lock(config, "run-a", "build"):
        plant_lock(lock_path(config), "run-b", host="another-host")  # e.g. taken over as stale meanwhile
    assert lock_owner(lock_path(config))["run_id"] == "run-b"
    assert "not removing the lock: it no longer belongs to build run run-a" in caplog.text


def test_heartbeat_keeps_a_long_run_from_going_stale(tmp_path, caplog):
    config = lock_config(tmp_path, stale=1)  # beats every 1/3 s
    with warehouse_lock(config, "long-run", "build"):
        time.sleep(2.5)  # well past the stale age
        held = lock_owner(lock_path(config))
        beat = datetime.fromisoformat(held["heartbeat_at"])
        assert beat > datetime.fromisoformat(held["acquired_at"]) + timedelta(seconds=1.5)
        with pytest.raises(LockError, match="locked by build run long-run"):
            with warehouse_lock(config, "impatient-run", "build"):
                pass
    assert "taking over" not in caplog.text


def test_heartbeat_notices_a_takeover_and_stops(tmp_path, caplog):
    config = lock_config(tmp_path, stale=1)
    with warehouse_lock(config, "run-a", "build"):
        plant_lock(lock_path(config), "run-b", host="another-host")
        time.sleep(1)  # several beats: none may overwrite run-b's lock
        assert lock_owner(lock_path(config))["run_id"] == "run-b"
    assert "another run took over this run's lock (build run run-a" in caplog.text
    assert "not removing the lock: another run took it over" in caplog.text
    assert lock_owner(lock_path(config))["run_id"] == "run-b"


def test_unreadable_lock_is_respected_while_fresh_and_taken_over_when_old(tmp_path, caplog):
    config = lock_config(tmp_path, stale=600)
    path = lock_path(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # its writer died between creating and writing it
    with pytest.raises(LockError, match=r"locked by a run whose lock cannot be read yet \(0 s old\): wait, or remove"):
        with warehouse_lock(config, "run-b", "build"):
            pass
    old = time.time() - 601
    os.utime(path, (old, old))
    with warehouse_lock(config, "run-b", "build"):
        assert lock_owner(path)["run_id"] == "run-b"
    assert "taking over an unreadable lock: it is 10 min old (stale after 10 min)" in caplog.text


def test_racing_takeovers_of_one_stale_lock_have_one_winner(tmp_path):
    config = lock_config(tmp_path)
    plant_lock(lock_path(config), "silent-run", host="another-host", silent_for=3600)
    store = lock_store(config)
    results: dict[str, object] = {}
    start = threading.Barrier(8)

    def contend(run_id: str) -> None:
        now = datetime.now(timezone.utc)
        owner = LockOwner(run_id, "build", HOST, os.getpid(), now, now)
        start.wait()
        try:
            acquire(store, owner, config.warehouse, config.lock_stale_seconds)
            results[run_id] = "won"
        except LockError as exc:
            results[run_id] = str(exc)

    threads = [threading.Thread(target=contend, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run for run, result in results.items() if result == "won"]
    assert len(winners) == 1, results
    assert lock_owner(lock_path(config))["run_id"] == winners[0]
    for run, result in results.items():
        if run not in winners:
            assert f"locked by build run {winners[0]}" in result


def test_lock_stale_seconds_is_validated(tmp_path):
    assert lock_config(tmp_path).lock_stale_seconds == 600
    assert parse_config({"warehouse": "wh", "sources": {"s": {"base": "b", "joined": "j"}}},
                        base_dir=tmp_path).lock_stale_seconds == 600
    for bad in (0, -5, "soon", True, 1.5):
        with pytest.raises(ConfigError, match=r"^lock_stale_seconds: must be a positive whole number"):
            lock_config(tmp_path, stale=bad)
    config_file = tmp_path / "c.yaml"
    config_file.write_text("warehouse: wh\nsources: {s: {base: b, joined: j}}\n")
    assert load_config(config_file, environ={"LAION_ETL__LOCK_STALE_SECONDS": "120"}).lock_stale_seconds == 120


# ---------------------------------------------------------------------------------------------
# unit level: s3:// warehouse (SeaweedFS honours IfNoneMatch / IfMatch on PutObject)


def ensure_bucket(client, name: str) -> None:
    """One bucket for this module's S3 tests, whichever runs first."""
    try:
        client.create_bucket(Bucket=name)
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass


def test_lock_on_object_storage(s3_env, tmp_path, caplog):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env)
    ensure_bucket(client, "locks")
    config = lock_config(tmp_path, warehouse="s3://locks/warehouse", endpoint=s3_env)
    key = "warehouse/meta/_lock.json"

    def owner_of_object() -> str:
        return json.loads(client.get_object(Bucket="locks", Key=key)["Body"].read())["run_id"]

    with warehouse_lock(config, "run-a", "build"):
        assert owner_of_object() == "run-a"
        with pytest.raises(LockError, match=r"warehouse s3://locks/warehouse is locked by build run run-a .*"
                                            r"wait, or remove s3://locks/warehouse/meta/_lock.json if that run is dead"):
            with warehouse_lock(config, "run-b", "build"):
                pass
        assert owner_of_object() == "run-a"
    assert "Contents" not in client.list_objects_v2(Bucket="locks", Prefix=key)

    stale = LockOwner("silent-run", "build", "another-host", 1, datetime(2020, 1, 1, tzinfo=timezone.utc),
                      datetime(2020, 1, 1, tzinfo=timezone.utc))
    client.put_object(Bucket="locks", Key=key, Body=stale.to_json())
    with warehouse_lock(config, "run-c", "build"):
        assert owner_of_object() == "run-c"
        # A compare-and-swap against a version that is no longer current changes nothing.
        assert lock_store(config).swap('"0123456789abcdef0123456789abcdef"', b"{}") is None
        assert owner_of_object() == "run-c"
    assert "taking over the lock of build run silent-run (host another-host, pid 1)" in caplog.text
    assert "Contents" not in client.list_objects_v2(Bucket="locks", Prefix=key)


def test_lock_on_object_storage_is_not_removed_once_it_changed_hands(s3_env, tmp_path, caplog):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_env)
    ensure_bucket(client, "locks")
    config = lock_config(tmp_path, warehouse="s3://locks/handover", endpoint=s3_env)
    key = "handover/meta/_lock.json"
    other = LockOwner("run-b", "build", "another-host", 1, datetime.now(timezone.utc), datetime.now(timezone.utc))
    with warehouse_lock(config, "run-a", "build"):
        client.put_object(Bucket="locks", Key=key, Body=other.to_json())
    assert json.loads(client.get_object(Bucket="locks", Key=key)["Body"].read())["run_id"] == "run-b"
    assert "not removing the lock: it no longer belongs to build run run-a" in caplog.text


# ---------------------------------------------------------------------------------------------
# end to end: two builds at once, and a build killed while holding the lock

WAREHOUSE_TABLES = [(t.layer, t.name) for t in load_project().tables]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency")
    write_planted_sources(root / "sources")
    return root


def start_build(config: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "etl.cli", "build", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """(exit code, stderr)."""
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("a build did not finish")
    return process.returncode, err


@pytest.fixture(scope="module")
def single_build(planted):
    process = start_build(write_planted_config(planted, planted / "single", name="single"))
    code, err = finish(process)
    assert code == 0, err
    return planted / "single"


def assert_same_tables(actual: Path, expected: Path) -> None:
    for layer, name in WAREHOUSE_TABLES:
        assert_same_rows(read_delta(actual / layer / name), read_delta(expected / layer / name))


def test_two_builds_at_once_one_builds_the_other_fails_fast(planted, single_build):
    config = write_planted_config(planted, planted / "contested", name="contested")
    first, second = start_build(config), start_build(config)
    ended = {}
    # Poll both: whichever ends first ends while the other still runs.
    while len(ended) < 2:
        for name, process in (("first", first), ("second", second)):
            if name not in ended and process.poll() is not None:
                ended[name] = (process.returncode, process.stderr.read(), time.monotonic())
        time.sleep(0.05)
    codes = sorted(code for code, _, _ in ended.values())
    assert codes == [0, 1], {name: (code, err[-2000:]) for name, (code, err, _) in ended.items()}
    (_, loser_err, loser_end), = [v for v in ended.values() if v[0] == 1]
    (_, _, winner_end), = [v for v in ended.values() if v[0] == 0]
    assert loser_end < winner_end  # it did not wait for the winner
    failure = one_line(loser_err)
    assert failure.startswith("laion-etl: failed:")
    assert f"warehouse {planted / 'contested'} is locked by build run " in failure
    assert f"wait, or remove {planted / 'contested' / 'meta' / LOCK_FILE} if that run is dead" in failure
    assert_same_tables(planted / "contested", single_build)
    recorded = [(r["command"], r["status"]) for r in runs(planted / "contested")]
    assert recorded == [("build", "succeeded")]  # the loser recorded nothing
    assert not (planted / "contested" / "meta" / LOCK_FILE).exists()


def test_lock_left_by_a_killed_build_is_taken_over_by_the_next(planted, single_build):
    config = write_planted_config(planted, planted / "killed", name="killed")
    lock = planted / "killed" / "meta" / LOCK_FILE
    victim = start_build(config)
    deadline = time.monotonic() + 300
    # Killed with its work under way: once it has committed to some table (its run record at least).
    while not any((planted / "killed").glob("*/*/_delta_log/*.json")):
        assert victim.poll() is None, victim.stderr.read()
        assert time.monotonic() < deadline, "the build never committed anything"
        time.sleep(0.01)
    assert lock.exists()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    left = lock_owner(lock)
    assert left["pid"] == victim.pid

    code, err = finish(start_build(config))
    assert code == 0, err
    assert (f"taking over the lock of build run {left['run_id']} (host {HOST}, pid {victim.pid}): "
            f"process {victim.pid} no longer runs on this host") in err
    assert_same_tables(planted / "killed", single_build)
    assert not lock.exists()
