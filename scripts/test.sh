#!/usr/bin/env bash
# The project's test command (README): lint and format checks, then unit tests, then
# integration tests on real local clusters (etcd + Patroni + PostgreSQL + Citus on loopback).
# Citus tests skip where the extension is absent. Arguments go to pytest (and skip the lint
# when they name tests, so `scripts/test.sh tests/unit/test_spec.py` stays quick).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" = 0 ]; then
  uv run --frozen ruff check --quiet .
  uv run --frozen ruff format --check --quiet .
fi
exec uv run --frozen pytest -p no:cacheprovider "$@"
