"""A parameter that needs a restart, applied by `cluster restart --rolling --pending`: every
member restarted once while every group stays led (one switchover per group, never an
outage)."""

from __future__ import annotations

import time

import psycopg

from ..cluster.rolling import rolling_restart
from ..cluster.topology import ClusterBackend
from ..waiting import until
from .injector import FaultInjector
from .ready import MID_FAULT
from .scenario import FaultRun, Scenario

RESTART_PARAMETER = "max_connections"  # takes effect only at a restart


def rolling_restart_scenario(c: ClusterBackend, f: FaultInjector) -> FaultRun:
    """`cluster restart --rolling --pending` after a change of max_connections in every
    group: each member restarted once, every group led throughout."""
    current = int(f.spec.postgresql.parameters.get(RESTART_PARAMETER, 100))
    with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
        now = int(conn.execute(f"SHOW {RESTART_PARAMETER}").fetchone()[0])
    target = current + 10 if now == current else current  # alternate, so reruns change it
    groups = c.status(with_shards=False).groups
    t0 = time.monotonic()
    for g in groups:
        f.set_group_config(g, {"postgresql": {"parameters": {RESTART_PARAMETER: target}}})
    until(
        lambda: c.status(with_shards=False),
        60,
        what=f"every member pending a restart for {RESTART_PARAMETER}",
        done=lambda t: all(m.pending_restart for m in t.members),
        ignore=MID_FAULT,
    )
    done = rolling_restart(c, pending_only=True)
    return FaultRun(
        t0, time.monotonic(), f"{RESTART_PARAMETER} {now} -> {target}: {len(done)} restarted"
    )


SCENARIOS = (
    Scenario(
        "rolling-restart",
        f"{RESTART_PARAMETER} changed in every group, then `cluster restart --rolling --pending`",
        rolling_restart_scenario,
    ),
)

__all__ = ["RESTART_PARAMETER", "SCENARIOS", "rolling_restart_scenario"]
