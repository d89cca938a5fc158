"""A leader cut off from the network for 2 x ttl, then healed: the partitions.

Cut off from the DCS and its group's other members only, the coordinator still reaches it:
the case that could split the brain, so who is out of recovery is sampled throughout. Cut
off from everything, its writes hold only until its successor is registered.
"""

from __future__ import annotations

from ..cluster.topology import ClusterBackend
from .injector import MEMBER_SQL, PARTITION, FaultInjector
from .ready import leader_name
from .scenario import FaultRun, Scenario, leader_lost_for
from .watchers import PrimaryWatch


def partition_leader(c: ClusterBackend, f: FaultInjector, group: int, whole: bool) -> FaultRun:
    """The leader of ``group`` cut off for 2 x ttl, then healed: from the DCS and from its
    group's other members only (``whole`` False), or from everything (``whole``: its link
    down)."""
    old = leader_name(c, group)
    hold = 2 * f.spec.patroni.ttl
    cut = f.cut_off(old, whole)
    what = "cut off from everything" if whole else "cut off from etcd and its group"
    watch = PrimaryWatch(c, group, f)
    watch.start()
    try:
        run = leader_lost_for(c, f, group, old, hold, cut, f"{what} for {hold} s", "heal")
    finally:
        most = watch.stop()
    run.max_primaries = most
    return run


SCENARIOS = (
    Scenario(
        "partition-worker-leader",
        "group 1's leader cut off from etcd and its standby for 2 x ttl (netns), then healed",
        lambda c, f: partition_leader(c, f, 1, whole=False),
        (PARTITION, MEMBER_SQL),
    ),
    Scenario(
        "isolate-worker-leader",
        "group 1's leader cut off from everything for 2 x ttl (netns), then healed",
        lambda c, f: partition_leader(c, f, 1, whole=True),
        (PARTITION, MEMBER_SQL),
    ),
    Scenario(
        "isolate-coordinator-leader",
        "the coordinator's leader cut off from everything for 2 x ttl (netns), then healed",
        lambda c, f: partition_leader(c, f, 0, whole=True),
        (PARTITION, MEMBER_SQL),
    ),
)

__all__ = ["SCENARIOS", "partition_leader"]
