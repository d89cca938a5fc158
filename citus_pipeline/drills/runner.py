"""One drill run: a writer through the coordinator, the fault, the cluster whole again, the
check that every acknowledged write is stored exactly once.

The writer inserts single rows with increasing ids (`WriteProbe`); the scenario breaks one
thing and ends the fault; the runner waits until the cluster is whole again and reports, per
scenario (an :class:`Outcome`):

* ``lost``: acknowledged ids the table does not hold (must be 0), ``duplicated`` likewise;
* ``max_gap_s``: the longest time without an acknowledged write after the fault began,
  which is what a client saw of the outage; ``failing_s``: from the first to the last failed
  insert (the writer goes on with the next id, so where only one group's shards refuse, the
  gap stays short and this says how long some writes failed);
* ``failover_s``: from the fault to Patroni's new leader of the group running, and
  ``registered_s`` to pg_dist_node naming it (none where no leader change is expected);
* ``recovery_s``: from the fault's end to the cluster whole again (every member running or
  streaming, every group led, each synchronous standby streaming, pg_dist_node following
  Patroni's leaders);
* ``max_status_s``: the slowest `cluster status` asked throughout, from the fault to the
  cluster whole again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..cluster.topology import ClusterBackend
from ..cluster.write_probe import WriteProbe, probe_table
from ..errors import FaultNotSupported
from . import disk, kill, monthly, network, rebalance, rolling
from .backends import injector_for
from .injector import FaultInjector
from .ready import wait_whole
from .scenario import Scenario
from .watchers import StatusWatch

PROBE_TABLE = "fault_probe"

# Every scenario, in the order `bench faults` runs them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        *kill.SCENARIOS,
        *network.SCENARIOS,
        *kill.DCS_SCENARIOS,
        *kill.NODE_SCENARIOS,
        *disk.SCENARIOS,
        *kill.GROUP_SCENARIOS,
        *rolling.SCENARIOS,
        *rebalance.SCENARIOS,
        *monthly.SCENARIOS,
    )
}
# Partitions need the local cluster's own network namespaces, which need root.
NETNS_SCENARIOS = tuple(s.name for s in network.SCENARIOS)


def runnable(faults: FaultInjector) -> list[str]:
    """The scenarios whose faults ``faults`` can give, in order."""
    return [name for name, s in SCENARIOS.items() if faults.supports(*s.needs)]


@dataclass
class Outcome:
    name: str
    acked: int
    lost: int
    duplicated: int
    failed: int
    max_gap_s: float
    failing_s: float
    failover_s: float | None
    registered_s: float | None
    recovery_s: float
    fault_s: float  # how long the fault lasted
    detail: str
    errors: list[str] = field(default_factory=list)
    max_primaries: int | None = None  # partitions: members out of recovery at once
    max_status_s: float = 0.0  # the slowest `cluster status` from the fault to whole again
    # (seconds after the fault began) of every acknowledged insert: what the tests look at
    acked_after_s: list[float] = field(default_factory=list, repr=False)


def start_writer(dsn: str, table: str = PROBE_TABLE) -> WriteProbe:
    """A started writer of single rows into ``table`` (created and distributed unless it
    is), from the id after every one stored, one insert every 20 ms."""
    first = probe_table(dsn, table)
    probe = WriteProbe(
        dsn,
        f"INSERT INTO {table} (id) VALUES (%s)",
        start_id=first,
        pause=0.02,
        table=table,
    )
    probe.start()
    return probe


def run_scenario(
    c: ClusterBackend, name: str, settle: float = 2.0, faults: FaultInjector | None = None
) -> Outcome:
    """Run ``name`` under writes on a whole cluster; leaves the cluster whole again.
    ``faults``: the injector to give the fault with (default: the backend's own)."""
    scenario = SCENARIOS[name]
    f = faults or injector_for(c)
    missing = [fault for fault in scenario.needs if not f.supports(fault)]
    if missing:  # said before anything is broken or written
        raise FaultNotSupported(f, ", ".join(missing))
    wait_whole(c, faults=f)
    probe = start_writer(c.coordinator_dsn())
    watch = StatusWatch(c)
    try:
        time.sleep(settle)
        watch.start()
        run = scenario.run(c, f)
        wait_whole(c, faults=f)
        recovered = time.monotonic()
        time.sleep(settle)  # writes after the recovery, so the last gap is closed
    finally:
        probe.stop()
        slowest_status = watch.stop()
    if run.cleanup:
        run.cleanup()
        wait_whole(c, faults=f)
    ids, rows = probe.stored()
    fails = [t for t in probe.failed_at if t >= run.started]
    return Outcome(
        name=name,
        acked=len(probe.acked),
        lost=len(probe.lost(ids)),
        duplicated=rows - len(ids),
        failed=len(fails),  # from the fault on: a setup's switchover is not the fault's
        max_gap_s=round(probe.longest_gap(run.started), 1),
        failing_s=round(max(fails) - min(fails), 1) if fails else 0.0,
        failover_s=None if run.failover_s is None else round(run.failover_s, 1),
        registered_s=None if run.registered_s is None else round(run.registered_s, 1),
        recovery_s=round(recovered - run.ended, 1),
        fault_s=round(run.ended - run.started, 1),
        detail=run.detail,
        errors=probe.distinct_errors(run.started),
        max_primaries=run.max_primaries,
        max_status_s=round(slowest_status, 1),
        acked_after_s=[t - run.started for t in probe.acked_at if t >= run.started],
    )


__all__ = [
    "NETNS_SCENARIOS",
    "PROBE_TABLE",
    "SCENARIOS",
    "Outcome",
    "run_scenario",
    "runnable",
    "start_writer",
]
