"""Ctrl-C and SIGTERM stop a run within seconds, and a second Ctrl-C at once.

The first signal marks the run interrupted, cancels the engine's work (`abort`: the Sail server
is killed, JVM jobs are cancelled) and raises `RunInterrupted` in the main thread; the build then
rolls back a table it had written but not published, releases the lock and records the run as
`interrupted`. The second signal ends the process at once (exit 130).

Python runs signal handlers only between bytecodes of the main thread, and a main thread waiting
in C for the engine (a gRPC call) never gets there: a run once ignored Ctrl-C for 25 minutes. So
the C-level handler's wakeup byte goes to a pipe that a watcher thread reads, and the watcher
cancels the engine; the waiting call then fails and the main thread reaches the Python handler.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


class RunInterrupted(BaseException):
    """The run was asked to stop by a signal. A BaseException, as KeyboardInterrupt is: libraries'
    `except Exception` (pyspark's retry loop) must not turn it into an engine error."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


_requested: Optional[int] = None  # the first stop signal received inside `interruptible`


def interruption(error: BaseException) -> BaseException:
    """`error` as the run should report it: an engine error caused by the signal's abort is the
    interruption (the handler's own exception may have been caught and rewrapped in a library)."""
    if _requested is not None and not isinstance(error, RunInterrupted):
        return RunInterrupted(_requested)
    return error


class _Watcher(threading.Thread):
    def __init__(self, read_fd: int, abort: Callable[[], None]) -> None:
        super().__init__(name="run-signal-watcher", daemon=True)
        self.read_fd, self.abort = read_fd, abort
        self.signals_seen = 0
        self.closing = threading.Event()

    def run(self) -> None:
        while not self.closing.is_set():
            ready, _, _ = select.select([self.read_fd], [], [], 0.5)
            if not ready:
                continue
            try:
                received = os.read(self.read_fd, 64)
            except OSError:
                return
            for signum in received:
                if signum not in STOP_SIGNALS:
                    continue
                self.signals_seen += 1
                if self.signals_seen == 1:
                    log.warning("%s: stopping the run (again to exit at once)", signal.Signals(signum).name)
                    self.abort()
                else:
                    print(f"laion-etl: {signal.Signals(signum).name} again: exiting now", file=sys.stderr, flush=True)
                    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interruptible(abort: Callable[[], None]) -> Iterator[None]:
    """Within the `with`, SIGINT/SIGTERM stop the run as the module says. Outside the main thread
    (a run started from a worker thread, where signals cannot be caught) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    def raise_once(signum, frame) -> None:
        global _requested
        if _requested is None:
            _requested = signum
            raise RunInterrupted(signum)

    global _requested
    _requested = None
    previous_handlers = {s: signal.signal(s, raise_once) for s in STOP_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = _Watcher(read_fd, abort)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        watcher.closing.set()
        watcher.join(2)
        os.close(read_fd)
        os.close(write_fd)
