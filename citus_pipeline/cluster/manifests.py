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
``<scope>-workers`` -> worker leaders). Secrets are referenced, never rendered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .spec import ClusterSpec, ResourcesSpec, SpecError

Manifest = dict[str, Any]

POSTGRES_PORT = 5432
RESTAPI_PORT = 8008
APP_LABEL = "application"
APP_VALUE = "citus-pipeline"
SCOPE_LABEL = "cluster-name"  # Patroni's default kubernetes.scope_label
GROUP_LABEL = "citus-group"  # Patroni: <mpp type>-group (postgresql/mpp/__init__.py)
TYPE_LABEL = "citus-type"
ROLE_LABEL = "role"  # set by Patroni on its own pod
LEADER_LABEL_VALUE = "primary"
FOLLOWER_LABEL_VALUE = "replica"
FIELD_MANAGER = "citus-pipeline"

PGDATA_MOUNT = "/home/postgres/pgdata"
PGDATA_DIR = f"{PGDATA_MOUNT}/pgroot/data"
TLS_MOUNT = "/etc/citus-tls"
BOOTSTRAP_MOUNT = "/etc/patroni"
BOOTSTRAP_KEY = "bootstrap.yaml"
# The entrypoint copies the mounted key here with mode 0600 (PostgreSQL refuses group-readable keys).
TLS_KEY_COPY = "/tmp/tls/tls.key"
IMAGE_UID = 999  # user `postgres` in k8s/image/Dockerfile

SECRET_KEYS = {
    "superuser": "superuser-password",
    "replication": "replication-password",
    "restapi": "restapi-password",
}

# Exactly what patroni/dcs/kubernetes.py calls with use_endpoints: true (see the unit test that
# re-derives it from Patroni's source): the pod/endpoint caches list+watch, touch_member patches
# its own pod, the leader/config/sync/failover endpoints are created, read and patched, and
# _create_config_service creates the headless `-config` Service when it is missing.
# `deletecollection` on endpoints is used only by `patronictl remove`, not by the daemon: left out.
PATRONI_RBAC_RULES: list[Manifest] = [
    {
        "apiGroups": [""],
        "resources": ["endpoints"],
        "verbs": ["create", "get", "list", "patch", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "watch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ---- names ----------------------------------------------------------------------------------
def _check_names(spec: ClusterSpec) -> None:
    if not _DNS_LABEL.match(spec.name):
        raise SpecError(f"name: {spec.name!r} is not a valid Kubernetes name (a-z, 0-9, '-')")
    longest = f"{spec.name}-{spec.workers.groups + 16}-config"
    if len(longest) > 63:
        raise SpecError(f"name: {spec.name!r} is too long for Kubernetes object names")


def group_name(spec: ClusterSpec, group: int) -> str:
    """StatefulSet, leader Service/Endpoints and PDB name; also Patroni's leader endpoint."""
    return f"{spec.name}-{group}"


def headless_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-headless"


def config_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-config"


def sync_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-sync"


def failover_name(spec: ClusterSpec, group: int) -> str:
    return f"{spec.name}-{group}-failover"


def service_account_name(spec: ClusterSpec) -> str:
    return spec.name


def bootstrap_configmap_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-patroni"


def coordinator_lb_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-coordinator"


def workers_lb_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-workers"


def member_dns_name(
    spec: ClusterSpec, group: int, ordinal: int, namespace: str | None = None
) -> str:
    ns = namespace or spec.kubernetes.namespace
    return f"{group_name(spec, group)}-{ordinal}.{headless_name(spec, group)}.{ns}.svc"


def tls_dns_names(spec: ClusterSpec, groups: int | None = None) -> list[str]:
    """DNS names the member certificate must cover (wildcard per group's headless service).

    ``groups``: highest group id to cover (default: the spec's groups + 16 for add-worker).
    """
    last = spec.workers.groups + 16 if groups is None else groups
    ns = spec.kubernetes.namespace
    names = []
    for g in range(last + 1):
        names.append(f"*.{headless_name(spec, g)}.{ns}.svc")
        names.append(f"*.{headless_name(spec, g)}.{ns}.svc.cluster.local")
    names.append(f"{coordinator_lb_name(spec)}.{ns}.svc")
    names.append(f"{workers_lb_name(spec)}.{ns}.svc")
    return names


# ---- labels ---------------------------------------------------------------------------------
def base_labels(spec: ClusterSpec) -> dict[str, str]:
    """Labels Patroni selects on (its kubernetes.labels plus the scope label)."""
    return {APP_LABEL: APP_VALUE, SCOPE_LABEL: spec.name}


def group_type(group: int) -> str:
    return "coordinator" if group == 0 else "worker"


def group_labels(spec: ClusterSpec, group: int) -> dict[str, str]:
    return {**base_labels(spec), GROUP_LABEL: str(group), TYPE_LABEL: group_type(group)}


def patroni_kubernetes_labels(spec: ClusterSpec) -> dict[str, str]:
    """PATRONI_KUBERNETES_LABELS: deliberately WITHOUT citus-group.

    Patroni builds its list/watch label selector from these labels (plus the scope label)
    before adding the group label, so a group label here would hide the other groups from
    the coordinator, which then never registers the workers in pg_dist_node. Patroni adds
    ``citus-group`` itself (from PATRONI_CITUS_GROUP) to the objects it writes; the pod
    template carries it for the same reason.
    """
    return {APP_LABEL: APP_VALUE}


def selector_service_labels(spec: ClusterSpec, component: str, **more: str) -> dict[str, str]:
    """Labels for Services WITH a selector (headless, load balancers).

    Their Endpoints are written by the endpoints controller, which copies the Service's
    labels; without the ``application`` label they stay out of Patroni's label selector, so
    Patroni neither caches nor wakes up on every readiness change of those Endpoints.
    """
    return {
        SCOPE_LABEL: spec.name,
        "app.kubernetes.io/part-of": APP_VALUE,
        "app.kubernetes.io/component": component,
        **more,
    }


def _meta(spec: ClusterSpec, name: str, labels: dict[str, str], **extra: Any) -> Manifest:
    meta: Manifest = {"name": name, "namespace": spec.kubernetes.namespace, "labels": dict(labels)}
    meta.update(extra)
    return meta


# ---- shared objects -------------------------------------------------------------------------
def namespace_manifest(spec: ClusterSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.kubernetes.namespace, "labels": {APP_LABEL: APP_VALUE}},
    }


def rbac_manifests(spec: ClusterSpec) -> list[Manifest]:
    labels = base_labels(spec)
    sa = service_account_name(spec)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(spec, sa, labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(spec, f"{spec.name}-patroni", labels),
            "rules": [dict(r, verbs=list(r["verbs"])) for r in PATRONI_RBAC_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(spec, f"{spec.name}-patroni", labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{spec.name}-patroni",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": sa, "namespace": spec.kubernetes.namespace}
            ],
        },
    ]


def k8s_postgres_parameters(spec: ClusterSpec) -> dict[str, Any]:
    """Spec parameters plus what the Kubernetes deployment enforces (SCRAM, TLS verify-full)."""
    params = dict(spec.postgresql.parameters)
    params["password_encryption"] = "scram-sha-256"
    params["citus.node_conninfo"] = f"sslmode=verify-full sslrootcert={TLS_MOUNT}/ca.crt"
    return params


def patroni_bootstrap_config(spec: ClusterSpec) -> dict[str, Any]:
    """patroni.yml fragment the entrypoint merges with the per-pod settings from the env."""
    repl = spec.credentials.replication_user
    return {
        "bootstrap": {
            # Only TLS + SCRAM from the network; the unix socket needs the password too.
            "dcs": spec.patroni_dcs(
                k8s_postgres_parameters(spec),
                pg_hba=[
                    "local all all scram-sha-256",
                    f"hostssl replication {repl} 0.0.0.0/0 scram-sha-256",
                    f"hostssl replication {repl} ::/0 scram-sha-256",
                    "hostssl all all 0.0.0.0/0 scram-sha-256",
                    "hostssl all all ::/0 scram-sha-256",
                ],
            ),
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                "data-checksums",
                {"auth-host": "scram-sha-256"},
                {"auth-local": "scram-sha-256"},
            ],
        },
        "postgresql": {
            "use_unix_socket": True,
            "parameters": {
                "ssl": "on",
                "ssl_cert_file": f"{TLS_MOUNT}/tls.crt",
                "ssl_key_file": TLS_KEY_COPY,
                "ssl_ca_file": f"{TLS_MOUNT}/ca.crt",
            },
        },
    }


def bootstrap_configmap(spec: ClusterSpec) -> Manifest:
    text = yaml.safe_dump(patroni_bootstrap_config(spec), sort_keys=False, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, bootstrap_configmap_name(spec), base_labels(spec)),
        "data": {BOOTSTRAP_KEY: text},
    }


def load_balancer_manifests(spec: ClusterSpec) -> list[Manifest]:
    out = []
    for name, kind in (
        (coordinator_lb_name(spec), "coordinator"),
        (workers_lb_name(spec), "worker"),
    ):
        selector = {**base_labels(spec), TYPE_LABEL: kind, ROLE_LABEL: LEADER_LABEL_VALUE}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(
                    spec, name, selector_service_labels(spec, "load-balancer", **{TYPE_LABEL: kind})
                ),
                "spec": {
                    "type": "LoadBalancer",
                    # Local: the client address survives, so the NetworkPolicy's ipBlock applies.
                    "externalTrafficPolicy": "Local",
                    "selector": selector,
                    "ports": [
                        {
                            "name": "postgresql",
                            "port": POSTGRES_PORT,
                            "targetPort": "postgresql",
                            "protocol": "TCP",
                        }
                    ],
                },
            }
        )
    return out


def network_policy_manifests(spec: ClusterSpec) -> list[Manifest]:
    labels = base_labels(spec)
    citus_pods = {"matchLabels": dict(labels)}

    def policy(name: str, pod_selector: Manifest, ingress: list[Manifest]) -> Manifest:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(spec, name, labels),
            "spec": {"podSelector": pod_selector, "policyTypes": ["Ingress"], "ingress": ingress},
        }

    def port(p: int) -> Manifest:
        return {"protocol": "TCP", "port": p}

    return [
        # Everything not allowed below is denied.
        policy(f"{spec.name}-default-deny", {"matchLabels": dict(labels)}, []),
        # Members reach each other: replication/Citus on 5432, Patroni REST API on 8008.
        policy(
            f"{spec.name}-members",
            citus_pods,
            [
                {
                    "from": [{"podSelector": {"matchLabels": dict(labels)}}],
                    "ports": [port(POSTGRES_PORT), port(RESTAPI_PORT)],
                }
            ],
        ),
        # Dagster (its own namespace) reaches the coordinator on 5432.
        policy(
            f"{spec.name}-dagster-to-coordinator",
            {"matchLabels": {**labels, TYPE_LABEL: "coordinator"}},
            [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": spec.kubernetes.dagster_namespace
                                }
                            }
                        }
                    ],
                    "ports": [port(POSTGRES_PORT)],
                }
            ],
        ),
        # Load balancer clients reach the leaders (the LBs' only targets) on 5432.
        policy(
            f"{spec.name}-load-balancer-clients",
            {"matchLabels": {**labels, ROLE_LABEL: LEADER_LABEL_VALUE}},
            [
                {
                    "from": [{"ipBlock": {"cidr": c}} for c in spec.kubernetes.client_cidrs],
                    "ports": [port(POSTGRES_PORT)],
                }
            ],
        ),
    ]


# ---- per group ------------------------------------------------------------------------------
def _resources(r: ResourcesSpec) -> Manifest:
    out: Manifest = {"requests": {"cpu": r.cpu, "memory": r.memory}}
    limits = {k: v for k, v in (("cpu", r.cpu_limit), ("memory", r.memory_limit)) if v}
    if limits:
        out["limits"] = limits
    return out


def _secret_env(spec: ClusterSpec, name: str, key: str) -> Manifest:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": spec.credentials.kubernetes_secret, "key": key}},
    }


def _field_env(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def member_env(spec: ClusterSpec, group: int) -> list[Manifest]:
    """The environment Patroni (and the image's entrypoint) needs in a member of ``group``."""
    cred = spec.credentials
    headless = headless_name(spec, group)
    dns = f"$(PATRONI_NAME).{headless}.$(PATRONI_KUBERNETES_NAMESPACE).svc"
    ca = f"{TLS_MOUNT}/ca.crt"
    # PATRONI_NAME and PATRONI_KUBERNETES_NAMESPACE come first: later values expand them.
    return [
        _field_env("PATRONI_NAME", "metadata.name"),
        _field_env("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        _field_env("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
        {"name": "PATRONI_SCOPE", "value": spec.name},
        {"name": "PATRONI_KUBERNETES_USE_ENDPOINTS", "value": "true"},
        {"name": "PATRONI_KUBERNETES_LABELS", "value": json.dumps(patroni_kubernetes_labels(spec))},
        {"name": "PATRONI_KUBERNETES_SCOPE_LABEL", "value": SCOPE_LABEL},
        {"name": "PATRONI_KUBERNETES_ROLE_LABEL", "value": ROLE_LABEL},
        {"name": "PATRONI_KUBERNETES_LEADER_LABEL_VALUE", "value": LEADER_LABEL_VALUE},
        {"name": "PATRONI_KUBERNETES_FOLLOWER_LABEL_VALUE", "value": FOLLOWER_LABEL_VALUE},
        {
            "name": "PATRONI_KUBERNETES_PORTS",
            "value": json.dumps([{"name": "postgresql", "port": POSTGRES_PORT}]),
        },
        {"name": "PATRONI_CITUS_GROUP", "value": str(group)},
        {"name": "PATRONI_CITUS_DATABASE", "value": spec.database},
        {"name": "PATRONI_POSTGRESQL_DATA_DIR", "value": PGDATA_DIR},
        {"name": "PATRONI_POSTGRESQL_PGPASS", "value": "/tmp/pgpass"},
        {"name": "PATRONI_POSTGRESQL_LISTEN", "value": f"0.0.0.0:{POSTGRES_PORT}"},
        {"name": "PATRONI_POSTGRESQL_CONNECT_ADDRESS", "value": f"{dns}:{POSTGRES_PORT}"},
        {"name": "PATRONI_RESTAPI_LISTEN", "value": f"0.0.0.0:{RESTAPI_PORT}"},
        {"name": "PATRONI_RESTAPI_CONNECT_ADDRESS", "value": f"{dns}:{RESTAPI_PORT}"},
        {"name": "PATRONI_RESTAPI_USERNAME", "value": cred.restapi_user},
        _secret_env(spec, "PATRONI_RESTAPI_PASSWORD", SECRET_KEYS["restapi"]),
        {"name": "PATRONI_SUPERUSER_USERNAME", "value": cred.superuser},
        _secret_env(spec, "PATRONI_SUPERUSER_PASSWORD", SECRET_KEYS["superuser"]),
        {"name": "PATRONI_SUPERUSER_SSLMODE", "value": "verify-full"},
        {"name": "PATRONI_SUPERUSER_SSLROOTCERT", "value": ca},
        {"name": "PATRONI_REPLICATION_USERNAME", "value": cred.replication_user},
        _secret_env(spec, "PATRONI_REPLICATION_PASSWORD", SECRET_KEYS["replication"]),
        {"name": "PATRONI_REPLICATION_SSLMODE", "value": "verify-full"},
        {"name": "PATRONI_REPLICATION_SSLROOTCERT", "value": ca},
        {"name": "CITUS_PATRONI_BOOTSTRAP_FILE", "value": f"{BOOTSTRAP_MOUNT}/{BOOTSTRAP_KEY}"},
        {"name": "CITUS_TLS_DIR", "value": TLS_MOUNT},
    ]


def statefulset_manifest(spec: ClusterSpec, group: int) -> Manifest:
    k = spec.kubernetes
    name = group_name(spec, group)
    labels = group_labels(spec, group)
    selector = {**base_labels(spec), GROUP_LABEL: str(group)}
    resources = k.coordinator_resources if group == 0 else k.worker_resources
    pvc_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": k.storage_size}},
    }
    if k.storage_class:
        pvc_spec["storageClassName"] = k.storage_class
    probe_common = {"periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "patroni",
        "image": k.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "postgresql", "containerPort": POSTGRES_PORT, "protocol": "TCP"},
            {"name": "patroni", "containerPort": RESTAPI_PORT, "protocol": "TCP"},
        ],
        "env": member_env(spec, group),
        "resources": _resources(resources),
        "readinessProbe": {
            "httpGet": {"path": "/readiness", "port": "patroni", "scheme": "HTTP"},
            "initialDelaySeconds": 5,
            "failureThreshold": 3,
            **probe_common,
        },
        "livenessProbe": {
            "httpGet": {"path": "/liveness", "port": "patroni", "scheme": "HTTP"},
            "initialDelaySeconds": 30,
            "failureThreshold": 6,
            **probe_common,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "pgdata", "mountPath": PGDATA_MOUNT},
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "bootstrap", "mountPath": BOOTSTRAP_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "run", "mountPath": "/var/run/postgresql"},
        ],
    }
    pod_spec = {
        "serviceAccountName": service_account_name(spec),
        "terminationGracePeriodSeconds": k.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {
            "podAntiAffinity": {
                # Never two members of one group on one node ...
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": dict(selector)},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ],
                # ... and spread them over zones where there is room.
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": dict(selector)},
                            "topologyKey": "topology.kubernetes.io/zone",
                        },
                    }
                ],
            }
        },
        "containers": [container],
        "volumes": [
            {"name": "tls", "secret": {"secretName": k.tls_secret, "defaultMode": 0o440}},
            {"name": "bootstrap", "configMap": {"name": bootstrap_configmap_name(spec)}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "run", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(spec, name, labels),
        "spec": {
            "serviceName": headless_name(spec, group),
            "replicas": spec.members_in_group(group),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            "volumeClaimTemplates": [
                {"metadata": {"name": "pgdata", "labels": dict(labels)}, "spec": pvc_spec}
            ],
        },
    }


def group_manifests(spec: ClusterSpec, group: int) -> list[Manifest]:
    """Every object of one Citus group (what add-worker creates and remove-worker deletes)."""
    _check_names(spec)
    if group < 0:
        raise SpecError(f"group {group}: groups are 0 (coordinator) or 1..N (workers)")
    labels = group_labels(spec, group)
    selector = {**base_labels(spec), GROUP_LABEL: str(group)}
    name = group_name(spec, group)
    pg_port = {"name": "postgresql", "port": POSTGRES_PORT, "protocol": "TCP"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(
                spec,
                headless_name(spec, group),
                selector_service_labels(
                    spec, "member-dns", **{GROUP_LABEL: str(group), TYPE_LABEL: group_type(group)}
                ),
            ),
            "spec": {
                "clusterIP": "None",
                # Members must resolve each other while still bootstrapping (not yet ready).
                "publishNotReadyAddresses": True,
                "selector": selector,
                "ports": [
                    {**pg_port, "targetPort": "postgresql"},
                    {
                        "name": "patroni",
                        "port": RESTAPI_PORT,
                        "targetPort": "patroni",
                        "protocol": "TCP",
                    },
                ],
            },
        },
        {
            # Leader service: no selector, Patroni writes the leader's IP into its Endpoints.
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(spec, name, labels),
            "spec": {"type": "ClusterIP", "ports": [{**pg_port, "targetPort": POSTGRES_PORT}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": _meta(spec, name, labels),
            "subsets": [],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(spec, config_name(spec, group), labels),
            "spec": {"clusterIP": "None"},
        },
        statefulset_manifest(spec, group),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(spec, name, labels),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        },
    ]


def shared_manifests(spec: ClusterSpec) -> list[Manifest]:
    _check_names(spec)
    return [
        namespace_manifest(spec),
        *rbac_manifests(spec),
        bootstrap_configmap(spec),
        *network_policy_manifests(spec),
        *load_balancer_manifests(spec),
    ]


def cluster_manifests(spec: ClusterSpec) -> list[Manifest]:
    """All objects of the cluster: shared ones, then groups 0..N."""
    out = shared_manifests(spec)
    for g in range(spec.workers.groups + 1):
        out.extend(group_manifests(spec, g))
    return out


# ---- files ----------------------------------------------------------------------------------
HEADER = "# Generated by `citus-pipeline k8s render` from the cluster spec. Do not edit by hand.\n"


def dump_yaml(docs: list[Manifest]) -> str:
    return HEADER + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def render_files(spec: ClusterSpec) -> dict[str, str]:
    """File name -> text of the kustomize base (pure)."""
    files: dict[str, str] = {
        "namespace.yaml": dump_yaml([namespace_manifest(spec)]),
        "rbac.yaml": dump_yaml(rbac_manifests(spec)),
        "patroni-config.yaml": dump_yaml([bootstrap_configmap(spec)]),
        "network-policies.yaml": dump_yaml(network_policy_manifests(spec)),
        "load-balancers.yaml": dump_yaml(load_balancer_manifests(spec)),
    }
    _check_names(spec)
    for g in range(spec.workers.groups + 1):
        files[f"group-{g}.yaml"] = dump_yaml(group_manifests(spec, g))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": spec.kubernetes.namespace,
        "resources": list(files),
    }
    files["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def write_rendered(spec: ClusterSpec, out_dir: str | Path) -> list[Path]:
    """Write the base into ``out_dir``; stale ``group-*.yaml`` files from a bigger spec go away."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out}: not a directory")
    out.mkdir(parents=True, exist_ok=True)
    files = render_files(spec)
    for stale in out.glob("group-*.yaml"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        p = out / name
        p.write_text(text)
        written.append(p)
    return written


def load_manifest_dir(path: str | Path) -> list[tuple[Path, Manifest]]:
    """Every Kubernetes object in the *.yaml files of a directory (kustomization.yaml skipped)."""
    d = Path(path)
    if not d.is_dir():
        raise SpecError(f"{d}: manifest directory not found")
    docs: list[tuple[Path, Manifest]] = []
    for f in sorted(d.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        try:
            loaded = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as err:
            raise SpecError(f"{f}: invalid YAML: {err}") from None
        docs.extend((f, doc) for doc in loaded if doc)
    return docs


__all__ = [
    "PATRONI_RBAC_RULES",
    "cluster_manifests",
    "group_manifests",
    "load_manifest_dir",
    "render_files",
    "shared_manifests",
    "tls_dns_names",
    "write_rendered",
]
