#!/usr/bin/env bash
# The project's test command (README): unit tests, then integration tests on real local
# clusters (etcd + Patroni + PostgreSQL + Citus on loopback). Citus tests skip where absent.
set -euo pipefail
cd "$(dirname "$0")/.."
exec uv run --frozen pytest -p no:cacheprovider "$@"
