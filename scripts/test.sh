#!/usr/bin/env bash
# Set up everything the tests need, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
status=0
.venv/bin/python -m pytest "$@" || status=$?
# 5: no test was collected (arguments that select none), which is no failure.
if (( status != 0 && status != 5 )); then
    exit "$status"
fi
