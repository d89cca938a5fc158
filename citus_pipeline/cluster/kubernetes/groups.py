"""The Kubernetes objects of one Citus group: created for a new worker group, deleted with it,
and its Patroni configuration changed in place.

A group is a StatefulSet with its Services, Patroni's Endpoints and a PodDisruptionBudget,
rendered by :mod:`.manifests` exactly as ``k8s apply`` renders them, so a group added later is
the same as one deployed at first. Only the image and storage class are taken from the running
coordinator: whatever a kustomize overlay changed there carries over.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from . import manifests as mf
from .api import KubeApi, poll, status_of
from .members import get_path, pod_status


def merged(config: dict, patch: dict) -> dict:
    """``patch`` merged into ``config`` as Patroni's ``PATCH /config`` does: nested keys
    merged, a None value removing its key."""
    out = dict(config)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


class Groups:
    """Create, change and delete the objects of one group at a time."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.spec = api.spec
        self.namespace = api.namespace

    def statefulsets(self) -> dict[int, Any]:
        """Group id -> StatefulSet, from the StatefulSets of this scope that carry a group label."""
        out: dict[int, Any] = {}
        for sts in self.api.apps.list_namespaced_stateful_set(
            self.namespace, label_selector=self.api.selector
        ).items:
            label = (sts.metadata.labels or {}).get(mf.GROUP_LABEL)
            if label is not None and label.isdigit():
                out[int(label)] = sts
        return out

    @staticmethod
    def live_overrides(group0: Any) -> tuple[str | None, str | None]:
        """Image and storage class of the deployed coordinator, so kustomize overlays carry over."""
        containers = get_path(group0, "spec", "template", "spec", "containers") or []
        image = next((c.image for c in containers if c.name == "patroni"), None)
        vcts = get_path(group0, "spec", "volume_claim_templates") or []
        storage = next(
            (v.spec.storage_class_name for v in vcts if v.metadata.name == "pgdata"), None
        )
        return image, storage

    def objects(
        self, group: int, image: str | None = None, storage_class: str | None = None
    ) -> list[dict]:
        """The rendered objects of ``group`` in this namespace, with the live overrides."""
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

    def create(self, group: int, image: str | None = None, storage_class: str | None = None):
        core, apps, policy = self.api.core, self.api.apps, self.api.policy
        creators = {
            "Service": core.create_namespaced_service,
            "Endpoints": core.create_namespaced_endpoints,
            "StatefulSet": apps.create_namespaced_stateful_set,
            "PodDisruptionBudget": policy.create_namespaced_pod_disruption_budget,
        }
        for obj in self.objects(group, image, storage_class):
            creators[obj["kind"]](self.namespace, obj)

    def delete(self, group: int) -> list[str]:
        """Delete every object of ``group`` but its volumes; returns those that existed."""
        core, apps, policy = self.api.core, self.api.apps, self.api.policy
        name = mf.group_name(self.spec, group)
        deletions = [
            ("PodDisruptionBudget", name, policy.delete_namespaced_pod_disruption_budget),
            ("StatefulSet", name, apps.delete_namespaced_stateful_set),
            ("Service", mf.headless_name(self.spec, group), core.delete_namespaced_service),
            ("Service", name, core.delete_namespaced_service),
            ("Service", mf.config_name(self.spec, group), core.delete_namespaced_service),
            ("Endpoints", name, core.delete_namespaced_endpoints),
            ("Endpoints", mf.config_name(self.spec, group), core.delete_namespaced_endpoints),
            ("Endpoints", mf.sync_name(self.spec, group), core.delete_namespaced_endpoints),
            ("Endpoints", mf.failover_name(self.spec, group), core.delete_namespaced_endpoints),
        ]
        deleted = []
        for kind, obj_name, fn in deletions:
            try:
                fn(obj_name, self.namespace)
                deleted.append(f"{kind}/{obj_name}")
            except Exception as e:  # the client's ApiException, or a fake's
                if status_of(e) != 404:
                    raise
        return deleted

    def delete_volumes(self, group: int) -> None:
        self.api.core.delete_collection_namespaced_persistent_volume_claim(
            self.namespace, label_selector=self.api.group_selector(group)
        )

    def set_config(self, group: int, patch: dict) -> None:
        """Merge ``patch`` into one group's dynamic configuration (see :func:`merged`). On
        Kubernetes it is the ``config`` annotation of the group's ``-config`` Endpoints, which
        every member watches; the write carries the version read, so a concurrent change is
        not lost."""
        core = self.api.core
        name = mf.config_name(self.spec, group)
        ep = core.read_namespaced_endpoints(name, self.namespace)
        config = merged(json.loads((ep.metadata.annotations or {}).get("config") or "{}"), patch)
        meta: dict = {"annotations": {"config": json.dumps(config, separators=(",", ":"))}}
        if ep.metadata.resource_version:
            meta["resourceVersion"] = ep.metadata.resource_version
        core.patch_namespaced_endpoints(name, self.namespace, {"metadata": meta})

    def pause(self, group: int, timeout: float) -> None:
        """Patroni's maintenance mode for one group (its ``-config`` Endpoints), until every
        member reports it."""
        self.set_config(group, {"pause": True})
        poll(
            lambda: self.api.group_pods(group),
            timeout,
            1,
            f"group {group} in maintenance mode",
            lambda _pods: (
                f"group {group}: Patroni did not enter maintenance mode in {timeout:.0f}s"
            ),
            done=lambda pods: all(pod_status(p).get("pause") for p in pods),
        )

    def wait_pods_gone(self, group: int, timeout: float) -> None:
        poll(
            lambda: self.api.group_pods(group),
            timeout,
            2,
            f"the pods of group {group} gone",
            lambda _pods: f"pods of group {group} still exist after {timeout:.0f}s",
            done=lambda pods: not pods,
        )


__all__ = ["Groups", "merged"]
