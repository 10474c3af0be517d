#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, JVM and end-to-end tests included.
# Each test has a deadline (setup.cfg `timeout`, enforced even when a thread is stuck in C:
# tests/pytest_hang_watchdog.py); the whole suite has one too (LAION_TEST_SUITE_TIMEOUT, 55m), after
# which pytest gets SIGTERM, prints every thread's stack and dies, so CI fails well before its limit
# (90 minutes, setup included; the suite took 19-22 minutes on a 2-core machine since 91c5707, 27-43 before).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
# Two workers (pytest-xdist), whole files each so module fixtures are built once: the JVM tests
# mostly wait on the JVM's scheduling, which leaves a core for the rest (LAION_TEST_WORKERS=0: one process).
timeout --kill-after=60 "${LAION_TEST_SUITE_TIMEOUT:-55m}" .venv/bin/python -m pytest \
  -n "${LAION_TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "test.sh: the suite ran past its deadline (${LAION_TEST_SUITE_TIMEOUT:-55m}) and was stopped" >&2
  exit 1
fi
if [ "$status" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
