"""The rendered RBAC: Patroni's Role grants exactly the verbs its Kubernetes DCS calls, and
Dagster's runs may read the cluster and record restore points, nothing more."""

from __future__ import annotations

import ast
from pathlib import Path

import patroni.dcs.kubernetes as patroni_k8s
from k8s_render import by_kind

from citus_pipeline.cluster.kubernetes import manifests as mf

# ---- RBAC -------------------------------------------------------------------------------------
# CoreV1Api method prefix -> RBAC verb; the resource is the method's tail (_kind -> endpoints,
# as Patroni is configured with use_endpoints: true).
_VERB = {
    "list": "list",
    "read": "get",
    "create": "create",
    "patch": "patch",
    "replace": "update",
    "delete_collection": "deletecollection",
    "delete": "delete",
}
_RESOURCE = {
    "pod": "pods",
    "kind": "endpoints",
    "endpoints": "endpoints",
    "service": "services",
    "config_map": "configmaps",
}
# Calls that only `patronictl` reaches, never the Patroni daemon: deliberately not granted.
_CTL_ONLY = {"delete_collection_namespaced_kind"}


def _patroni_api_calls() -> set[str]:
    """Every `self._api.<method>` Patroni's Kubernetes DCS calls (from its installed source)."""
    tree = ast.parse(Path(patroni_k8s.__file__).read_text())
    calls = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "_api"
            and "namespaced" in node.attr
        ):
            calls.add(node.attr)
    return calls


def _expected_rules() -> dict[str, set[str]]:
    calls = _patroni_api_calls()
    assert {"list_namespaced_pod", "patch_namespaced_pod", "create_namespaced_service"} <= calls
    want: dict[str, set[str]] = {}
    for call in calls - _CTL_ONLY:
        prefix, resource = call.split("_namespaced_")
        verb = _VERB[prefix]
        want.setdefault(_RESOURCE[resource], set()).add(verb)
        if verb == "list":  # Patroni's ObjectCache watches what it lists (watch=True)
            want[_RESOURCE[resource]].add("watch")
    return want


def test_rbac_grants_exactly_the_verbs_patroni_uses(objs):
    assert "watch=True" in Path(patroni_k8s.__file__).read_text()
    role = by_kind(objs, "Role")["citusdemo-patroni"]
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "resourceNames" not in rule
        for res in rule["resources"]:
            granted.setdefault(res, set()).update(rule["verbs"])
    assert granted == _expected_rules()
    assert granted == {
        "endpoints": {"create", "get", "list", "patch", "watch"},
        "pods": {"list", "patch", "watch"},
        "services": {"create"},
    }


def test_rbac_is_namespaced(spec, objs):
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    rb = by_kind(objs, "RoleBinding")["citusdemo-patroni"]
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "citusdemo-patroni",
    }
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "citusdemo", "namespace": spec.kubernetes.namespace}
    ]
    for s in by_kind(objs, "StatefulSet").values():
        assert s["spec"]["template"]["spec"]["serviceAccountName"] == "citusdemo"


def test_dagster_runs_may_read_the_cluster_and_record_restore_points_only(spec):
    objs = mf.cluster_manifests(spec)
    role = by_kind(objs, "Role")["citusdemo-dagster"]
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert verbs == {"get", "list", "create", "update"}
    writes = [r for r in role["rules"] if {"create", "update"} & set(r["verbs"])]
    assert all(r["resources"] == ["configmaps"] for r in writes)
    named = next(r for r in writes if "update" in r["verbs"])
    assert named["resourceNames"] == [mf.restore_points_name(spec)]
    (subject,) = by_kind(objs, "RoleBinding")["citusdemo-dagster"]["subjects"]
    # the code location's ServiceAccount: the chart puts it on the runs (includeConfigInLaunchedRuns)
    assert subject == {
        "kind": "ServiceAccount",
        "name": "dagster-user-deployments",
        "namespace": "dagster",
    }
