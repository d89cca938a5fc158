"""The Kubernetes API as every part of the backend uses it: one set of clients, the cluster's
label selectors, what a refused or missing object means, and waiting on what the API shows.

The parts (members, groups, leader changes, restarts) take one :class:`KubeApi` rather than
the cluster, as the local backend's parts take its ``Layout``: they share credentials loaded
once and cannot reach into each other. The clients are injectable (the unit tests pass fakes,
the drills clients holding another ServiceAccount's token); otherwise they come from the
kubeconfig (its ``context``), else from the pod's own ServiceAccount.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import KubernetesClusterError, WaitTimeout
from ...waiting import until
from ..spec import ClusterSpec
from . import manifests as mf

T = TypeVar("T")


def status_of(err: Exception) -> int | None:
    """The HTTP status of the client's ApiException (or a fake's), None for anything else."""
    return getattr(err, "status", None)


def refusal(err: Exception) -> str:
    """The API server's own sentence for a refused request (it names the user and the verb)."""
    try:
        return json.loads(getattr(err, "body", "") or "{}").get("message") or str(err)
    except ValueError:
        return str(err)


def poll(
    read: Callable[[], T],
    timeout: float,
    interval: float,
    what: str,
    failure: Callable[[T], str],
    done: Callable[[T], bool] | None = None,
) -> T:
    """:func:`until`, whose timeout says ``failure(last value read)`` as a
    :class:`KubernetesClusterError`: each wait names the kubectl command that shows why, which
    a generic "timed out" line cannot."""
    try:
        return until(read, timeout, interval, what, done=done)
    except WaitTimeout as e:
        raise KubernetesClusterError(failure(e.last)) from e


def _loaded_client(attr: str, doc: str) -> property:
    """A read-only property for one of :class:`KubeApi`'s clients: the injected one, else the
    one :meth:`KubeApi.load` builds on first use (all three are built at once)."""

    def get(api: KubeApi) -> Any:
        api.load()
        return getattr(api, attr)

    return property(get, doc=doc)


class KubeApi:
    """The API clients (core, apps, policy) for one cluster spec's namespace, loaded on first use."""

    def __init__(
        self,
        spec: ClusterSpec,
        core: Any = None,
        apps: Any = None,
        policy: Any = None,
        context: str | None = None,
    ) -> None:
        self.spec = spec
        self.namespace = spec.kubernetes.namespace
        self._core, self._apps, self._policy = core, apps, policy
        self._context = context

    def load(self) -> None:
        """Build whichever client was not injected, from the kubeconfig or the pod's account."""
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

    core = _loaded_client("_core", "The CoreV1Api client.")
    apps = _loaded_client("_apps", "The AppsV1Api client.")
    policy = _loaded_client("_policy", "The PolicyV1Api client.")

    @property
    def server(self) -> str:
        """The API server's URL, as the clients were configured ("" for injected fakes)."""
        config = getattr(getattr(self.core, "api_client", None), "configuration", None)
        return str(getattr(config, "host", "") or "")

    @property
    def selector(self) -> str:
        """Label selector of every object of this cluster (its scope), whatever its group."""
        return ",".join(f"{k}={v}" for k, v in mf.base_labels(self.spec).items())

    def group_selector(self, group: int) -> str:
        return f"{self.selector},{mf.GROUP_LABEL}={group}"

    def group_pods(self, group: int) -> list[Any]:
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=self.group_selector(group)
        ).items


__all__ = ["KubeApi", "KubernetesClusterError", "poll", "refusal", "status_of"]
