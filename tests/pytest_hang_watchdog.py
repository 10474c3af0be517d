"""A pytest plugin that makes a stuck test fail within minutes, whatever it is stuck in.

pytest-timeout's signal method raises in the main thread, which works only while Python code
runs there. A test whose main thread waits inside C (a gRPC call on the in-process Sail server,
a regex holding the GIL) never sees the signal, and the suite runs into CI's limit. So each test
also arms faulthandler's watchdog: a C thread that needs no GIL, dumps every thread's stack and
ends the process, `LAION_TEST_WATCHDOG_GRACE` seconds (default 60) after the test's own timeout.
A SIGTERM (the whole-suite deadline in scripts/test.sh) dumps every stack before the process dies.
"""

from __future__ import annotations

import faulthandler
import os
import signal

import pytest

DEFAULT_GRACE_SECONDS = 60.0


_stderr = None  # the terminal's stderr, not pytest's capture file (which dies with the process)


def pytest_configure(config) -> None:
    global _stderr
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)
    try:
        _stderr = os.fdopen(os.dup(2), "w")
    finally:
        if capture is not None:
            capture.resume_global_capture()
    faulthandler.register(signal.SIGTERM, file=_stderr, all_threads=True, chain=True)


def _test_timeout(item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    return float(item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    timeout = _test_timeout(item)
    if timeout > 0:
        grace = float(os.environ.get("LAION_TEST_WATCHDOG_GRACE", DEFAULT_GRACE_SECONDS))
        faulthandler.dump_traceback_later(timeout + grace, exit=True, file=_stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
