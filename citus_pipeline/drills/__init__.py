"""Fault drills for both backends: break one thing under writes, then check nothing
acknowledged was lost and the cluster came back whole.

Layout: ``injector`` (what a backend's fault injector gives; ``local`` and ``kubernetes``
implement it), ``ready`` (the waits on the cluster's own health predicates), ``watchers``
(split-brain and `status` watchers), ``scenario`` (what a scenario reports), the scenarios by
family (``kill``: killed and frozen members, the DCS gone; ``network``: partitions;
``disk``: a full disk; ``rolling``: a rolling restart; ``rebalance`` and ``monthly``: a
leader killed mid-rebalance and mid-apply), and ``runner`` (the writer, the run, the check).

`citus-pipeline bench faults` prints the figures of every scenario; the integration and
Kubernetes tests assert what each must guarantee. Layers: this package uses cluster/ and
data/ (the mid-apply scenarios apply a monthly file), never the Dagster layer, the
benchmarks or the CLI.
"""

from __future__ import annotations

from .backends import injector_for
from .injector import FaultInjector
from .ready import (
    LeaderChange,
    is_whole,
    primaries,
    wait_ha,
    wait_leader_change,
    wait_new_leader,
    wait_registered,
    wait_whole,
)
from .runner import (
    NETNS_SCENARIOS,
    PROBE_TABLE,
    SCENARIOS,
    Outcome,
    run_scenario,
    runnable,
    start_writer,
)
from .scenario import FaultRun, Scenario

__all__ = [
    "NETNS_SCENARIOS",
    "PROBE_TABLE",
    "SCENARIOS",
    "FaultInjector",
    "FaultRun",
    "LeaderChange",
    "Outcome",
    "Scenario",
    "injector_for",
    "is_whole",
    "primaries",
    "run_scenario",
    "runnable",
    "start_writer",
    "wait_ha",
    "wait_leader_change",
    "wait_new_leader",
    "wait_registered",
    "wait_whole",
]
