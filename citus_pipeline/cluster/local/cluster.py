"""Local backend: the HA Citus cluster as real processes on loopback addresses.

One etcd, and one Patroni process per member; each member has its own 127.0.x.y address
(so it looks like its own host in pg_dist_node), its own data directory under the state
directory, and runs as an unprivileged system user when started by root. Patroni's own
Citus support follows failovers; :class:`LocalCluster` only starts, stops and observes
processes, and drains a group before it is removed. It composes the parts of this package:
the :class:`Layout` of the state directory, its :class:`ClusterState`, the :class:`Etcd`,
the members' Patroni (configuration, process, :class:`PatroniAPI`), the preflight checks,
the credentials, the coordinator's part of a status (read within its time budget) and, when
asked for, the :class:`Monitoring` (exporters and Prometheus).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg

from ...errors import ClusterError, WaitTimeout
from ...settings import default_state_dir
from ...waiting import until
from ..citus_meta import cleanup_orphans, drain_group, remove_group_nodes
from ..restore_points import RestorePointFile, RestorePoints
from ..spec import ClusterSpec
from ..topology import ClusterBackend, ClusterTopology, MemberStatus, Progress, cluster_topology
from . import coordinator, credentials, observe, patroni, preflight, processes, tls
from .backup import HOLD_ARCHIVE, LocalBackups, RestoreStart
from .etcd import DCS_NAMESPACE, Etcd
from .layout import Layout, Member
from .monitoring import Monitoring
from .netns import MemberNetwork
from .patroni import PatroniAPI
from .pooler import Pooler
from .state import ClusterState
from .supervisor import Supervisor


class LocalCluster(ClusterBackend):
    """The cluster of a :class:`ClusterSpec` as local processes under ``state_dir``."""

    name = "local"

    def __init__(self, spec: ClusterSpec, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self.layout = Layout(spec, self.state_dir)
        self.state = ClusterState(self.layout)
        self.etcd = Etcd(self.layout, self.credentials)
        self.api = PatroniAPI(self.layout, lambda: self.credentials()["restapi"])
        self._run_as = preflight.service_user(spec) if os.geteuid() == 0 else None
        self.network = MemberNetwork(self.layout)
        self.monitoring = Monitoring(self.layout, self._run_as, self.network)
        self.backups = LocalBackups(self.layout, self._run_as)
        self.supervisor = Supervisor(self.layout)
        self.pooler = Pooler(self.layout, self._run_as)

    def worker_groups(self) -> list[int]:
        """Worker groups of this cluster: the spec's, plus any added with add-worker."""
        return self.state.worker_groups()

    def groups(self) -> list[int]:
        return [0, *self.worker_groups()]

    def member(self, group: int, index: int) -> Member:
        return self.layout.member(group, index)

    def members(self, groups: Iterable[int] | None = None) -> list[Member]:
        return self.layout.members(self.groups() if groups is None else groups)

    def member_by_name(self, name: str) -> Member:
        return self.layout.member_by_name(name, self.groups())

    def member_pid(self, m: Member) -> int | None:
        return processes.member_pid(m)

    def postmaster_pid(self, m: Member) -> int | None:
        return processes.postmaster_pid(m)

    def pg_bin_dir(self) -> Path:
        return preflight.pg_bin_dir(self.spec)

    def pg_lib_dir(self) -> Path:
        return preflight.pg_lib_dir(self.spec)

    def preflight(self, members: list[Member], check_ports: bool = True) -> None:
        """Everything a user can get wrong, checked before any process starts."""
        self.network.check(as_root=os.geteuid() == 0)
        # in its own namespace a member's ports are its own: nothing else can hold them
        ports = check_ports and not self.network.enabled
        preflight.check(self.layout, members, self._run_as, ports)

    def credentials(self) -> dict[str, str]:
        return credentials.load(self.layout)

    def coordinator_dsn(self) -> str:
        """libpq conninfo for the coordinator leader; the password is in a passfile, not here."""
        return credentials.coordinator_dsn(self.layout)

    def read_dsn(self) -> str:
        """libpq conninfo of the read endpoint (a coordinator standby; reads go to the worker
        groups' standbys, writes are refused)."""
        return credentials.read_dsn(self.layout)

    def member_dsn(self, m: Member, dbname: str | None = None) -> str:
        return credentials.member_dsn(self.layout, m, dbname)

    def patroni_config(
        self, m: Member, creds: dict[str, str], restore: RestoreStart | None = None
    ) -> dict:
        archive = self.backups.patroni_archive(m, restore)
        return patroni.patroni_config(self.spec, m, creds, self.pg_bin_dir(), archive)

    def _start_member(
        self, m: Member, creds: dict[str, str], restore: RestoreStart | None = None
    ) -> bool:
        if processes.member_pid(m):
            return False
        if self.backups.enabled or restore:
            self.backups.write_member_config(m)
        self.network.ensure_member(m)
        tls.ensure(self.layout, [m], self._run_as)
        config = self.patroni_config(m, creds, restore)
        patroni.start(self.layout, m, config, self._run_as, self.network)
        return True

    def kill_and_start(self, m: Member) -> list[int]:
        """SIGKILL every process of m and start its Patroni again, without waiting for it:
        the supervisor's remedy for a member that stopped answering. Returns the pids killed."""
        killed = processes.kill_member(m)
        self._start_member(m, self.credentials())
        return killed

    def _refresh_running(self, members: list[Member], creds: dict[str, str]) -> None:
        """A running member whose certificate is renewed now, or whose patroni.yml this
        version writes otherwise (an upgrade, a changed spec), reloads: Patroni re-reads its
        configuration and REST API certificate, PostgreSQL its parameters, pg_hba and TLS
        files (Patroni reloads it on SIGHUP)."""
        running = [m for m in members if processes.member_pid(m)]
        renewed = tls.ensure(self.layout, running, self._run_as)
        for m in running:
            config = self.patroni_config(m, creds)
            if m in renewed or patroni.config_changed(m, config):
                self._reload(m, config)

    def reload_member(self, m: Member, creds: dict[str, str]) -> None:
        """Rewrite m's patroni.yml as `up` would and have Patroni apply it (SIGHUP)."""
        self._reload(m, self.patroni_config(m, creds))

    def _reload(self, m: Member, config: dict) -> None:
        patroni.write_config(m, config, self._run_as)
        processes.signal_member(m, signal.SIGHUP)

    def ensure_stanzas(self, groups: list[int]) -> None:
        """Create (or confirm) each group's pgBackRest stanza once its leader runs."""
        if not self.backups.enabled:
            return
        self.backups.write_passfile(self.credentials()["superuser"])
        for g in groups:
            self.backups.stanza_create(g, self.members([g]))

    def member_statuses(self) -> list[MemberStatus]:
        return observe.member_statuses(self.layout, self.groups(), self.api)

    def _coordinator_conn(self, timeout: int = 5) -> psycopg.Connection:
        return credentials.connect_coordinator(self.layout, timeout)

    def status(self, with_shards: bool = True) -> ClusterTopology:
        """Patroni's view of every member, and the coordinator's pg_dist_node and shards, within
        :data:`coordinator.STATUS_BUDGET_S` whatever the members do: what did not answer in time
        is left out, and said (``shards_unanswered``)."""
        started = time.monotonic()
        if not self.state_dir.exists() or not self.state.read():
            raise ClusterError(
                f"no local cluster in {self.state_dir}: run `citus-pipeline cluster up`"
            )
        return cluster_topology(
            self,
            self.member_statuses(),
            lambda topo, leader: coordinator.read_within_budget(
                self.layout,
                lambda: self.member_by_name(leader.name),
                leader,
                topo,
                with_shards,
                started,
            ),
            self.coordinator_dsn(),
            pooler_dsn=self.pooler_dsn(),
            read_dsn=self.read_dsn(),
        )

    def restore_points(self) -> RestorePoints:
        """Taken through the coordinator, recorded in the state directory's JSON file."""
        return RestorePoints(
            lambda: self._coordinator_conn(),
            RestorePointFile(self.layout.restore_points_file),
            self.spec.backup.archive_timeout,
        )

    def is_running(self) -> bool:
        return bool(self.etcd.pid()) or any(processes.member_pid(m) for m in self.members())

    def wait_ready(
        self, groups: list[int], timeout: float, progress: Progress | None = None
    ) -> None:
        total = len(groups) * 3

        def not_ready() -> list[str]:
            self._check_members_alive(groups)
            waiting = observe.not_ready(
                self.spec, self.member_statuses(), groups, self._coordinator_conn
            )
            if progress:
                progress(
                    waiting[0] if waiting else "ready", total - min(len(waiting), total), total
                )
            return waiting

        try:
            until(not_ready, timeout, 0.5, f"groups {groups} ready", done=lambda w: not w)
        except WaitTimeout as err:
            first = err.last[0]
            g = int(first.split()[1].rstrip(":")) if first.startswith("group ") else 0
            raise ClusterError(
                f"cluster not ready after {timeout:.0f} s: {first}", self.member(g, 1).log
            ) from err

    def _check_members_alive(self, groups: list[int]) -> None:
        stopped = self.state.stopped()
        for m in self.members(groups):
            if m.pidfile.exists() and not processes.member_pid(m) and not stopped.get(m.name):
                raise ClusterError(
                    f"Patroni of member {m.name} exited: {processes.tail(m.log, 1)}", m.log
                )

    def up(
        self, progress: Progress | None = None, timeout: float = 240, with_metrics: bool = False
    ) -> ClusterTopology:
        """Start (or confirm) every group; with_metrics also starts the metrics stack, which
        from then on follows the cluster (up, add-worker, remove-worker) until metrics_off."""
        self.preflight([], check_ports=False)  # before the lock creates the state directory
        with self.state.exclusive("up"):
            topo = self._up_locked(progress, timeout)
            if with_metrics or self.metrics_on():
                self._start_metrics(progress)
            return topo

    def ensure_up(self) -> ClusterTopology:
        """Start whatever is not running: the local cluster is this process's to start."""
        return self.up()

    def metrics_on(self) -> bool:
        return bool(self.state.read().get("metrics"))

    def _start_metrics(self, progress: Progress | None = None) -> None:
        state = self.state.read()
        state["metrics"] = True
        self.state.save(state)
        if progress:
            progress("starting exporters and prometheus", 0, 1)
        self.monitoring.start(self.members(), self.credentials()["superuser"])

    def metrics_off(self) -> None:
        """Stop the exporters and Prometheus (their data stays) and stop following the cluster."""
        with self.state.exclusive("metrics --off"):
            state = self.state.read()
            state["metrics"] = False
            self.state.save(state)
            self.monitoring.stop()

    def _up_locked(self, progress: Progress | None = None, timeout: float = 240) -> ClusterTopology:
        self.state.check_same_topology()
        members = self.members()
        not_running = [m for m in members if not processes.member_pid(m)]
        self.preflight(not_running, check_ports=True)
        creds = self.credentials()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            os.chmod(self.state_dir, 0o755)
        state = self.state.read()
        state.setdefault("worker_groups", self.spec.worker_groups)
        self.state.record_spec(state)
        state["stopped"] = {}
        self.state.save(state)
        credentials.write_client_passfile(self.layout, creds)
        started_etcd = False
        started: list[Member] = []
        try:
            if progress:
                progress("starting etcd", 0, 1)
            self.network.ensure_bridge()  # etcd listens on it
            started_etcd = self.etcd.start()
            if not any(processes.member_pid(m) for m in members):
                # no Patroni runs without etcd credentials that this could lock out
                self.etcd.enable_auth()
            self._refresh_running(members, creds)
            # coordinator first: its Patroni registers the workers as they come up
            for m in members:
                if self._start_member(m, creds):
                    started.append(m)
            if state.get("paused"):
                self.api.resume_groups(state["paused"])
                state["paused"] = []
                self.state.save(state)
            self.wait_ready(self.groups(), timeout, progress)
            self.ensure_stanzas(self.groups())
            self._start_pooler(creds, progress)
            if self.spec.local.supervisor:
                self.supervisor.start()
            else:
                self.supervisor.stop()
        except BaseException:
            processes.stop_members(started, timeout=10)
            if started_etcd:
                self.etcd.stop()
            raise
        return self.status()

    def _start_pooler(self, creds: dict[str, str], progress: Progress | None = None) -> None:
        """PgBouncer and HAProxy before the coordinator's leader (stopped where the spec
        turned the pooler off)."""
        if not self.pooler.enabled:
            self.pooler.stop()
            return
        if progress:
            progress("starting the pooler", 0, 1)
        tls.ensure_pooler(self.layout, self._run_as)
        self.pooler.start(self.members([0]), creds["superuser"])

    def pooler_dsn(self, session: bool = False) -> str | None:
        """libpq conninfo of the pooler (``session``: its session pool); None where the spec
        has it off."""
        return credentials.pooler_dsn(self.layout, session) if self.pooler.enabled else None

    def down(self, purge: bool = False) -> None:
        with self.state.exclusive("down"):
            return self._down_locked(purge)

    def _down_locked(self, purge: bool = False) -> None:
        members = self.members()
        self.supervisor.stop()  # first: it would take members stopping for hung ones
        self.monitoring.stop()  # exporters would only log the members going away
        self.pooler.stop()
        if any(processes.member_pid(m) for m in members):
            paused = self.api.pause_groups(self.groups())
            state = self.state.read()
            if state:
                state["paused"] = sorted(set(state.get("paused", [])) | set(paused))
                self.state.save(state)
        processes.stop_members(members, timeout=12)
        self.etcd.stop()
        self.network.remove(members)
        if purge:
            self.purge()

    def purge(self) -> None:
        self.state.purge()

    def stop_member(self, name: str, kill: bool = False) -> None:
        """Stop one member: gracefully (Patroni stops PostgreSQL) or, with kill, SIGKILL both."""
        m = self.member_by_name(name)
        state = self.state.read()
        state.setdefault("stopped", {})[m.name] = True
        self.state.save(state)
        if kill:
            pm = processes.postmaster_pid(m)
            processes.signal_member(m, signal.SIGKILL)
            if pm:
                os.kill(pm, signal.SIGKILL)
        else:
            processes.stop_members([m], timeout=30)

    def start_member(self, name: str, wait: float = 120, progress: Progress | None = None) -> None:
        m = self.member_by_name(name)
        state = self.state.read()
        state.setdefault("stopped", {}).pop(m.name, None)
        self.state.save(state)
        self.preflight([m], check_ports=not processes.member_pid(m))
        self._start_member(m, self.credentials())
        self.wait_ready([m.group], wait, progress)

    def kill_postmaster(self, name: str) -> int:
        """SIGKILL one member's postmaster (Patroni stays up and reacts). Returns the pid."""
        m = self.member_by_name(name)
        pid = processes.postmaster_pid(m)
        if not pid:
            raise ClusterError(f"member {name} has no running postmaster")
        os.kill(pid, signal.SIGKILL)
        return pid

    def _change_leader(self, action: str, group: int, candidate: str | None, timeout: float) -> str:
        topo = self.status(with_shards=False)
        leader = topo.leader(group)
        if leader is None:
            raise ClusterError(f"group {group} has no leader to {action} from")
        standbys = [
            m for m in topo.members_of(group) if m.role != "leader" and m.state == "streaming"
        ]
        if candidate is None:
            pref = [m for m in standbys if m.role in ("sync_standby", "quorum_standby")] or standbys
            if not pref:
                raise ClusterError(f"group {group} has no streaming standby to take over")
            candidate = pref[0].name
        body = {"candidate": candidate}
        if action == "switchover":
            body["leader"] = leader.name
        r = self.api.post(leader, f"/{action}", body)
        if r.status_code not in (200, 202):
            raise ClusterError(
                f"{action} of group {group} refused by Patroni: {r.text.strip()}",
                self.member(group, 1).log,
            )
        deadline = time.monotonic() + timeout
        try:
            until(
                lambda: self.status(with_shards=False).leader(group),
                timeout,
                0.5,
                f"{candidate} leading group {group}",
                done=lambda new: (
                    new is not None and new.name == candidate and new.state == "running"
                ),
            )
        except WaitTimeout as err:
            raise ClusterError(
                f"{action} of group {group} to {candidate} did not finish in {timeout:.0f} s",
                self.member_by_name(candidate).log,
            ) from err
        self.wait_ready([group], max(5.0, deadline - time.monotonic()))
        return candidate

    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._change_leader("switchover", group, candidate, timeout)

    def restart_member(self, name: str, timeout: float = 120) -> None:
        """Restart one member's PostgreSQL through its Patroni (a leader stays leader);
        returns once its group is ready again. `rolling.rolling_restart` orders the calls."""
        m = self.member_by_name(name)
        status = next((s for s in self.member_statuses() if s.name == name), None)
        if status is None or status.state not in ("running", "streaming"):
            raise ClusterError(
                f"member {name} is not running ({status.state if status else 'unknown'})", m.log
            )
        r = self.api.post(status, "/restart", {})
        if r.status_code != 200:
            raise ClusterError(f"restart of {name} refused by Patroni: {r.text.strip()}", m.log)
        self.wait_ready([m.group], timeout)

    def failover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._change_leader("failover", group, candidate, timeout)

    def add_worker(self, progress: Progress | None = None, timeout: float = 180) -> int:
        with self.state.exclusive("add-worker"):
            return self._add_worker_locked(progress, timeout)

    def _add_worker_locked(self, progress: Progress | None = None, timeout: float = 180) -> int:
        if self.status(with_shards=False).leader(0) is None:
            raise ClusterError("the coordinator has no leader: is the cluster up?")
        groups = self.worker_groups()
        group = max(groups, default=0) + 1
        new = self.members([group])
        self.preflight(new, check_ports=True)
        state = self.state.read()
        state["worker_groups"] = [*groups, group]
        self.state.save(state)
        creds = self.credentials()
        try:
            for m in new:
                self._start_member(m, creds)
            self.wait_ready([group], timeout, progress)
            self.ensure_stanzas([group])
        except BaseException:
            processes.stop_members(new, timeout=10)
            state = self.state.read()
            state["worker_groups"] = groups
            self.state.save(state)
            for m in new:
                shutil.rmtree(m.dir, ignore_errors=True)
            raise
        if self.metrics_on():
            self.monitoring.sync(self.members())
        return group

    def remove_worker(self, group: int, transfer_mode: str = "block_writes") -> int:
        with self.state.exclusive("remove-worker"):
            return self._remove_worker_locked(group, transfer_mode)

    def _remove_worker_locked(self, group: int, transfer_mode: str = "block_writes") -> int:
        """Drain ``group`` with citus_drain_node, then stop and forget it. Refuses on a failed drain."""
        groups = self.worker_groups()
        if group not in groups:
            raise ClusterError(
                f"group {group} is not a worker group of this cluster (workers: {groups})"
            )
        if len(groups) == 1:
            raise ClusterError(f"refusing to remove group {group}: it is the last worker group")
        with self._coordinator_conn() as conn:
            moved = drain_group(conn, group, transfer_mode)  # raises DrainError: nothing removed
            cleanup_orphans(conn)
            members = self.members([group])
            # Patroni goes first, by SIGKILL: a graceful stop of a worker leader makes the
            # coordinator's Patroni hold pg_dist_node for a promotion that never comes.
            pids = {m.name: p for m in members if (p := processes.signal_member(m, signal.SIGKILL))}
            processes.wait_gone(pids, 10)
            self.etcd.delete_prefix(f"{DCS_NAMESPACE}{self.spec.name}/{group}/")
            remove_group_nodes(conn, group)
            processes.stop_members(members)  # the now unmanaged postmasters
            self.network.remove_members(members)
        state = self.state.read()
        state["worker_groups"] = [g for g in groups if g != group]
        self.state.save(state)
        if self.backups.enabled:
            self.backups.stanza_delete(group, members)
        for m in members:
            shutil.rmtree(m.dir, ignore_errors=True)
        if self.metrics_on():
            self.monitoring.sync(self.members())
        return moved


__all__ = ["HOLD_ARCHIVE", "LocalCluster", "Progress", "RestoreStart"]
