#!/usr/bin/env bash
# Set up .venv (when missing or out of date) and run a project task.
#   bash dev.sh demo [demo options]    classify the shipped sample with the released model
#   bash dev.sh train-demo [options]   train the quick preset on the shipped sample
#   bash dev.sh test [pytest options]  run the test suite
#   bash dev.sh setup                  only create/update .venv
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

setup() {
  if [ ! -x .venv/bin/pip ]; then
    rm -rf .venv
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "dev.sh: python3 -m venv failed; installing python3-venv with apt-get" >&2
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        "$PYTHON" -m venv .venv
      else
        echo "dev.sh: '$PYTHON -m venv' failed: install python3-venv (Debian/Ubuntu) and retry" >&2
        exit 1
      fi
    fi
  fi
  local stamp=.venv/.all_tf-installed
  if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch "$stamp"
  fi
}

task=${1:-}
shift || true
case "$task" in
  setup) setup ;;
  demo) setup; exec .venv/bin/python -m all_tf.demo "$@" ;;
  train-demo) setup; exec .venv/bin/python -m all_tf.train "$@" ;;
  test) setup; exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash dev.sh {demo|train-demo|test|setup} [args...]" >&2; exit 2 ;;
esac
