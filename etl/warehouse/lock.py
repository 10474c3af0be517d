"""One run at a time per warehouse: `build` and `dq` hold a lock object at `<warehouse>/meta/_lock.json`.

Two rebuilds of one warehouse would overwrite each other's tables (concurrent Delta overwrites
fail with commit errors or interleave), and one run's publish gate could restore a version the
other run wrote. So a run takes the lock before its session starts; a second run fails fast with
a `LockError` naming the holder (run id, command, host, pid, age) and what to do.

The lock is created atomically: `os.open(O_CREAT | O_EXCL)` on a local warehouse, a conditional
`put_object(IfNoneMatch="*")` on `s3://`. While the run lasts a daemon thread refreshes its
`heartbeat_at`. A lock whose heartbeat is older than `lock_stale_seconds` (the config key), or
whose owner is a process on this host that no longer runs (a SIGKILLed build), is taken over
with a warning naming the old owner. Takeover, heartbeat and release are compare-and-swaps on
the lock as last read (S3: `IfMatch` on its ETag; local: under an flock of `_lock.guard`), so two
runs racing for a stale lock cannot both win, and a run never removes a lock it no longer owns.

Limits: staleness compares heartbeats written by other hosts with this host's clock, so clocks
must agree to well within `lock_stale_seconds`; the dead-process check trusts host names to be
unique (containers with a shared host name need the stale age instead).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Iterator, Optional, Protocol

from etl.project.config import Config, is_remote
from etl.s3_settings import S3Settings

log = logging.getLogger(__name__)

LOCK_LAYER = "meta"  # beside the run bookkeeping tables (etl.warehouse.meta.META_LAYER)
LOCK_FILE = "_lock.json"
GUARD_FILE = "_lock.guard"  # local warehouses: flocked while a run changes the lock
HEARTBEAT_SECONDS = 10.0
# A heartbeat can be late (a busy machine, a slow object store): the lock goes stale only after
# several missed beats, so a short stale age shortens the beat instead.
BEATS_PER_STALE_AGE = 3
ACQUIRE_ATTEMPTS = 3  # a lost race (the lock vanished or changed while judged) re-reads it


class LockError(RuntimeError):
    """The warehouse is locked by another run; the message is one line: who holds it, what to do."""


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    command: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime

    def to_json(self) -> bytes:
        return (json.dumps({
            "run_id": self.run_id, "command": self.command, "host": self.host, "pid": self.pid,
            "acquired_at": self.acquired_at.isoformat(), "heartbeat_at": self.heartbeat_at.isoformat(),
        }, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, body: bytes) -> Optional["LockOwner"]:
        """None for a lock that cannot be read (e.g. its writer died between creating and writing it)."""
        try:
            data = json.loads(body)
            return cls(run_id=str(data["run_id"]), command=str(data["command"]), host=str(data["host"]),
                       pid=int(data["pid"]), acquired_at=_utc(data["acquired_at"]),
                       heartbeat_at=_utc(data["heartbeat_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.command} run {self.run_id} (host {self.host}, pid {self.pid})"


@dataclass(frozen=True)
class LockSnapshot:
    body: bytes
    token: object  # what a compare-and-swap compares: local, the body; S3, the ETag
    modified: datetime


class LockStore(Protocol):
    location: str

    def create(self, body: bytes) -> Optional[object]: ...  # token, or None when a lock exists
    def read(self) -> Optional[LockSnapshot]: ...
    def swap(self, expected: object, body: bytes) -> Optional[object]: ...  # compare-and-swap; None: changed
    def remove(self, expected: object) -> bool: ...


def lock_location(config: Config) -> str:
    return config.table_path(LOCK_LAYER, LOCK_FILE)


def lock_store(config: Config) -> LockStore:
    location = lock_location(config)
    if location.startswith("s3://"):
        return S3LockStore(location, S3Settings.from_config(config))
    if is_remote(location):
        raise LockError(f"warehouse {config.warehouse}: cannot lock a warehouse on this storage "
                        "(local folders and s3:// only)")
    return LocalLockStore(location)


@contextmanager
def warehouse_lock(config: Config, run_id: str, command: str) -> Iterator[LockOwner]:
    """Hold the warehouse's lock for the body of the `with`; LockError when another run holds it."""
    store = lock_store(config)
    now = _now()
    owner = LockOwner(run_id=run_id, command=command, host=socket.gethostname(), pid=os.getpid(),
                      acquired_at=now, heartbeat_at=now)
    token = acquire(store, owner, config.warehouse, config.lock_stale_seconds)
    heartbeat = Heartbeat(store, owner, token, min(HEARTBEAT_SECONDS, config.lock_stale_seconds / BEATS_PER_STALE_AGE))
    heartbeat.start()
    try:
        yield owner
    finally:
        heartbeat.stop()
        if heartbeat.lost:
            log.warning("%s: not removing the lock: another run took it over during %s", store.location,
                        owner.describe())
        elif not store.remove(heartbeat.token):
            log.warning("%s: not removing the lock: it no longer belongs to %s", store.location, owner.describe())


def acquire(store: LockStore, owner: LockOwner, warehouse: str, stale_seconds: float) -> object:
    """Create the lock, or take over a stale or dead one; the token of our lock, or LockError."""
    body = owner.to_json()
    for _ in range(ACQUIRE_ATTEMPTS):
        token = store.create(body)
        if token is not None:
            return token
        snapshot = store.read()
        if snapshot is None:  # released between our create and our read
            continue
        holder = LockOwner.from_json(snapshot.body)
        reason = stale_reason(holder, snapshot, stale_seconds, _now())
        if reason is None:
            raise LockError(held_message(warehouse, store.location, holder, snapshot))
        who = f"the lock of {holder.describe()}" if holder is not None else "an unreadable lock"
        log.warning("warehouse %s: taking over %s: %s", warehouse, who, reason)
        token = store.swap(snapshot.token, body)
        if token is not None:
            return token
    raise LockError(f"warehouse {warehouse}: other runs kept taking the lock {store.location} while this one "
                    "tried to; try again")


def stale_reason(holder: Optional[LockOwner], snapshot: LockSnapshot, stale_seconds: float,
                 now: datetime) -> Optional[str]:
    """Why the lock may be taken over, or None while its owner may still be running."""
    if holder is None:
        age = (now - snapshot.modified).total_seconds()
        if age > stale_seconds:
            return f"it is {_duration(age)} old (stale after {_duration(stale_seconds)})"
        return None
    silence = (now - holder.heartbeat_at).total_seconds()
    if silence > stale_seconds:
        return f"its last heartbeat is {_duration(silence)} old (stale after {_duration(stale_seconds)})"
    if holder.host == socket.gethostname() and not pid_running(holder.pid):
        return f"process {holder.pid} no longer runs on this host"
    return None


def held_message(warehouse: str, location: str, holder: Optional[LockOwner], snapshot: LockSnapshot) -> str:
    now = _now()
    if holder is None:
        return (f"warehouse {warehouse} is locked by a run whose lock cannot be read yet "
                f"({_duration((now - snapshot.modified).total_seconds())} old): "
                f"wait, or remove {location} if that run is dead")
    return (f"warehouse {warehouse} is locked by {holder.describe()}, started "
            f"{_duration((now - holder.acquired_at).total_seconds())} ago, last heartbeat "
            f"{_duration((now - holder.heartbeat_at).total_seconds())} ago: "
            f"wait, or remove {location} if that run is dead")


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class Heartbeat(threading.Thread):
    """Refreshes the lock's `heartbeat_at` until stopped; notices when another run took the lock."""

    def __init__(self, store: LockStore, owner: LockOwner, token: object, interval: float) -> None:
        super().__init__(name=f"lock-heartbeat-{owner.run_id}", daemon=True)
        self.store, self.owner, self.token, self.interval = store, owner, token, interval
        self.lost = False
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            beat = replace(self.owner, heartbeat_at=_now())
            try:
                token = self.store.swap(self.token, beat.to_json())
            except Exception as exc:  # a transient storage error: the next beat tries again
                log.warning("%s: could not refresh the lock's heartbeat: %s", self.store.location,
                            " ".join(str(exc).split()))
                continue
            if token is None:
                self.lost = True
                log.error("%s: another run took over this run's lock (%s); stop it or let it finish, "
                          "the two may overwrite each other's tables", self.store.location, self.owner.describe())
                return
            self.token = token

    def stop(self) -> None:
        self._stopped.set()
        self.join()


class LocalLockStore:
    """The lock as a file. Every compare-and-change holds an flock on a guard file beside it, so
    judging the lock and replacing it is one step for every run on this machine; the kernel drops
    the flock of a killed process. The lock file itself is only ever created with O_EXCL or
    replaced in one rename, so it never disappears under a run trying to create it."""

    def __init__(self, path: str) -> None:
        self.location = path
        self._guard_path = os.path.join(os.path.dirname(path), GUARD_FILE)

    def create(self, body: bytes) -> Optional[bytes]:
        os.makedirs(os.path.dirname(self.location), exist_ok=True)
        try:
            fd = os.open(self.location, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        return body

    def read(self) -> Optional[LockSnapshot]:
        try:
            with open(self.location, "rb") as handle:
                body = handle.read()
                modified = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return LockSnapshot(body=body, token=body, modified=datetime.fromtimestamp(modified, timezone.utc))

    def swap(self, expected: bytes, body: bytes) -> Optional[bytes]:
        with self._guard():
            current = self.read()
            if current is None or current.token != expected:
                return None
            partial = f"{self.location}.{secrets.token_hex(4)}.partial"
            with open(partial, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.location)
            return body

    def remove(self, expected: bytes) -> bool:
        with self._guard():
            current = self.read()
            if current is None or current.token != expected:
                return False
            os.unlink(self.location)
            return True

    @contextmanager
    def _guard(self) -> Iterator[None]:
        # Never deleted: a run waiting on a removed guard file would lock a different file.
        with open(self._guard_path, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield


class S3LockStore:
    """The lock as one object; conditional requests make create, takeover and release atomic."""

    def __init__(self, uri: str, settings: S3Settings) -> None:
        import boto3

        self.location = uri
        self.bucket, _, self.key = uri[len("s3://"):].partition("/")
        self.client = boto3.client("s3", **settings.boto3_client_kwargs())

    def create(self, body: bytes) -> Optional[str]:
        token = self._put(body, IfNoneMatch="*")
        if token is None:
            # A retried create whose first attempt landed meets its own lock: that is still ours.
            current = self.read()
            if current is not None and current.body == body:
                return current.token
        return token

    def read(self) -> Optional[LockSnapshot]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return LockSnapshot(body=got["Body"].read(), token=got["ETag"], modified=got["LastModified"])

    def swap(self, expected: str, body: bytes) -> Optional[str]:
        return self._put(body, IfMatch=expected)

    def remove(self, expected: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=expected)
        except ClientError as exc:
            if _error_code(exc) in _CONDITION_FAILED + ("NoSuchKey",):
                return False
            raise
        return True

    def _put(self, body: bytes, **condition: str) -> Optional[str]:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                          ContentType="application/json", **condition)["ETag"]
        except ClientError as exc:
            code = _error_code(exc)
            if code in _CONDITION_FAILED or (code == "NoSuchKey" and "IfMatch" in condition):
                return None
            raise


# The condition did not hold (412), or a concurrent conditional write to the key won (409).
_CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _error_code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _utc(text: str) -> datetime:
    """A time from the lock; one without a zone (edited by hand?) is taken as UTC, as written."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
