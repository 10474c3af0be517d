"""Stalled engine calls end the step that made them, within minutes, instead of hanging the build.

A step (a table's write, its checks, an export) runs inside `watchdog.busy("<table>: <step>")`.
While one is running, a thread samples the CPU time of this process and of the engine's server:
when neither has moved for `stall_seconds`, the engine is taken to have stopped answering and its
server is killed, so the call waiting on it fails at once; `busy` turns that failure into an
`EngineStalled` error naming the step and how long nothing happened. Should the step still not
end (a thread blocked on a lock in this process, not on the engine), `on_stuck` is called after
`STUCK_AFTER_ABORT_SECONDS`: the build's last resort is to print every stack and exit 1. Idle time outside a step
(a prompt waiting for its user) is never a stall. Time spent waiting on object-store retries is
idle too, so the default (300 s) is longer than their longest backoff (3 minutes).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)

DEFAULT_STALL_SECONDS = 300.0
STUCK_AFTER_ABORT_SECONDS = 60.0
_CPU_EPSILON = 0.05  # seconds of CPU that count as activity between two samples


class EngineStalled(RuntimeError):
    """An engine call made no progress for too long; the engine was stopped."""


class StallWatchdog:
    """Watches `cpu_seconds()` (engine + this process) while a step runs; calls `abort()` on a stall."""

    def __init__(self, cpu_seconds: Callable[[], float], abort: Callable[[], None],
                 stall_seconds: float = DEFAULT_STALL_SECONDS, poll_seconds: Optional[float] = None,
                 on_stuck: Optional[Callable[[str], None]] = None,
                 stuck_after_abort_seconds: float = STUCK_AFTER_ABORT_SECONDS) -> None:
        self._cpu_seconds = cpu_seconds
        self._abort = abort
        self._on_stuck = on_stuck
        self._stuck_after = stuck_after_abort_seconds
        self.stall_seconds = stall_seconds
        self._poll = poll_seconds or max(0.2, min(5.0, stall_seconds / 10))
        self._lock = threading.Lock()
        self._step: Optional[str] = None
        self._stalled: Optional[str] = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="engine-stall-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def busy(self, step: str) -> Iterator[None]:
        with self._lock:
            outer, self._step = self._step, step
        try:
            yield
        except Exception as exc:
            if self._stalled:
                raise EngineStalled(self._stalled) from exc
            raise
        finally:
            with self._lock:
                self._step = outer
        if self._stalled:  # the kill landed after the step's last call returned
            raise EngineStalled(self._stalled)

    @property
    def stalled(self) -> Optional[str]:
        return self._stalled

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=self._poll * 2)

    def _watch(self) -> None:
        last_cpu, quiet_since = self._cpu_seconds(), time.monotonic()
        while not self._closed.wait(self._poll):
            cpu, now = self._cpu_seconds(), time.monotonic()
            with self._lock:
                step = self._step
            if step is None or cpu - last_cpu > _CPU_EPSILON:
                last_cpu, quiet_since = cpu, now
                continue
            if now - quiet_since >= self.stall_seconds and self._stalled is None:
                self._stalled = (f"{step}: the engine made no progress for {now - quiet_since:.0f} s "
                                 f"(stall limit {self.stall_seconds:.0f} s); it was stopped")
                log.error("%s", self._stalled)
                self._abort()
                self._await_step_end(step)
                return

    def _await_step_end(self, step: str) -> None:
        if self._closed.wait(self._stuck_after) or self._on_stuck is None:
            return
        with self._lock:
            still = self._step == step
        if still:
            self._on_stuck(f"{self._stalled}, and the step did not end {self._stuck_after:.0f} s later")
