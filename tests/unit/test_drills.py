"""The drills library without a cluster: its scenarios, what each needs of a backend's fault
injector, and an injector that cannot give a fault saying so."""

from __future__ import annotations

import pytest

from citus_pipeline.cluster.spec import ClusterSpec
from citus_pipeline.drills import NETNS_SCENARIOS, SCENARIOS, runnable
from citus_pipeline.drills.injector import KILL, FaultInjector
from citus_pipeline.errors import FaultNotSupported


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
    assert list(SCENARIOS) == [
        "kill-worker-leader",
        "kill-coordinator-leader",
        "kill-sync-standby",
        "freeze-worker-leader",
        "freeze-coordinator-leader",
        "partition-worker-leader",
        "isolate-worker-leader",
        "isolate-coordinator-leader",
        "dcs-outage",
        "disk-full-worker-leader",
        "lose-worker-group",
        "rolling-restart",
        "kill-coordinator-mid-rebalance",
        "kill-source-mid-rebalance",
        "kill-coordinator-mid-monthly",
        "kill-worker-mid-monthly",
    ]
    assert NETNS_SCENARIOS == (
        "partition-worker-leader",
        "isolate-worker-leader",
        "isolate-coordinator-leader",
    )


def test_an_injector_runs_only_the_scenarios_whose_faults_it_gives():
    faults = KillOnly(cluster=None, spec=ClusterSpec())
    assert runnable(faults) == [
        "kill-worker-leader",
        "kill-coordinator-leader",
        "kill-sync-standby",
        "lose-worker-group",
        "rolling-restart",
        "kill-coordinator-mid-rebalance",
        "kill-source-mid-rebalance",
        "kill-coordinator-mid-monthly",
        "kill-worker-mid-monthly",
    ]
    with pytest.raises(FaultNotSupported, match="the test fault injector cannot give 'freeze'"):
        faults.frozen("citusdemo-1-1")
    with pytest.raises(FaultNotSupported, match="'partition'"):
        faults.cut_off("citusdemo-1-1", whole=True)
