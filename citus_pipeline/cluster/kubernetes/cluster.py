"""KubernetesCluster: the HA Citus cluster as StatefulSets managed by Patroni's Kubernetes DCS,
behind the same :class:`ClusterBackend` contract as the local processes.

The class composes the parts of this package, each given one :class:`KubeApi`: the members
read from pods and Endpoints (``members``), the objects of a group (``groups``), leader
changes (``handover``), restarts (``restarts``), the record of restore points
(``restore_points``) and server-side apply (``apply``). What stays here is what the contract
orders across them and the coordinator: a status read from Patroni and Citus, and a worker
group added or removed in the order Citus and Patroni need. Citus metadata comes from the
coordinator through psycopg (``citus_meta``); the API clients and the connection are
injectable, so tests pass fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from ... import settings
from ...errors import KubernetesClusterError
from ...waiting import until
from .. import failover
from ..budget import STATUS_BUDGET_S, Pending
from ..citus_meta import (
    cleanup_orphans,
    drain_group,
    fetch_dist_nodes,
    read_metadata,
    remove_group_nodes,
)
from ..health import leaderless
from ..pooler_ini import session_database
from ..restore_points import RestorePoints
from ..spec import READ_SESSION_OPTIONS, TCP_TIMEOUTS, ClusterSpec, load_spec
from ..topology import ClusterBackend, ClusterTopology, MemberStatus, Progress, cluster_topology
from . import handover, restarts
from . import manifests as mf
from .addresses import AddressBook
from .api import KubeApi, poll, status_of
from .apply import apply_manifests
from .groups import Groups
from .members import get_path, read_member_statuses
from .restore_points import ConfigMapRestorePoints

log = logging.getLogger(__name__)

ConnectFn = Callable[[str], psycopg.Connection]
# The API's share of `cluster status`'s budget when the coordinator's address is not known yet
# and can only be asked after the API: a live API server answers in tens of milliseconds,
# but a first call on a loaded machine (TLS, the client's models) has taken over 2 s.
API_BUDGET_S = 3.0


def _default_connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def _unreachable(err: BaseException | None) -> bool:
    """An API server that is down, frozen or cut off (no answer, a socket or HTTP error
    below the API, a 5xx of an API server without its etcd), not one that refused."""
    from urllib3.exceptions import HTTPError

    code = status_of(err) if isinstance(err, Exception) else None
    return isinstance(err, HTTPError | OSError) or (code is not None and code >= 500)


def _from_api(name: str) -> property:
    """A read-only property that is the same one of the cluster's :class:`KubeApi`."""
    return property(lambda c: getattr(c.api, name), doc=getattr(KubeApi, name).__doc__)


class KubernetesCluster(ClusterBackend):
    name = "kubernetes"

    def __init__(
        self,
        spec: ClusterSpec | None = None,
        *,
        core_api: Any = None,
        apps_api: Any = None,
        policy_api: Any = None,
        connect: ConnectFn | None = None,
        dsn: str | None = None,
        context: str | None = None,
    ) -> None:
        self.spec = spec or load_spec()
        self.api = KubeApi(self.spec, core_api, apps_api, policy_api, context)
        self.namespace = self.api.namespace
        self.objects = Groups(self.api)
        self._connect = connect or _default_connect
        self._dsn = dsn

    # ---- the API, for callers that talk to it themselves (`k8s apply`) -----------------------
    core = _from_api("core")
    apps = _from_api("apps")
    policy = _from_api("policy")
    selector = _from_api("selector")

    # ---- topology ---------------------------------------------------------------------------
    def statefulset_groups(self) -> dict[int, Any]:
        """Group id -> StatefulSet, from the StatefulSets of this scope that carry a group label."""
        return self.objects.statefulsets()

    def member_statuses(self) -> list[MemberStatus]:
        return read_member_statuses(self.api)

    def coordinator_dsn(self) -> str:
        """libpq DSN of the coordinator leader, without a password.

        The ``dsn`` argument wins, then ``$CITUS_PIPELINE_DSN``; otherwise the coordinator load
        balancer's address. The password comes from PGPASSFILE / ~/.pgpass (or PGPASSWORD from
        a Secret), never from the DSN.
        """
        return self._given_dsn() or self._lb_dsn(mf.coordinator_lb_name(self.spec))

    def read_dsn(self) -> str:
        """libpq DSN of the read endpoint: the coordinator's standbys behind their load
        balancer, each session reading from the worker groups' standbys."""
        options = f"options='{READ_SESSION_OPTIONS}' application_name=citus-pipeline-read"
        return f"{self._lb_dsn(mf.read_lb_name(self.spec))} {options}"

    def pooler_dsn(self, session: bool = False) -> str | None:
        """libpq DSN of the pooler (PgBouncer before the coordinator's leader Service) behind
        its load balancer (``session``: its session pool); None when the spec has no pooler."""
        if not self.spec.pooler.enabled:
            return None
        dbname = session_database(self.spec) if session else None
        return self._lb_dsn(mf.pooler_name(self.spec), self.spec.pooler.port, dbname)

    def client_dsn(self) -> str:
        return self._given_dsn() or super().client_dsn()

    def _lb_dsn(self, name: str, port: int = mf.POSTGRES_PORT, dbname: str | None = None) -> str:
        """A DSN (no password) of the load balancer Service ``name``'s address, to the spec's
        database unless ``dbname`` names another."""
        try:
            svc = self.core.read_namespaced_service(name, self.namespace)
        except Exception as e:  # the client's ApiException, or a fake's
            if status_of(e) == 404:
                raise KubernetesClusterError(
                    f"service {self.namespace}/{name} not found: run `citus-pipeline k8s apply` first"
                ) from None
            raise
        ingress = get_path(svc, "status", "load_balancer", "ingress") or []
        addr = next((i.ip or i.hostname for i in ingress if (i.ip or i.hostname)), None)
        if not addr:
            raise KubernetesClusterError(
                f"service {self.namespace}/{name} has no load balancer address yet "
                f"(set {settings.DSN.name} to override)"
            )
        return (
            f"host={addr} port={port} dbname={dbname or self.spec.database} "
            f"user={self.spec.credentials.superuser} sslmode=require connect_timeout=10 "
            + TCP_TIMEOUTS
        )

    def status(self, with_shards: bool = True) -> ClusterTopology:
        """Within :data:`STATUS_BUDGET_S` whatever the API server and the coordinator do.

        The members come from the API; pg_dist_node (and the shards) from the coordinator at
        its load balancer. Both are asked at once when the API gave that address before (kept
        in :attr:`addresses`), so a slow API costs the coordinator nothing; without one, the
        API gets :data:`API_BUDGET_S` and the coordinator the rest. An API that does not answer
        leaves the members unknown and ``members_unanswered`` says why."""
        deadline = time.monotonic() + STATUS_BUDGET_S
        known = {**self.addresses.load(), **self._override_dsn()}
        api = Pending(lambda: (self.member_statuses(), self._endpoint_dsns()), "status-api")
        early_dsn = known.get("coordinator_dsn")
        early = self._ask_coordinator(early_dsn, with_shards) if early_dsn else None
        api_share = deadline - time.monotonic() if early else API_BUDGET_S
        asked = api.wait(api_share)
        if asked.answered and asked.error is None:
            members, dsns = asked.value
            self.addresses.save(dsns)
            unanswered = None
        elif asked.answered and not _unreachable(asked.error):
            raise asked.error  # a refusal or a bug: said as it is, never as "unanswered"
        else:
            members, dsns = [], known
            unanswered = self._api_unanswered(asked.error, api_share)
        dsn = dsns.get("coordinator_dsn")
        if dsn == early_dsn:
            coordinator = early
        else:  # the load balancer's address changed, or was not known before
            coordinator = self._ask_coordinator(dsn, with_shards) if dsn else None

        def read(topo: ClusterTopology, _leader: Any) -> ClusterTopology:
            return self._with_coordinator(topo, coordinator, deadline)

        topo = cluster_topology(self, members, read, **dsns)
        if unanswered:
            topo.members_unanswered = unanswered
            topo = read(topo, None)
        return topo

    @property
    def addresses(self) -> AddressBook:
        """The load balancers' DSNs as this API server last gave them."""
        return AddressBook(self.api.server, self.namespace, self.spec.name)

    def _given_dsn(self) -> str | None:
        """The coordinator DSN the caller gave (the argument, else the environment)."""
        return self._dsn or settings.DSN.get() or None

    def _override_dsn(self) -> dict[str, str]:
        dsn = self._given_dsn()
        return {"coordinator_dsn": dsn} if dsn else {}

    def _endpoint_dsns(self) -> dict[str, str | None]:
        """The three ways in, each None where its Service has no address yet."""
        out: dict[str, str | None] = {}
        for key, endpoint in (
            ("coordinator_dsn", self.coordinator_dsn),
            ("read_dsn", self.read_dsn),
            ("pooler_dsn", self.pooler_dsn),
        ):
            try:
                out[key] = endpoint()
            except KubernetesClusterError as e:
                log.warning("%s", e)
                out[key] = None
        return out

    def _api_unanswered(self, error: BaseException | None, waited: float) -> str:
        where = f"the Kubernetes API{f' ({self.api.server})' if self.api.server else ''}"
        said = (
            f"did not answer within {waited:.1f} s"
            if error is None
            else f"failed: {failover.type_and_first_line(error)}"
        )
        return (
            f"{where} {said}; members and roles unknown, pg_dist_node as the coordinator "
            "sees it at its load balancer's last known address"
        )

    def _ask_coordinator(self, dsn: str, with_shards: bool) -> Pending[ClusterTopology]:
        """pg_dist_node (and the shards) from the coordinator at ``dsn``, asked in the
        background: a topology holding only what the coordinator told."""

        def ask() -> ClusterTopology:
            found = ClusterTopology(
                scope=self.spec.name, database=self.spec.database, backend=self.name, members=[]
            )
            with self._connect(dsn) as conn:
                read_metadata(conn, found, with_shards)
            return found

        return Pending(ask, "status-coordinator")

    def _with_coordinator(
        self,
        topo: ClusterTopology,
        coordinator: Pending[ClusterTopology] | None,
        deadline: float,
    ) -> ClusterTopology:
        """``topo`` with what the coordinator told by ``deadline``; a coordinator not
        reachable, or not in time, leaves the topology as Patroni reports it, saying so."""
        if coordinator is None:
            return topo
        asked = coordinator.wait(deadline - time.monotonic())
        if not asked.answered:
            topo.shards_unanswered = (
                f"the coordinator did not answer at its load balancer within "
                f"{STATUS_BUDGET_S:g} s of asking"
            )
            return topo
        if isinstance(asked.error, psycopg.Error):
            log.warning("coordinator not reachable for Citus metadata: %s", asked.error)
            topo.shards_unanswered = (
                "the coordinator refused or could not be reached: "
                + failover.type_and_first_line(asked.error)
            )
            return topo
        if asked.error is not None:
            raise asked.error
        told = asked.value
        return topo.model_copy(
            update={
                "dist_nodes": told.dist_nodes,
                "shards": told.shards,
                "shards_unanswered": told.shards_unanswered,
            }
        )

    # ---- lifecycle --------------------------------------------------------------------------
    def up(self, progress: Progress | None = None, timeout: float = 900) -> ClusterTopology:
        """Apply the rendered manifests (server-side) and wait for a leader in every group."""
        started = time.monotonic()
        apply_manifests(mf.cluster_manifests(self.spec), self.core.api_client)
        groups = list(range(self.spec.workers.groups + 1))
        topo = self.wait_for_leaders(groups, timeout, progress)
        self.wait_for_pooler(timeout - (time.monotonic() - started))
        return topo

    def wait_for_pooler(self, timeout: float) -> None:
        """Until the pooler's Deployment has a ready pod (PgBouncer listening); at once when
        the spec has no pooler."""
        if not self.spec.pooler.enabled:
            return
        name = mf.pooler_name(self.spec)

        def ready() -> bool:
            dep = self.apps.read_namespaced_deployment_status(name, self.namespace)
            return (get_path(dep, "status", "ready_replicas") or 0) >= 1

        until(
            ready,
            max(timeout, 30),
            2,
            f"a ready pod of the pooler (kubectl -n {self.namespace} get deployment {name})",
        )

    def ensure_up(self) -> ClusterTopology:
        return self.status()

    def wait_for_leaders(
        self, groups: list[int], timeout: float, progress: Progress | None = None
    ) -> ClusterTopology:
        """The topology once each of ``groups`` has a leader (one still starting counts)."""

        def look() -> tuple[ClusterTopology, list[int]]:
            topo = self.status(with_shards=False)
            missing = leaderless(topo, groups, running=False)
            if progress:
                msg = (
                    f"waiting for Patroni leaders of groups {missing}"
                    if missing
                    else "leaders elected"
                )
                progress(msg, len(groups) - len(missing), len(groups))
            return topo, missing

        topo, _ = poll(
            look,
            timeout,
            5,
            f"a Patroni leader in groups {groups}",
            lambda last: (
                f"groups {last[1]} have no Patroni leader after {timeout:.0f}s "
                f"(kubectl -n {self.namespace} get pods -l {self.selector})"
            ),
            done=lambda seen: not seen[1],
        )
        return topo

    def add_worker(
        self, progress: Progress | None = None, timeout: float = 900, *, wait: bool = True
    ) -> int:
        """Create the next worker group and return once it is in pg_dist_node.

        ``wait=False`` (beyond the contract) returns right after its objects are created.
        """
        existing = self.statefulset_groups()
        if 0 not in existing:
            raise KubernetesClusterError(
                f"no coordinator StatefulSet {mf.group_name(self.spec, 0)} in namespace "
                f"{self.namespace}: run `citus-pipeline k8s apply` first"
            )
        group = max(existing) + 1
        self.objects.create(group, *Groups.live_overrides(existing[0]))
        if wait:
            self.wait_for_leaders([group], timeout, progress)
            self._wait_registered(group, timeout)
        return group

    def _wait_registered(self, group: int, timeout: float) -> None:
        dsn = self.coordinator_dsn()

        def registered() -> bool:
            try:
                with self._connect(dsn) as conn:
                    return any(
                        n.groupid == group and n.role == "primary" and n.active
                        for n in fetch_dist_nodes(conn)
                    )
            except psycopg.Error as e:
                log.info("waiting for the coordinator: %s", e)
                return False

        poll(
            registered,
            timeout,
            5,
            f"group {group} in pg_dist_node",
            lambda _last: f"group {group} is not in pg_dist_node after {timeout:.0f}s",
        )

    def remove_worker(
        self, group: int, transfer_mode: str = "block_writes", *, timeout: float = 600
    ) -> int:
        """Drain the group's shards, then delete its objects; a failed drain deletes nothing.

        ``timeout`` (beyond the contract): how long the group's pods may take to go.
        """
        if group <= 0:
            raise KubernetesClusterError(f"group {group} is not a worker group (workers are 1..N)")
        existing = self.statefulset_groups()
        if group not in existing:
            raise KubernetesClusterError(
                f"no StatefulSet {mf.group_name(self.spec, group)} in namespace {self.namespace}"
            )
        if len([g for g in existing if g > 0]) <= 1:
            raise KubernetesClusterError(
                f"group {group} is the last worker group; refusing to remove it"
            )
        dsn = self.coordinator_dsn()
        with self._connect(dsn) as conn:
            moved = drain_group(conn, group, transfer_mode)  # raises DrainError: nothing below runs
            cleanup_orphans(conn)
        # A worker leader stopped gracefully asks the coordinator's Patroni to hold
        # pg_dist_node for its successor (the "before_demote" of Patroni's Citus support); no
        # successor ever comes, so citus_remove_node would wait on that lock for good (seen on
        # a real control plane). Paused, Patroni exits without stopping PostgreSQL or telling
        # the coordinator; the container's end stops PostgreSQL.
        self.objects.pause(group, timeout)
        self.objects.delete(group)
        self.objects.wait_pods_gone(group, timeout)
        with self._connect(dsn) as conn:
            remove_group_nodes(conn, group, gone=True)
        self.objects.delete_volumes(group)
        return moved

    def set_group_config(self, group: int, patch: dict) -> None:
        """Merge ``patch`` into one group's dynamic configuration, as Patroni's ``PATCH
        /config`` does (the ``config`` annotation of the group's ``-config`` Endpoints)."""
        self.objects.set_config(group, patch)

    # ---- restarts and leader changes --------------------------------------------------------
    def restart_member(self, name: str, timeout: float = 300) -> None:
        """Restart one member by deleting its pod (``restarts`` says why a pod, not Patroni)."""
        restarts.restart_member(self.api, self._observe, name, timeout)

    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return handover.change_leader(self.api, self._observe, group, candidate, True, timeout)

    def failover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return handover.change_leader(self.api, self._observe, group, candidate, False, timeout)

    def _observe(self) -> ClusterTopology:
        return self.status(with_shards=False)

    # ---- restore points ---------------------------------------------------------------------
    def restore_points(self) -> RestorePoints:
        """Taken through the coordinator, recorded in the ConfigMap ``<scope>-restore-points``."""
        store = ConfigMapRestorePoints(self.core, self.namespace, mf.restore_points_name(self.spec))
        return RestorePoints(
            lambda: self._connect(self.coordinator_dsn()),
            store,
            self.spec.backup.archive_timeout,
        )


__all__ = ["KubernetesCluster", "KubernetesClusterError"]
