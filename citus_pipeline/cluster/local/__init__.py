"""Local backend: the HA Citus cluster as etcd and Patroni processes on loopback addresses.

:class:`LocalCluster` (``cluster.py``) composes small parts, each given the :class:`Layout`
of the state directory rather than the cluster: ``state`` (cluster.json and its lock),
``processes`` (starting, pids, signals, stopping), ``etcd``, ``patroni`` (configuration,
process, REST calls), ``preflight`` (what the machine must provide), ``credentials``
(passwords, passfiles, DSNs) and ``observe`` (member statuses, readiness).
"""

from __future__ import annotations

from ...settings import default_state_dir
from .cluster import LocalCluster, Progress
from .layout import Layout, Member
from .state import STATE_ENV

__all__ = [
    "STATE_ENV",
    "Layout",
    "LocalCluster",
    "Member",
    "Progress",
    "default_state_dir",
]
