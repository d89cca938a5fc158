"""Kubernetes backend: the HA Citus cluster as StatefulSets managed by Patroni's Kubernetes DCS.

:class:`KubernetesCluster` (``cluster.py``) composes small parts, each given one
:class:`KubeApi` (``api.py``: the clients, the label selectors, waiting) rather than the
cluster: ``members`` (Patroni's pod and Endpoints annotations as member rows), ``groups``
(the objects of one group: created, configured, deleted), ``handover`` (switchover and
failover through the ``-failover`` Endpoints), ``restarts`` (a member's pod recreated),
``restore_points`` (their record in a ConfigMap) and ``apply`` (server-side apply and offline
validation, shared with ``citus-pipeline k8s``). ``manifests`` renders every object from the
spec as pure functions, so the committed base and the backend agree.
"""

from __future__ import annotations

from .cluster import KubernetesCluster

__all__ = ["KubernetesCluster"]
