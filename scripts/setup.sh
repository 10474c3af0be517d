#!/usr/bin/env bash
# Set up a fresh machine: the project's virtualenv (.venv) and, with --test, what the tests need:
# Java 17 for the JVM engine and img2dataset in its own virtualenv (it pins old libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install --quiet -e '.[test]'
else
  .venv/bin/pip install --quiet -e .
fi

if [ "${1:-}" = "--test" ]; then
  APT_UPDATED=
  apt_install() {  # one `apt-get update` for all the system packages installed below
    if [ -z "$APT_UPDATED" ]; then apt-get update -qq && APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
  if ! command -v java >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing Java 17 for the JVM engine tests"
      apt_install openjdk-17-jre-headless
    else
      echo "setup: java not found and cannot install it here; the JVM tests will skip (they fail on CI)" >&2
    fi
  fi
  if command -v java >/dev/null 2>&1; then
    echo "setup: fetching the JVM engine's jars (delta-spark, hadoop-aws) into Ivy's cache"
    .venv/bin/python -m etl.engine.jvm_packages >.venv/jvm-packages.log 2>&1 \
      || { echo "setup: fetching the jars failed; see .venv/jvm-packages.log" >&2; exit 1; }
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing Chromium (Debian's chromium) for the HTML report test"
      apt_install chromium
    else
      echo "setup: chromium not found and cannot install it here; the report's browser test will skip (it fails on CI)" >&2
    fi
  fi
  if [ ! -x .venv-img2dataset/bin/img2dataset ]; then
    echo "setup: installing img2dataset 1.47.0 in .venv-img2dataset"
    "$PYTHON" -m venv .venv-img2dataset
    .venv-img2dataset/bin/pip install --quiet --upgrade pip
    .venv-img2dataset/bin/pip install --quiet 'img2dataset==1.47.0' 'pandas<3'
  fi
fi
