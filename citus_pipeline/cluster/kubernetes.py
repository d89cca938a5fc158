"""Kubernetes backend: the HA Citus cluster as StatefulSets managed by Patroni's Kubernetes DCS.

Members are read from the pods and the Endpoints Patroni keeps per group (``k8s_members``
says how) into the same :class:`ClusterTopology` the local backend returns. Citus metadata
comes from the coordinator through psycopg (``citus_meta``). Manifests are applied as
``citus-pipeline k8s apply`` does (``k8s_apply``). The Kubernetes API objects are injectable
so tests pass fakes.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .. import settings
from ..errors import ClusterError
from . import manifests as mf
from .citus_meta import (
    DrainError,
    cleanup_orphans,
    drain_group,
    fetch_dist_nodes,
    read_metadata,
    remove_group_nodes,
)
from .health import SYNC_ROLES
from .k8s_apply import apply_manifests
from .k8s_members import get_path, member_statuses, pod_status
from .spec import TCP_TIMEOUTS, ClusterSpec, load_spec
from .topology import ClusterBackend, ClusterTopology, MemberStatus, Progress

log = logging.getLogger(__name__)

ConnectFn = Callable[[str], psycopg.Connection]


class KubernetesClusterError(ClusterError):
    """Something in the Kubernetes cluster is not as the command needs it (one line)."""


def _default_connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def _status_of(err: Exception) -> int | None:
    return getattr(err, "status", None)


def _refusal(err: Exception) -> str:
    """The API server's own sentence for a refused request (it names the user and the verb)."""
    try:
        return json.loads(getattr(err, "body", "") or "{}").get("message") or str(err)
    except ValueError:
        return str(err)


def _merged(config: dict, patch: dict) -> dict:
    out = dict(config)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merged(out[k], v)
        else:
            out[k] = v
    return out


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.spec = spec or load_spec()
        self.namespace = self.spec.kubernetes.namespace
        self._core, self._apps, self._policy = core_api, apps_api, policy_api
        self._connect = connect or _default_connect
        self._dsn = dsn
        self._context = context
        self._sleep = sleep

    # ---- Kubernetes API ---------------------------------------------------------------------
    def _load_clients(self) -> None:
        if self._core is not None and self._apps is not None and self._policy is not None:
            return
        from kubernetes import client, config

        try:
            config.load_kube_config(context=self._context)
        except (config.ConfigException, FileNotFoundError, TypeError):
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise KubernetesClusterError(
                    "no Kubernetes credentials: set KUBECONFIG (e.g. from "
                    "`yc managed-kubernetes cluster get-credentials ...`) or run inside a pod"
                ) from None
        self._core = self._core or client.CoreV1Api()
        self._apps = self._apps or client.AppsV1Api()
        self._policy = self._policy or client.PolicyV1Api()

    @property
    def core(self) -> Any:
        self._load_clients()
        return self._core

    @property
    def apps(self) -> Any:
        self._load_clients()
        return self._apps

    @property
    def policy(self) -> Any:
        self._load_clients()
        return self._policy

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in mf.base_labels(self.spec).items())

    def _group_selector(self, group: int) -> str:
        return f"{self.selector},{mf.GROUP_LABEL}={group}"

    # ---- topology ---------------------------------------------------------------------------
    def statefulset_groups(self) -> dict[int, Any]:
        """Group id -> StatefulSet, from the StatefulSets of this scope that carry a group label."""
        out: dict[int, Any] = {}
        for sts in self.apps.list_namespaced_stateful_set(
            self.namespace, label_selector=self.selector
        ).items:
            label = (sts.metadata.labels or {}).get(mf.GROUP_LABEL)
            if label is not None and label.isdigit():
                out[int(label)] = sts
        return out

    def member_statuses(self) -> list[MemberStatus]:
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
            endpoints = self.core.list_namespaced_endpoints(
                self.namespace, label_selector=self.selector
            ).items
        except Exception as e:  # the client's ApiException, or a fake's
            if _status_of(e) == 403:
                # most often Dagster's runs under a ServiceAccount the rendered Role is not
                # bound to: say which binding reads the members
                k = self.spec.kubernetes
                raise KubernetesClusterError(
                    f"{_refusal(e)}; the Role {mf.dagster_role_name(self.spec)} grants this to "
                    f"ServiceAccount {k.dagster_namespace}/{k.dagster_service_account} "
                    "(kubernetes.dagster_namespace/dagster_service_account in the spec)"
                ) from None
            raise
        return member_statuses(self.spec, pods, endpoints)

    def coordinator_dsn(self) -> str:
        """libpq DSN of the coordinator leader, without a password.

        The ``dsn`` argument wins, then ``$CITUS_PIPELINE_DSN``; otherwise the coordinator load
        balancer's address. The password comes from PGPASSFILE / ~/.pgpass (or PGPASSWORD from
        a Secret), never from the DSN.
        """
        if self._dsn:
            return self._dsn
        if dsn := settings.DSN.get():
            return dsn
        name = mf.coordinator_lb_name(self.spec)
        try:
            svc = self.core.read_namespaced_service(name, self.namespace)
        except Exception as e:  # the client's ApiException, or a fake's
            if _status_of(e) == 404:
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
            f"host={addr} port={mf.POSTGRES_PORT} dbname={self.spec.database} "
            f"user={self.spec.credentials.superuser} sslmode=require connect_timeout=10 "
            + TCP_TIMEOUTS
        )

    def status(self, with_shards: bool = True) -> ClusterTopology:
        members = self.member_statuses()
        topo = ClusterTopology(
            scope=self.spec.name,
            database=self.spec.database,
            backend="kubernetes",
            members=members,
        )
        if topo.leader(0) is None:
            return topo
        try:
            dsn = self.coordinator_dsn()
        except KubernetesClusterError as e:
            log.warning("%s", e)
            return topo
        topo.coordinator_dsn = dsn
        try:
            with self._connect(dsn) as conn:
                read_metadata(conn, topo, with_shards)
        except psycopg.Error as e:
            log.warning("coordinator not reachable for Citus metadata: %s", e)
        return topo

    # ---- lifecycle --------------------------------------------------------------------------
    def up(self, progress: Progress | None = None, timeout: float = 900) -> ClusterTopology:
        """Apply the rendered manifests (server-side) and wait for a leader in every group."""
        self._load_clients()
        apply_manifests(mf.cluster_manifests(self.spec), self._core.api_client)
        groups = list(range(self.spec.workers.groups + 1))
        return self.wait_for_leaders(groups, timeout, progress)

    def wait_for_leaders(
        self, groups: list[int], timeout: float, progress: Progress | None = None
    ) -> ClusterTopology:
        deadline = time.monotonic() + timeout
        while True:
            topo = self.status(with_shards=False)
            missing = [g for g in groups if topo.leader(g) is None]
            if progress:
                msg = (
                    f"waiting for Patroni leaders of groups {missing}"
                    if missing
                    else "leaders elected"
                )
                progress(msg, len(groups) - len(missing), len(groups))
            if not missing:
                return topo
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"groups {missing} have no Patroni leader after {timeout:.0f}s "
                    f"(kubectl -n {self.namespace} get pods -l {self.selector})"
                )
            self._sleep(5)

    def _live_overrides(self, group0: Any) -> tuple[str | None, str | None]:
        """Image and storage class of the deployed coordinator, so kustomize overlays carry over."""
        containers = get_path(group0, "spec", "template", "spec", "containers") or []
        image = next((c.image for c in containers if c.name == "patroni"), None)
        vcts = get_path(group0, "spec", "volume_claim_templates") or []
        storage = next(
            (v.spec.storage_class_name for v in vcts if v.metadata.name == "pgdata"), None
        )
        return image, storage

    def group_objects(
        self, group: int, image: str | None = None, storage_class: str | None = None
    ) -> list[dict]:
        objs = copy.deepcopy(mf.group_manifests(self.spec, group))
        for o in objs:
            o["metadata"]["namespace"] = self.namespace
            if o["kind"] == "StatefulSet":
                pod = o["spec"]["template"]["spec"]
                if image:
                    for c in pod["containers"]:
                        if c["name"] == "patroni":
                            c["image"] = image
                if storage_class:
                    for v in o["spec"]["volumeClaimTemplates"]:
                        v["spec"]["storageClassName"] = storage_class
        return objs

    def _create(self, obj: dict) -> None:
        ns, kind = self.namespace, obj["kind"]
        creators = {
            "Service": self.core.create_namespaced_service,
            "Endpoints": self.core.create_namespaced_endpoints,
            "StatefulSet": self.apps.create_namespaced_stateful_set,
            "PodDisruptionBudget": self.policy.create_namespaced_pod_disruption_budget,
        }
        creators[kind](ns, obj)

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
        image, storage = self._live_overrides(existing[0])
        for obj in self.group_objects(group, image, storage):
            self._create(obj)
        if wait:
            self.wait_for_leaders([group], timeout, progress)
            self._wait_registered(group, timeout)
        return group

    def _wait_registered(self, group: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        dsn = self.coordinator_dsn()
        while True:
            try:
                with self._connect(dsn) as conn:
                    if any(
                        n.groupid == group and n.role == "primary" and n.active
                        for n in fetch_dist_nodes(conn)
                    ):
                        return
            except psycopg.Error as e:
                log.info("waiting for the coordinator: %s", e)
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"group {group} is not in pg_dist_node after {timeout:.0f}s"
                )
            self._sleep(5)

    def _delete_group_objects(self, group: int) -> list[str]:
        ns = self.namespace
        name = mf.group_name(self.spec, group)
        deletions = [
            ("PodDisruptionBudget", name, self.policy.delete_namespaced_pod_disruption_budget),
            ("StatefulSet", name, self.apps.delete_namespaced_stateful_set),
            ("Service", mf.headless_name(self.spec, group), self.core.delete_namespaced_service),
            ("Service", name, self.core.delete_namespaced_service),
            ("Service", mf.config_name(self.spec, group), self.core.delete_namespaced_service),
            ("Endpoints", name, self.core.delete_namespaced_endpoints),
            ("Endpoints", mf.config_name(self.spec, group), self.core.delete_namespaced_endpoints),
            ("Endpoints", mf.sync_name(self.spec, group), self.core.delete_namespaced_endpoints),
            (
                "Endpoints",
                mf.failover_name(self.spec, group),
                self.core.delete_namespaced_endpoints,
            ),
        ]
        deleted = []
        for kind, obj_name, fn in deletions:
            try:
                fn(obj_name, ns)
                deleted.append(f"{kind}/{obj_name}")
            except Exception as e:
                if _status_of(e) != 404:
                    raise
        return deleted

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
        self._pause_group(group, timeout)
        self._delete_group_objects(group)
        self._wait_pods_gone(group, timeout)
        with self._connect(dsn) as conn:
            remove_group_nodes(conn, group, gone=True)
        self.core.delete_collection_namespaced_persistent_volume_claim(
            self.namespace, label_selector=self._group_selector(group)
        )
        return moved

    def set_group_config(self, group: int, patch: dict) -> None:
        """Merge ``patch`` into one group's dynamic configuration, as Patroni's ``PATCH
        /config`` does (nested keys merged, a None value removes its key). On Kubernetes it
        is the ``config`` annotation of the group's ``-config`` Endpoints, which every member
        watches; the write carries the version read, so a concurrent change is not lost."""
        name = mf.config_name(self.spec, group)
        ep = self.core.read_namespaced_endpoints(name, self.namespace)
        config = _merged(json.loads((ep.metadata.annotations or {}).get("config") or "{}"), patch)
        meta: dict = {"annotations": {"config": json.dumps(config, separators=(",", ":"))}}
        if ep.metadata.resource_version:
            meta["resourceVersion"] = ep.metadata.resource_version
        body = {"metadata": meta}
        self.core.patch_namespaced_endpoints(name, self.namespace, body)

    def _pause_group(self, group: int, timeout: float) -> None:
        """Patroni's maintenance mode for one group (its ``-config`` Endpoints), until every
        member reports it."""
        self.set_group_config(group, {"pause": True})
        deadline = time.monotonic() + timeout
        while True:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=self._group_selector(group)
            ).items
            if all(pod_status(p).get("pause") for p in pods):
                return
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"group {group}: Patroni did not enter maintenance mode in {timeout:.0f}s"
                )
            self._sleep(1)

    def _wait_pods_gone(self, group: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.core.list_namespaced_pod(
            self.namespace, label_selector=self._group_selector(group)
        ).items:
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"pods of group {group} still exist after {timeout:.0f}s"
                )
            self._sleep(2)

    # ---- restarts (`cluster restart`): a member's pod deleted, its StatefulSet recreates it ---
    def restart_member(self, name: str, timeout: float = 300) -> None:
        """Restart one member by deleting its pod (gracefully: Patroni stops PostgreSQL on
        SIGTERM); its StatefulSet recreates it on the same volume, and PostgreSQL starts with
        the DCS's parameters. Returns once the member, in its new pod, runs (or streams) with
        no restart pending and its group has a leader. `rolling.rolling_restart` orders the
        calls (standbys, a switchover, the former leader).

        Not Patroni's REST restart, as on the local backend: from outside the cluster its
        password does not get through the apiserver's pod proxy (which drops the
        Authorization header), and a new pod is what a Kubernetes rolling update does anyway
        (it also takes a changed image or resources)."""
        ns = self.namespace
        try:
            old = self.core.read_namespaced_pod(name, ns).metadata.uid
        except Exception as e:  # the client's ApiException, or a fake's
            if _status_of(e) == 404:
                raise KubernetesClusterError(f"no pod {name} in namespace {ns}") from None
            raise
        self.core.delete_namespaced_pod(name, ns)
        deadline = time.monotonic() + timeout
        seen = "its pod not yet recreated"
        while True:
            self._sleep(2)
            try:
                uid = self.core.read_namespaced_pod(name, ns).metadata.uid
            except Exception as e:  # the client's ApiException, or a fake's
                if _status_of(e) != 404:
                    raise
                uid = None
            if uid is not None and uid != old:
                topo = self.status(with_shards=False)
                me = next((m for m in topo.members if m.name == name), None)
                seen = f"{me.role} {me.state}" if me else "not reported by Patroni"
                if (
                    me is not None
                    and me.state in ("running", "streaming")
                    and not me.pending_restart
                    and self._group_ready(topo, me.group)
                ):
                    return
            if time.monotonic() > deadline:
                raise KubernetesClusterError(
                    f"{name} not running again {timeout:.0f}s after its pod was deleted "
                    f"({seen}; kubectl -n {ns} describe pod {name})"
                )

    def _group_ready(self, topo: ClusterTopology, group: int) -> bool:
        """The group led, and in synchronous mode with a synchronous standby streaming: what
        the next step of a rolling restart (a switchover to that standby) needs."""
        members = topo.members_of(group)
        if topo.leader(group) is None:
            return False
        if not self.spec.patroni.synchronous_mode or len(members) < 2:
            return True
        return any(m.role in SYNC_ROLES and m.state == "streaming" for m in members)

    # ---- switchover / failover through Patroni's failover Endpoints ---------------------------
    def _request_failover(self, group: int, leader: str | None, candidate: str | None) -> None:
        name = mf.failover_name(self.spec, group)
        body = {
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {**mf.base_labels(self.spec), mf.GROUP_LABEL: str(group)},
                "annotations": {"leader": leader, "member": candidate, "scheduled_at": None},
            }
        }
        try:
            self.core.patch_namespaced_endpoints(name, self.namespace, body)
        except Exception as e:
            if _status_of(e) != 404:
                raise
            body["metadata"]["annotations"] = {
                k: v for k, v in body["metadata"]["annotations"].items() if v
            }
            self.core.create_namespaced_endpoints(self.namespace, body)

    def _handover(self, group: int, candidate: str | None, planned: bool, timeout: float) -> str:
        topo = self.status(with_shards=False)
        members = topo.members_of(group)
        if not members:
            raise KubernetesClusterError(
                f"group {group} has no members in namespace {self.namespace}"
            )
        leader = topo.leader(group)
        if planned and leader is None:
            raise KubernetesClusterError(f"group {group} has no leader to switch over from")
        if candidate is not None and candidate not in {m.name for m in members}:
            raise KubernetesClusterError(f"{candidate} is not a member of group {group}")
        if candidate is None:
            pick = [m for m in members if m.role == "sync_standby"] or [
                m for m in members if m.role == "replica"
            ]
            if not pick:
                raise KubernetesClusterError(f"group {group} has no standby to take over")
            candidate = pick[0].name
        self._request_failover(group, leader.name if (planned and leader) else None, candidate)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._sleep(2)
            new = self.status(with_shards=False).leader(group)
            if new is not None and new.name == candidate:
                return candidate
        raise KubernetesClusterError(
            f"{candidate} did not become leader of group {group} in {timeout:.0f}s"
        )

    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._handover(group, candidate, planned=True, timeout=timeout)

    def failover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._handover(group, candidate, planned=False, timeout=timeout)


__all__ = ["DrainError", "KubernetesCluster", "KubernetesClusterError"]
