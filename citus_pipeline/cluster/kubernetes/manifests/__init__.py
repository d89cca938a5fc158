"""Kubernetes manifests rendered from the ClusterSpec (pure functions: spec -> list of dicts).

One Citus group (0 = coordinator, 1..N = workers) is one Patroni cluster inside the scope
``spec.name``; Patroni's Kubernetes DCS keeps its state in Endpoints annotations
(``use_endpoints: true``) and labels its pods with the role. Per group we render:

* ``<scope>-<g>`` StatefulSet (PVC storage, hostname anti-affinity, readiness on /readiness)
* ``<scope>-<g>-headless`` headless Service: stable DNS ``<pod>.<scope>-<g>-headless.<ns>.svc``
  that every member registers as its connect address (so pg_dist_node never keeps a dead pod IP)
* ``<scope>-<g>`` Service + Endpoints without selector: the leader endpoint Patroni maintains
* ``<scope>-<g>-config`` headless Service: keeps the ``-config`` Endpoints from being garbage
  collected by the endpoints controller
* ``<scope>-<g>`` PodDisruptionBudget (at most one member voluntarily down)

Shared objects: Namespace, ServiceAccount/Role/RoleBinding (exactly the verbs Patroni's
Kubernetes DCS calls), the Patroni bootstrap ConfigMap, NetworkPolicies and the two
``LoadBalancer`` Services (``<scope>-coordinator`` -> coordinator leader,
``<scope>-workers`` -> worker leaders). Metrics: every member's pod has a postgres exporter
sidecar and ``prometheus.io`` scrape annotations; the exporter queries' ConfigMap, a
NetworkPolicy for the Prometheus namespace and (``kubernetes.pod_monitor``) a PodMonitor.
The pooler (``pooler.enabled``): PgBouncer's Deployment in front of the coordinator's leader
Service, its ConfigMap, load balancer, PDB and NetworkPolicies.
Backups (``backup.archiving``): a pgBackRest ConfigMap every member mounts, the S3 keys from a
Secret, and a CronJob that backs up each group on its leader (its own ServiceAccount and Role).
Secrets are referenced, never rendered.
"""

from __future__ import annotations

# Each submodule's __all__ is its public names, spelled once there; the package re-exports
# them all (the asyncio layout), so a name added to a submodule needs no second list here.
from . import backup, files, group, names, pooler, shared
from .backup import *
from .files import *
from .group import *
from .names import *
from .pooler import *
from .shared import *

__all__ = (
    backup.__all__ + files.__all__ + group.__all__ + names.__all__ + pooler.__all__ + shared.__all__
)
