"""What a fault drill does to a cluster beyond the `ClusterBackend` contract: the faults.

The scenarios ask the contract for everything both backends do (status, switchover, add a
worker, the coordinator's DSN) and a :class:`FaultInjector` for the faults themselves and the
few facts only the backend can give (a member's own DSN, when its process was replaced). One
injector per backend: locally processes, signals and network namespaces (``drills.local``);
on Kubernetes pods and containers (``drills.kubernetes``); ``drills.backends`` picks the
one of a backend. An injector that cannot give a fault raises :class:`FaultNotSupported`,
and :meth:`FaultInjector.supports` says so before a scenario starts, so a scenario runs
wherever its faults can be given.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar

from ..cluster.spec import ClusterSpec
from ..cluster.topology import ClusterBackend
from ..errors import FaultNotSupported

# The faults an injector may give, by the name :meth:`FaultInjector.supports` takes.
KILL = "kill"  # a member's processes killed outright, started again after
FREEZE = "freeze"  # every process of a member stopped, then let go on
DCS = "dcs"  # the DCS stops answering for a while
PARTITION = "partition"  # a member cut off from some or all of the network
DISK = "disk"  # a member's filesystem filled, then given its room back
MEMBER_SQL = "member-sql"  # a query on one member's own PostgreSQL (who is out of recovery)
NODE = "node"  # the machine (a Kubernetes node) holding a member lost whole, then rebooted
LINK = "link"  # the network between the machines of two members cut, then healed


class FaultInjector(abc.ABC):
    """Faults given to one cluster's members, named as its topology names them.

    Every fault a backend cannot give raises :class:`FaultNotSupported` here; each backend's
    injector overrides what it can do and lists it in :attr:`faults`."""

    backend_name: ClassVar[str]
    watchdog: ClassVar[str] = "the watchdog"  # who kills a hung member, in a drill's detail
    dcs_fault: ClassVar[str] = "the DCS frozen"  # what `dcs_frozen` does, in a drill's detail
    faults: frozenset[str] = frozenset()  # what this injector gives: each backend's sets it

    def __init__(self, cluster: ClusterBackend, spec: ClusterSpec) -> None:
        self.cluster = cluster
        self.spec = spec

    def supports(self, *faults: str) -> bool:
        return set(faults) <= self.faults

    def _refuse(self, fault: str) -> FaultNotSupported:
        return FaultNotSupported(self, fault)

    # ---- what the drills need to know -------------------------------------------------------
    @abc.abstractmethod
    def member_names(self, group: int) -> list[str]:
        """The members ``group`` has, whatever Patroni reports of them now."""

    @abc.abstractmethod
    def expected_members(self) -> int:
        """How many members the cluster has now (the spec's groups plus those added)."""

    @abc.abstractmethod
    def incarnation(self, name: str) -> object | None:
        """Something that changes when the member's process is replaced (killed and started
        again): a pid, a container's restart count; None while it does not run."""

    @abc.abstractmethod
    def members_ready(self, group: int) -> bool:
        """Whether every member of ``group`` runs as its platform judges it (a pid, a pod's
        Ready condition), before Patroni's view is asked."""

    @abc.abstractmethod
    def set_group_config(self, group: int, patch: dict) -> None:
        """Patch ``group``'s dynamic configuration in the DCS (Patroni's PATCH /config)."""

    def out_of_recovery(self, name: str) -> bool | None:
        """Whether the member's own PostgreSQL is out of recovery now (a primary), asked of
        it directly, not of Patroni; None where it does not answer."""
        raise self._refuse(MEMBER_SQL)

    def machine_of(self, name: str) -> str:
        """The machine the member runs on, as :meth:`machines_cut` cuts them (locally each
        member is one, its network namespace; on Kubernetes its pod's node)."""
        return name

    # ---- the faults ---------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Kill the member outright (kill -9, a pod deleted at once): no clean shutdown."""
        raise self._refuse(KILL)

    def revive(self, name: str) -> None:
        """Start a killed member again, as its supervisor would, once it runs."""
        raise self._refuse(KILL)

    def frozen(self, name: str) -> AbstractContextManager[None]:
        """Every process of the member stopped for the block, let go on after it."""
        raise self._refuse(FREEZE)

    def hang_kills(self, name: str, since: float) -> list[float]:
        """When (Unix seconds) the platform's watchdog killed the hung member since ``since``
        (the local supervisor, a liveness probe)."""
        raise self._refuse(FREEZE)

    def dcs_frozen(self) -> AbstractContextManager[None]:
        """The DCS stops answering for the block."""
        raise self._refuse(DCS)

    def node_lost(self, name: str) -> AbstractContextManager[str]:
        """The node holding the member lost whole for the block (every process on it killed,
        its network gone: a VM that died), given as the block's value; booted again after
        it, with its members running again."""
        raise self._refuse(NODE)

    def cut_off(self, name: str, whole: bool) -> AbstractContextManager[None]:
        """The member cut off for the block: from the DCS and its group's other members
        (``whole`` False: the coordinator still reaches it), or from everything."""
        raise self._refuse(PARTITION)

    def machines_cut(self, a: str, b: str) -> AbstractContextManager[str]:
        """The network between the machines holding members ``a`` and ``b`` cut both ways for
        the block, each still reaching everything else (the DCS too); the block's value names
        the two machines."""
        raise self._refuse(LINK)

    def own_disk(self, name: str, room_mb: int) -> Callable[[], None]:
        """Put the member on a filesystem of its own with ``room_mb`` to spare; returns what
        puts it back (the member is stopped and started around both)."""
        raise self._refuse(DISK)

    def disk_filled(self, name: str) -> AbstractContextManager[None]:
        """The member's own filesystem full for the block, its room given back after it."""
        raise self._refuse(DISK)


__all__ = [
    "DCS",
    "DISK",
    "FREEZE",
    "KILL",
    "LINK",
    "MEMBER_SQL",
    "NODE",
    "PARTITION",
    "FaultInjector",
]
