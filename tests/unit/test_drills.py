"""The drills library without a cluster: its scenarios, what each needs of a backend's fault
injector, and an injector that cannot give a fault saying so."""

from __future__ import annotations

import pytest

from citus_pipeline.cluster.spec import ClusterSpec
from citus_pipeline.drills import NETNS_SCENARIOS, SCENARIOS, runnable
from citus_pipeline.drills.injector import KILL, FaultInjector
from citus_pipeline.errors import FaultNotSupported

# `bench faults`: every scenario in the order it runs them, and whether killing members is
# all it needs (the others freeze, cut off, stop the DCS or fill a disk)
BENCH_FAULTS = [
    ("kill-worker-leader", True),
    ("kill-coordinator-leader", True),
    ("kill-sync-standby", True),
    ("freeze-worker-leader", False),
    ("freeze-coordinator-leader", False),
    ("partition-worker-leader", False),
    ("isolate-worker-leader", False),
    ("isolate-coordinator-leader", False),
    ("cut-leader-from-standby", False),
    ("dcs-outage", False),
    ("lose-coordinator-node", False),
    ("disk-full-worker-leader", False),
    ("lose-worker-group", True),
    ("rolling-restart", True),
    ("kill-coordinator-mid-rebalance", True),
    ("kill-source-mid-rebalance", True),
    ("kill-coordinator-mid-monthly", True),
    ("kill-worker-mid-monthly", True),
]


class KillOnly(FaultInjector):
    """An injector that kills members and nothing else (as Kubernetes without a way to list a
    pod's processes)."""

    backend_name = "test"
    faults = frozenset({KILL})

    def member_names(self, group):
        return []

    def expected_members(self):
        return 0

    def incarnation(self, name):
        return None

    def members_ready(self, group):
        return True

    def set_group_config(self, group, patch):
        pass


def test_every_scenario_of_bench_faults_in_its_order():
    assert list(SCENARIOS) == [name for name, _ in BENCH_FAULTS]
    assert NETNS_SCENARIOS == (
        "partition-worker-leader",
        "isolate-worker-leader",
        "isolate-coordinator-leader",
        "cut-leader-from-standby",
    )


def test_an_injector_runs_only_the_scenarios_whose_faults_it_gives():
    faults = KillOnly(cluster=None, spec=ClusterSpec())
    assert runnable(faults) == [name for name, kill_only in BENCH_FAULTS if kill_only]
    with pytest.raises(FaultNotSupported, match="the test fault injector cannot give 'freeze'"):
        faults.frozen("citusdemo-1-1")
    with pytest.raises(FaultNotSupported, match="'partition'"):
        faults.cut_off("citusdemo-1-1", whole=True)
    with pytest.raises(FaultNotSupported, match="'link'"):
        faults.machines_cut("citusdemo-1-0", "citusdemo-1-1")
