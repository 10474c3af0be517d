#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, JVM and end-to-end tests included.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" = 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
