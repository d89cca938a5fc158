"""Rendered manifests against a Kubernetes API: server-side apply, and offline schema validation.

Shared by the ``k8s apply`` / ``k8s validate`` commands and by the Kubernetes backend's ``up``,
so neither imports the other. Talks to the API through the generic ``ApiClient.call_api`` (one
REST path per kind, below) rather than one typed client method per kind.
"""

from __future__ import annotations

from typing import Any

from ...errors import SpecError
from . import manifests as mf

# (apiVersion, kind) -> (plural, namespaced) for every kind we render or the overlay adds.
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Endpoints"): ("endpoints", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("batch/v1", "CronJob"): ("cronjobs", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("storage.k8s.io/v1", "StorageClass"): ("storageclasses", False),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("podmonitors", True),
}
# Custom resources: their schema is their operator's CRD, not in Kubernetes's own OpenAPI
# documents, so offline validation passes them by (unit tests check their shape).
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}
# Patroni owns these after creation (leader IP in subsets, state in annotations): create only,
# never re-apply, or an apply would wipe the leader endpoint.
CREATE_ONLY_KINDS = {"Endpoints"}
_OBJECT = {200: "object", 201: "object", 202: "object"}


def resource_path(m: dict[str, Any], name: str | None = None) -> str:
    """REST path of one object (collection path when ``name`` is ''), for the kinds we render."""
    key = (m.get("apiVersion", ""), m.get("kind", ""))
    meta = m.get("metadata") or {}
    if key not in RESOURCES:
        raise SpecError(
            f"{key[1]} {meta.get('name')}: kind {key[0]}/{key[1]} is not supported by apply"
        )
    plural, namespaced = RESOURCES[key]
    prefix = "/api/v1" if key[0] == "v1" else f"/apis/{key[0]}"
    if namespaced:
        ns = meta.get("namespace")
        if not ns:
            raise SpecError(f"{key[1]} {meta.get('name')}: metadata.namespace is missing")
        prefix += f"/namespaces/{ns}"
    obj_name = meta.get("name") if name is None else name
    return f"{prefix}/{plural}" + (f"/{obj_name}" if obj_name else "")


def apply_manifests(
    manifests: list[dict[str, Any]], api_client: Any, dry_run: bool = False
) -> list[tuple[str, str]]:
    """Server-side apply each object (field manager citus-pipeline); Endpoints only if absent.

    Returns (object, action) pairs. ``api_client`` is a ``kubernetes.client.ApiClient``.
    """
    from kubernetes.client.exceptions import ApiException

    done: list[tuple[str, str]] = []
    query = [("fieldManager", mf.FIELD_MANAGER), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    for m in manifests:
        label = f"{m['kind']}/{m['metadata']['name']}"
        path = resource_path(m)
        if m["kind"] in CREATE_ONLY_KINDS:
            try:
                api_client.call_api(
                    path,
                    "GET",
                    auth_settings=["BearerToken"],
                    response_types_map=_OBJECT,
                    _return_http_data_only=True,
                )
                done.append((label, "exists (owned by Patroni)"))
                continue
            except ApiException as e:
                if e.status != 404:
                    raise
            api_client.call_api(
                resource_path(m, ""),
                "POST",
                body=m,
                auth_settings=["BearerToken"],
                query_params=[("dryRun", "All")] if dry_run else [],
                response_types_map=_OBJECT,
                _return_http_data_only=True,
            )
            done.append((label, "created"))
            continue
        api_client.call_api(
            path,
            "PATCH",
            body=m,
            query_params=query,
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            auth_settings=["BearerToken"],
            response_types_map=_OBJECT,
            _return_http_data_only=True,
        )
        done.append((label, "applied"))
    return done


def validate_manifests(
    docs: list[tuple[str, dict[str, Any]]], k8s_version: str, strict: bool = True
) -> list[str]:
    """Offline OpenAPI-schema validation (kubernetes-validate); one message per invalid object."""
    try:
        import kubernetes_validate
    except ImportError:
        return ["kubernetes-validate is not installed (uv sync --dev)"]
    problems = []
    for where, m in docs:
        if (m.get("apiVersion"), m.get("kind")) in CUSTOM_KINDS:
            continue
        what = f"{where}: {m.get('kind')}/{(m.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(m, k8s_version, strict)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            problems.append(f"{what}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{what}: {e.message}")
        except kubernetes_validate.VersionNotSupportedError:
            problems.append(
                f"{what}: Kubernetes {k8s_version} is not supported by kubernetes-validate"
            )
    return problems


__all__ = [
    "CREATE_ONLY_KINDS",
    "CUSTOM_KINDS",
    "RESOURCES",
    "apply_manifests",
    "resource_path",
    "validate_manifests",
]
