#!/usr/bin/env bash
# The project's test command (README): installs the test and bench tools on its first run
# (`bootstrap.sh --dev`: idempotent, seconds once everything is there), then lint and format
# checks, then unit tests, then integration tests on real local clusters (etcd + Patroni +
# PostgreSQL + Citus on loopback) and the k8s tests on a real control plane. Citus tests skip
# where the extension is absent. Arguments go to pytest (and skip the lint when they name
# tests, so `scripts/test.sh tests/unit/test_spec.py` stays quick). The whole suite runs on two
# pytest-xdist workers (tests/conftest.py says how the tests are grouped); the 30 slowest tests
# are printed at the end: CI's budget is watched test by test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --dev --citus-optional
workers=()
if [ "$#" = 0 ]; then
  uv run --frozen --all-groups ruff check --quiet .
  uv run --frozen --all-groups ruff format --check --quiet .
  workers=(-n "${CITUS_PIPELINE_TEST_WORKERS:-2}" --dist loadfile)
fi
exec uv run --frozen --all-groups pytest -p no:cacheprovider --durations=30 "${workers[@]}" "$@"
