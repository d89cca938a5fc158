"""The local backend's fault injector: processes, signals, network namespaces, a tmpfs.

A killed member is kill -9 of its Patroni and postmaster, started again as `cluster start`
does; a frozen one is SIGSTOP of every process it has (the supervisor may kill it meanwhile,
as a liveness probe would); the DCS is the embedded etcd, frozen the same way; partitions
need the cluster's own network (``local.network: netns``, root); a full disk needs root too
(the member's directory moved onto a tmpfs of its own).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg

from ..cluster.local import LocalCluster
from ..cluster.local.faults import back_on_disk, fill, frozen, member_processes, own_filesystem
from ..errors import ClusterError
from .injector import DCS, DISK, FREEZE, KILL, LINK, MEMBER_SQL, PARTITION, FaultInjector


class LocalFaults(FaultInjector):
    backend_name = "local"
    watchdog = "the supervisor"
    dcs_fault = "etcd frozen"

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(cluster, cluster.spec)
        self.local = cluster
        faults = {KILL, FREEZE, DCS, MEMBER_SQL}
        if cluster.network.enabled:
            faults |= {PARTITION, LINK}
        if os.geteuid() == 0:  # mount
            faults.add(DISK)
        self.faults = frozenset(faults)

    def member_names(self, group: int) -> list[str]:
        return [m.name for m in self.local.members([group])]

    def expected_members(self) -> int:
        return len(self.local.members())

    def incarnation(self, name: str) -> int | None:
        return self.local.member_pid(self.local.member_by_name(name))

    def members_ready(self, group: int) -> bool:
        return all(self.local.member_pid(m) for m in self.local.members([group]))

    def set_group_config(self, group: int, patch: dict) -> None:
        self.local.api.set_group_config(group, patch)

    def out_of_recovery(self, name: str) -> bool | None:
        dsn = self.local.member_dsn(self.local.member_by_name(name))
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return None

    # ---- the faults ---------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.local.stop_member(name, kill=True)

    def revive(self, name: str) -> None:
        self.local.start_member(name)

    def frozen(self, name: str) -> AbstractContextManager[None]:
        # the processes are listed now, before the fault's clock starts
        return frozen(member_processes(self.local.member_by_name(name)))

    def hang_kills(self, name: str, since: float) -> list[float]:
        return [
            e["at"]
            for e in self.local.supervisor.interventions()
            if e["member"] == name and e["at"] >= since
        ]

    @contextmanager
    def _etcd_stopped(self, pid: int) -> Iterator[None]:
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def dcs_frozen(self) -> AbstractContextManager[None]:
        pid = self.local.etcd.pid()
        if not pid:
            raise ClusterError("etcd is not running")
        return self._etcd_stopped(pid)

    def cut_off(self, name: str, whole: bool) -> AbstractContextManager[None]:
        if PARTITION not in self.faults:
            raise self._refuse(PARTITION)
        member = self.local.member_by_name(name)
        peers = [
            str(self.spec.etcd_address),
            *(m.address for m in self.local.members([member.group]) if m != member),
        ]
        return self.local.network.cut_off(member, None if whole else peers)

    @contextmanager
    def machines_cut(self, a: str, b: str) -> Iterator[str]:
        """Each member is a machine of its own here (its network namespace): each cut off
        from the other's address alone (blackhole routes, as the partitions: their own sends
        to the other fail at once)."""
        if LINK not in self.faults:
            raise self._refuse(LINK)
        ma, mb = self.local.member_by_name(a), self.local.member_by_name(b)
        net = self.local.network
        with net.cut_off(ma, [mb.address]), net.cut_off(mb, [ma.address]):
            yield f"{a}'s and {b}'s namespaces"

    def own_disk(self, name: str, room_mb: int) -> Callable[[], None]:
        member = self.local.member_by_name(name)
        self.local.stop_member(name)
        try:
            own_filesystem(member, room_mb)
        finally:
            self.local.start_member(name)

        def back() -> None:
            self.local.stop_member(name)
            try:
                back_on_disk(member)
            finally:
                self.local.start_member(name)

        return back

    @contextmanager
    def disk_filled(self, name: str) -> Iterator[None]:
        ballast = fill(self.local.member_by_name(name).dir)
        try:
            yield
        finally:
            ballast.unlink()


__all__ = ["LocalFaults"]
