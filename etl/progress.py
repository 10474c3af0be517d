"""Progress for long steps: a start line, a heartbeat while the engine works, an end line."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("etl")

HEARTBEAT_SECONDS = 15.0


class StepTimer:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def step(description: str, heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[StepTimer]:
    """Log `description`, then every `heartbeat` seconds until the block ends, then its time."""
    timer = StepTimer()
    log.info("%s ...", description)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat):
            log.info("%s ... still running (%.0f s)", description, timer.elapsed())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    outcome = "stopped"  # a block left by an exception (a failure, a signal) did not get done
    try:
        yield timer
        outcome = "done"
    finally:
        done.set()
        thread.join()
        timer.seconds = timer.elapsed()
        log.info("%s %s after %.1f s" if outcome == "stopped" else "%s %s in %.1f s", description, outcome,
                 timer.seconds)


@contextmanager
def timed(description: str) -> Iterator[StepTimer]:
    """Log `description in N s` when the block ends (not when it fails): a part of a step whose cost
    is wanted apart, with no start line or heartbeat (the bench adds up the checks' and quarantine's)."""
    timer = StepTimer()
    yield timer
    log.info("%s in %.1f s", description, timer.elapsed())
