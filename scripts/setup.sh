#!/usr/bin/env bash
# Set up a fresh machine: the project's virtualenv (.venv) and, with --test, what the tests need:
# a JDK 17 for the JVM engine (and its compiled laion_hash) and img2dataset in its own virtualenv (it pins old libraries).
# One line per step; what pip, apt and Ivy print goes to .venv/setup.log, named when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=
if [ "${1:-}" = "--test" ]; then EXTRAS='[test]'; fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
LOG=.venv/setup.log
: >"$LOG"

step() {  # step DESCRIPTION COMMAND...: one line; the command's own output goes to the log
  local description=$1 started=$SECONDS
  shift
  printf 'setup: %s ... ' "$description"
  if "$@" >>"$LOG" 2>&1; then
    echo "done ($((SECONDS - started)) s)"
  else
    echo "failed"
    echo "setup: $description failed; the last lines of $LOG (the whole output is there):" >&2
    tail -n 15 "$LOG" >&2
    exit 1
  fi
}

# pip takes seconds even with nothing to do: install again only when the package's metadata or
# the extras asked for changed (an editable install picks up code changes by itself).
STAMP=.venv/installed-laion-etl
WANTED="$(cat setup.cfg setup.py | sha256sum | cut -c1-16) $EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ]; then
  step "upgrading pip" .venv/bin/pip install --upgrade pip
  step "installing laion-etl$EXTRAS and its dependencies into .venv (pip)" .venv/bin/pip install -e ".$EXTRAS"
  echo "$WANTED" >"$STAMP"
else
  echo "setup: .venv already has laion-etl$EXTRAS installed"
fi

if [ "${1:-}" = "--test" ]; then
  APT_UPDATED=
  apt_install() {  # one `apt-get update` for all the system packages installed below
    if [ -z "$APT_UPDATED" ]; then apt-get update -qq && APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  }
  can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
  if ! command -v javac >/dev/null 2>&1; then
    if can_apt; then
      step "installing the JDK 17 for the JVM engine and its laion_hash (apt)" apt_install openjdk-17-jdk-headless
    else
      echo "setup: javac not found and cannot install it here; JVM tests will skip or fail (they fail on CI)" >&2
    fi
  fi
  if command -v java >/dev/null 2>&1; then
    step "fetching the JVM engine's jars (delta-spark, hadoop-aws) into Ivy's cache" \
      .venv/bin/python -m etl.engine.jvm_packages
  fi
  if command -v javac >/dev/null 2>&1; then
    step "compiling the JVM laion_hash into ~/.cache/laion-etl (javac)" .venv/bin/python -m etl.engine.jvm_hash
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    if can_apt; then
      step "installing Chromium for the HTML report test (apt)" apt_install chromium
    else
      echo "setup: chromium not found and cannot install it here; the report's browser test will skip (it fails on CI)" >&2
    fi
  fi
  if [ ! -x .venv-img2dataset/bin/img2dataset ]; then
    step "creating .venv-img2dataset" "$PYTHON" -m venv .venv-img2dataset
    step "upgrading pip in .venv-img2dataset" .venv-img2dataset/bin/pip install --upgrade pip
    step "installing img2dataset 1.47.0 into .venv-img2dataset (pip)" \
      .venv-img2dataset/bin/pip install 'img2dataset==1.47.0' 'pandas<3'
  fi
fi
