"""Manifests rendered from the ClusterSpec: schema-valid, faithful to the spec, what Patroni needs."""

from __future__ import annotations

import ast
import configparser
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import patroni.dcs.kubernetes as patroni_k8s
import pytest
import yaml
from typer.testing import CliRunner

from citus_pipeline.cluster import manifests as mf
from citus_pipeline.cluster import pgbackrest as pgbr
from citus_pipeline.cluster.k8s_apply import resource_path, validate_manifests
from citus_pipeline.cluster.k8s_commands import app as k8s_app
from citus_pipeline.cluster.metrics import EXPORTER_ARGS, EXPORTER_QUERIES
from citus_pipeline.cluster.spec import ClusterSpec, SpecError, load_spec, spec_from_mapping

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"  # pinned: the version the base is validated against (kubernetes.api_version)


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return load_spec(REPO / "cluster.yaml")


@pytest.fixture(scope="module")
def objs(spec) -> list[dict]:
    return mf.cluster_manifests(spec)


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def env_of(sts) -> dict[str, dict]:
    c = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in c["env"]}


# ---- schema -----------------------------------------------------------------------------------
def test_pinned_version_is_the_spec_default(spec):
    assert spec.kubernetes.api_version == K8S_VERSION


def test_every_manifest_validates_against_the_openapi_schema(objs):
    for o in objs:
        # strict: unknown fields are errors too
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_validation_catches_a_broken_manifest(objs):
    sts = json.loads(json.dumps(next(o for o in objs if o["kind"] == "StatefulSet")))
    sts["spec"]["replicas"] = "three"
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    problems = validate_manifests([("test", sts)], K8S_VERSION)
    assert len(problems) == 1 and "StatefulSet" in problems[0]


def test_overlay_objects_validate_too():
    overlay = REPO / "k8s" / "overlays" / "yandex-cloud"
    sc = yaml.safe_load((overlay / "storage-class.yaml").read_text())
    kubernetes_validate.validate(sc, K8S_VERSION, strict=True)


# ---- topology ---------------------------------------------------------------------------------
def test_one_statefulset_per_group_with_spec_replicas(spec, objs):
    sts = by_kind(objs, "StatefulSet")
    assert set(sts) == {f"citusdemo-{g}" for g in range(spec.workers.groups + 1)}
    assert sts["citusdemo-0"]["spec"]["replicas"] == spec.coordinator.members == 3
    for g in spec.worker_groups:
        assert sts[f"citusdemo-{g}"]["spec"]["replicas"] == spec.workers.members


def test_three_worker_groups_render_group_3():
    spec = spec_from_mapping({"workers": {"groups": 3, "members": 3}})
    objs = mf.cluster_manifests(spec)
    sts = by_kind(objs, "StatefulSet")
    assert "citusdemo-3" in sts and "citusdemo-4" not in sts
    s3 = sts["citusdemo-3"]
    assert s3["spec"]["replicas"] == 3
    assert env_of(s3)["PATRONI_CITUS_GROUP"]["value"] == "3"
    assert s3["metadata"]["labels"]["citus-group"] == "3"
    assert "citusdemo-3" in by_kind(objs, "PodDisruptionBudget")
    assert "citusdemo-3-headless" in by_kind(objs, "Service")
    assert "group-3.yaml" in mf.render_files(spec)


def test_labels(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = int(name.rsplit("-", 1)[1])
        labels = s["spec"]["template"]["metadata"]["labels"]
        assert labels["cluster-name"] == spec.name
        assert labels["citus-group"] == str(g)
        assert labels["citus-type"] == ("coordinator" if g == 0 else "worker")
        sel = s["spec"]["selector"]["matchLabels"]
        assert all(labels[k] == v for k, v in sel.items())
        assert "role" not in sel, "the selector must not depend on the role Patroni changes"


def test_patroni_env(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = name.rsplit("-", 1)[1]
        env = env_of(s)
        assert env["PATRONI_SCOPE"]["value"] == spec.name
        assert env["PATRONI_CITUS_GROUP"]["value"] == g
        assert env["PATRONI_CITUS_DATABASE"]["value"] == spec.database
        assert env["PATRONI_KUBERNETES_USE_ENDPOINTS"]["value"] == "true"
        assert env["PATRONI_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert (
            env["PATRONI_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.namespace"
        )
        assert (
            env["PATRONI_KUBERNETES_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        )
        assert env["PATRONI_KUBERNETES_LEADER_LABEL_VALUE"]["value"] == "primary"
        labels = yaml.safe_load(env["PATRONI_KUBERNETES_LABELS"]["value"])
        pod_labels = s["spec"]["template"]["metadata"]["labels"]
        # Patroni lists pods/endpoints with these labels + the scope label: the pods must match ...
        assert all(pod_labels[k] == v for k, v in labels.items())
        # ... and the group label must not be among them, or the coordinator sees no workers.
        assert "citus-group" not in labels
        ports = yaml.safe_load(env["PATRONI_KUBERNETES_PORTS"]["value"])
        assert ports == [{"name": "postgresql", "port": 5432}]


def test_connect_address_is_the_stable_dns_name(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        env = env_of(s)
        names = list(env)
        headless = s["spec"]["serviceName"]
        assert headless == f"{name}-headless"
        for var, port in (
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", 5432),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", 8008),
        ):
            assert (
                env[var]["value"]
                == f"$(PATRONI_NAME).{headless}.$(PATRONI_KUBERNETES_NAMESPACE).svc:{port}"
            )
            # $(VAR) expands only variables defined earlier in the list
            assert names.index("PATRONI_NAME") < names.index(var)
            assert names.index("PATRONI_KUBERNETES_NAMESPACE") < names.index(var)
        svc = by_kind(objs, "Service")[headless]
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"] == s["spec"]["selector"]["matchLabels"]


def test_secrets_are_referenced_never_inlined(spec, objs):
    assert not [o for o in objs if o["kind"] == "Secret"]
    for s in by_kind(objs, "StatefulSet").values():
        env = env_of(s)
        for var, key in (
            ("PATRONI_SUPERUSER_PASSWORD", "superuser-password"),
            ("PATRONI_REPLICATION_PASSWORD", "replication-password"),
            ("PATRONI_RESTAPI_PASSWORD", "restapi-password"),
        ):
            assert "value" not in env[var]
            assert env[var]["valueFrom"]["secretKeyRef"] == {
                "name": spec.credentials.kubernetes_secret,
                "key": key,
            }
        assert env["PATRONI_RESTAPI_USERNAME"]["value"] == spec.credentials.restapi_user
    for s in by_kind(objs, "StatefulSet").values():
        for e in env_of(s).values():
            if "PASSWORD" in e["name"]:
                assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], e
    cfg = by_kind(objs, "ConfigMap")["citusdemo-patroni"]["data"]["bootstrap.yaml"]
    assert "password:" not in cfg


def test_storage_probes_resources_and_grace(spec, objs):
    k = spec.kubernetes
    for name, s in by_kind(objs, "StatefulSet").items():
        pod = s["spec"]["template"]["spec"]
        vct = s["spec"]["volumeClaimTemplates"]
        assert [v["metadata"]["name"] for v in vct] == ["pgdata"]
        assert vct[0]["spec"]["resources"]["requests"]["storage"] == k.storage_size
        assert vct[0]["spec"]["storageClassName"] == k.storage_class
        assert not any(v["name"] == "pgdata" for v in pod["volumes"]), (
            "pgdata must be a PVC, not a pod volume"
        )
        assert pod["terminationGracePeriodSeconds"] == k.termination_grace_period_seconds
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readiness"
        assert c["readinessProbe"]["httpGet"]["port"] == "patroni"
        # a member that stops answering is killed within about ttl, with a short grace of
        # its own instead of the pod's (the grace that lets a leader hand over)
        live = c["livenessProbe"]
        assert live["httpGet"]["path"] == "/liveness"
        stall = live["failureThreshold"] * live["periodSeconds"] + live["timeoutSeconds"]
        assert stall + live["terminationGracePeriodSeconds"] <= spec.patroni.ttl + 10
        assert live["terminationGracePeriodSeconds"] < pod["terminationGracePeriodSeconds"]
        assert {"name": "patroni", "containerPort": 8008, "protocol": "TCP"} in c["ports"]
        want = k.coordinator_resources if name.endswith("-0") else k.worker_resources
        assert c["resources"]["requests"] == {"cpu": want.cpu, "memory": want.memory}
        assert c["resources"]["limits"]["memory"] == want.memory_limit
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_anti_affinity_across_nodes(objs):
    for s in by_kind(objs, "StatefulSet").values():
        req = s["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert req[0]["topologyKey"] == "kubernetes.io/hostname"
        assert req[0]["labelSelector"]["matchLabels"] == s["spec"]["selector"]["matchLabels"]


def test_pdb_per_group(spec, objs):
    pdbs = by_kind(objs, "PodDisruptionBudget")
    sts = by_kind(objs, "StatefulSet")
    assert set(pdbs) == set(sts)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        assert (
            pdb["spec"]["selector"]["matchLabels"] == sts[name]["spec"]["selector"]["matchLabels"]
        )


def test_patroni_dcs_services_and_endpoints(spec, objs):
    svcs, eps = by_kind(objs, "Service"), by_kind(objs, "Endpoints")
    for g in range(spec.workers.groups + 1):
        leader = svcs[f"citusdemo-{g}"]
        assert "selector" not in leader["spec"], (
            "Patroni fills the leader Endpoints, not a selector"
        )
        assert leader["spec"]["ports"][0]["name"] == "postgresql"
        assert eps[f"citusdemo-{g}"]["metadata"]["labels"]["citus-group"] == str(g)
        cfg = svcs[f"citusdemo-{g}-config"]
        assert cfg["spec"]["clusterIP"] == "None" and "selector" not in cfg["spec"]


def test_services_with_a_selector_stay_out_of_patronis_label_selector(spec, objs):
    patroni_selector = {**mf.patroni_kubernetes_labels(spec), "cluster-name": spec.name}
    selected = [n for n, s in by_kind(objs, "Service").items() if "selector" in s["spec"]]
    assert len(selected) == spec.workers.groups + 1 + 2  # headless per group + two load balancers
    for name in selected:
        labels = by_kind(objs, "Service")[name]["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in patroni_selector.items()), name


def test_two_load_balancers(spec, objs):
    lbs = {
        n: s for n, s in by_kind(objs, "Service").items() if s["spec"].get("type") == "LoadBalancer"
    }
    assert set(lbs) == {"citusdemo-coordinator", "citusdemo-workers"}
    coord, workers = lbs["citusdemo-coordinator"]["spec"], lbs["citusdemo-workers"]["spec"]
    assert coord["selector"] == {
        "application": "citus-pipeline",
        "cluster-name": spec.name,
        "citus-type": "coordinator",
        "role": "primary",
    }
    assert (
        workers["selector"]["citus-type"] == "worker" and workers["selector"]["role"] == "primary"
    )
    for s in (coord, workers):
        assert s["ports"][0]["port"] == 5432


def test_bootstrap_config_scram_and_tls(spec, objs):
    cm = by_kind(objs, "ConfigMap")["citusdemo-patroni"]
    cfg = yaml.safe_load(cm["data"]["bootstrap.yaml"])
    dcs = cfg["bootstrap"]["dcs"]
    params = dcs["postgresql"]["parameters"]
    assert params["password_encryption"] == "scram-sha-256"
    assert params["citus.node_conninfo"].startswith("sslmode=verify-full ")
    # a worker cut off or paused must not hold the coordinator's statements for minutes
    assert "tcp_user_timeout=10000" in params["citus.node_conninfo"]
    for line in dcs["postgresql"]["pg_hba"]:
        assert line.split()[-1] == "scram-sha-256", line
        assert line.startswith(("local", "hostssl")), line
    local = cfg["postgresql"]["parameters"]
    assert local["ssl"] == "on"
    assert {local["ssl_cert_file"], local["ssl_ca_file"]} == {
        "/etc/citus-tls/tls.crt",
        "/etc/citus-tls/ca.crt",
    }
    assert (
        dcs["ttl"] == spec.patroni.ttl and dcs["synchronous_mode"] == spec.patroni.synchronous_mode
    )
    sts = by_kind(objs, "StatefulSet")["citusdemo-1"]["spec"]["template"]["spec"]
    tls = next(v for v in sts["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == spec.kubernetes.tls_secret


def test_network_policies(spec, objs):
    pols = by_kind(objs, "NetworkPolicy")
    deny = pols["citusdemo-default-deny"]["spec"]
    assert deny["ingress"] == [] and deny["policyTypes"] == ["Ingress"]
    members = pols["citusdemo-members"]["spec"]["ingress"][0]
    assert sorted(p["port"] for p in members["ports"]) == [5432, 8008]
    assert members["from"] == [{"podSelector": {"matchLabels": mf.base_labels(spec)}}]
    dag = pols["citusdemo-dagster-to-coordinator"]["spec"]
    assert dag["podSelector"]["matchLabels"]["citus-type"] == "coordinator"
    assert dag["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert dag["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": spec.kubernetes.dagster_namespace
    }
    lb = pols["citusdemo-load-balancer-clients"]["spec"]
    assert lb["podSelector"]["matchLabels"]["role"] == "primary"
    assert [f["ipBlock"]["cidr"] for f in lb["ingress"][0]["from"]] == list(
        spec.kubernetes.client_cidrs
    )
    # nothing else opens a port
    opened = {
        p["port"] for pol in pols.values() for rule in pol["spec"]["ingress"] for p in rule["ports"]
    }
    assert opened == {5432, 8008, 9187}  # 9187: the exporters, for the Prometheus namespace only


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


# ---- committed base and overlay -----------------------------------------------------------------
def test_committed_base_equals_a_fresh_render(spec):
    base = REPO / "k8s" / "base"
    fresh = mf.render_files(spec)
    committed = {p.name: p.read_text() for p in base.glob("*.yaml")}
    assert set(committed) == set(fresh), "k8s/base files differ: run `citus-pipeline k8s render`"
    for name, text in fresh.items():
        assert committed[name] == text, f"k8s/base/{name} drifted: run `citus-pipeline k8s render`"


def test_kustomization_lists_every_file(spec):
    k = yaml.safe_load(mf.render_files(spec)["kustomization.yaml"])
    assert set(k["resources"]) == set(mf.render_files(spec)) - {"kustomization.yaml"}
    assert k["namespace"] == spec.kubernetes.namespace


def test_overlay_patches_the_base_load_balancers(objs):
    overlay = REPO / "k8s" / "overlays" / "yandex-cloud"
    k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert "../../base" in k["resources"]
    lb_names = {
        n for n, s in by_kind(objs, "Service").items() if s["spec"].get("type") == "LoadBalancer"
    }
    patch_file = next(p["path"] for p in k["patches"] if "path" in p)
    patched = list(yaml.safe_load_all((overlay / patch_file).read_text()))
    assert {p["metadata"]["name"] for p in patched} == lb_names
    for p in patched:
        ann = p["metadata"]["annotations"]
        assert ann["yandex.cloud/load-balancer-type"] == "internal"
        assert "yandex.cloud/subnet-id" in ann
    sc = yaml.safe_load((overlay / "storage-class.yaml").read_text())
    storage_patch = next(
        p for p in k["patches"] if p.get("target", {}).get("kind") == "StatefulSet"
    )
    assert sc["metadata"]["name"] in storage_patch["patch"]
    image = next(o for o in objs if o["kind"] == "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert image.rsplit(":", 1)[0] in {i["name"] for i in k["images"]}


# ---- CLI --------------------------------------------------------------------------------------
def test_cli_render_and_validate(tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        k8s_app, ["render", "--spec", str(REPO / "cluster.yaml"), "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "group-2.yaml").exists()
    r = runner.invoke(
        k8s_app, ["validate", "--spec", str(REPO / "cluster.yaml"), "--dir", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "38 objects valid" in r.output


def test_cli_validate_reports_an_invalid_file(tmp_path):
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": "nope"},
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = CliRunner().invoke(
        k8s_app, ["validate", "--spec", str(REPO / "cluster.yaml"), "--dir", str(tmp_path)]
    )
    assert r.exit_code == 1
    assert "bad.yaml: Service/x: spec.ports" in r.output


def test_cli_render_bad_spec_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("kubernetes:\n  namespace: Bad_NS\n")
    r = CliRunner().invoke(k8s_app, ["render", "--spec", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert f"{p}: kubernetes.namespace" in r.output


def test_resource_paths():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "citus"}}
    assert resource_path(svc) == "/api/v1/namespaces/citus/services/a"
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "s", "namespace": "n"},
    }
    assert resource_path(sts, "") == "/apis/apps/v1/namespaces/n/statefulsets"
    with pytest.raises(SpecError, match="not supported"):
        resource_path(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"}}
        )


def test_tls_sans_cover_every_group_member(spec):
    sans = mf.tls_dns_names(spec)
    assert f"*.citusdemo-0-headless.{spec.kubernetes.namespace}.svc" in sans
    assert (
        f"*.citusdemo-{spec.workers.groups + 16}-headless.{spec.kubernetes.namespace}.svc" in sans
    )
    host = mf.member_dns_name(spec, 1, 0)
    first, rest = host.split(".", 1)
    assert first == "citusdemo-1-0" and f"*.{rest}" in sans  # a wildcard covers exactly one label


# ---- metrics ----------------------------------------------------------------------------------
def test_every_member_has_the_exporter_sidecar(spec, objs):
    queries = by_kind(objs, "ConfigMap")["citusdemo-exporter-queries"]
    assert yaml.safe_load(queries["data"]["queries.yaml"]) == EXPORTER_QUERIES
    for s in by_kind(objs, "StatefulSet").values():
        pod = s["spec"]["template"]
        assert pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9187",
            "prometheus.io/path": "/metrics",
        }
        sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "postgres-exporter")
        assert sidecar["image"] == spec.kubernetes.exporter_image
        # the same arguments as the local exporters the integration tests scrape
        assert set(EXPORTER_ARGS) <= set(sidecar["args"])
        assert "--extend.query-path=/etc/postgres-exporter/queries.yaml" in sidecar["args"]
        assert sidecar["ports"] == [{"name": "metrics", "containerPort": 9187, "protocol": "TCP"}]
        env = {e["name"]: e for e in sidecar["env"]}
        assert env["DATA_SOURCE_URI"]["value"] == "127.0.0.1:5432/citus?sslmode=require"
        assert env["DATA_SOURCE_PASS"]["valueFrom"]["secretKeyRef"] == {
            "name": spec.credentials.kubernetes_secret,
            "key": "superuser-password",
        }
        mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["exporter-queries"]["configMap"]["name"] == "citusdemo-exporter-queries"
        assert mounts["exporter-queries"]["readOnly"] is True


def test_prometheus_namespace_may_scrape_exporter_and_patroni(spec, objs):
    pol = by_kind(objs, "NetworkPolicy")["citusdemo-prometheus-scrapes"]["spec"]
    assert pol["podSelector"]["matchLabels"] == mf.base_labels(spec)
    rule = pol["ingress"][0]
    assert sorted(p["port"] for p in rule["ports"]) == [8008, 9187]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": spec.kubernetes.prometheus_namespace
    }


def test_pod_monitor_only_when_asked_for(spec, objs):
    assert not by_kind(objs, "PodMonitor")
    assert "pod-monitor" not in mf.render_files(spec)["monitoring.yaml"]
    on = spec_from_mapping(
        {"kubernetes": {"pod_monitor": True}, "metrics": {"scrape_interval": 15}}
    )
    pm = by_kind(mf.cluster_manifests(on), "PodMonitor")["citusdemo-members"]
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["namespace"] == on.kubernetes.namespace
    assert pm["spec"]["selector"]["matchLabels"] == mf.base_labels(on)
    endpoints = {
        (e["port"], e.get("path", "/metrics"), e["interval"])
        for e in pm["spec"]["podMetricsEndpoints"]
    }
    assert endpoints == {("metrics", "/metrics", "15s"), ("patroni", "/metrics", "15s")}
    # the ports it names exist on every member's pod
    ports = {
        p["name"]
        for s in by_kind(mf.cluster_manifests(on), "StatefulSet").values()
        for c in s["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    assert {"metrics", "patroni"} <= ports
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_citus_group"],
        "targetLabel": "citus_group",
    } in relabel
    # the custom resource passes offline validation by; apply knows its REST path
    assert validate_manifests([("test", pm)], K8S_VERSION) == []
    assert (
        resource_path(pm)
        == "/apis/monitoring.coreos.com/v1/namespaces/citus/podmonitors/citusdemo-members"
    )


def test_sidecar_image_is_the_exporter_release_the_tests_run():
    import shutil
    import subprocess

    exe = shutil.which("prometheus-postgres-exporter")
    if not exe:
        pytest.skip("prometheus-postgres-exporter not installed (Debian package)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    tag = ClusterSpec().kubernetes.exporter_image.rsplit(":v", 1)[1]
    assert f"version {tag}" in version.stdout + version.stderr


# ---- backups (pgBackRest) ---------------------------------------------------------------------
def pgbackrest_ini(cm: dict) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(cm["data"]["pgbackrest.conf"])
    return ini


def test_pgbackrest_config_has_a_stanza_per_group_with_the_s3_repo(spec, objs):
    ini = pgbackrest_ini(by_kind(objs, "ConfigMap")["citusdemo-pgbackrest"])
    b = spec.backup
    g = ini["global"]
    # the spec's repo_type is posix (the local backend's): Kubernetes takes the s3 settings
    assert b.repo_type == "posix" and g["repo1-type"] == "s3"
    assert g["repo1-path"] == f"/{spec.name}"
    assert (g["repo1-s3-endpoint"], g["repo1-s3-bucket"], g["repo1-s3-region"]) == (
        "storage.yandexcloud.net",
        b.s3_bucket,
        "ru-central1",
    )
    assert g["repo1-s3-uri-style"] == "path" and g["repo1-storage-verify-tls"] == "y"
    assert g["repo1-retention-full"] == str(b.retention_full)
    assert "repo1-s3-key" not in g and "repo1-s3-key-secret" not in g  # from the Secret only
    for key in ("spool-path", "lock-path", "log-path"):
        # on the data volume, outside PGDATA (restores and base backups leave it alone)
        assert g[key].startswith(mf.PGDATA_MOUNT + "/") and not g[key].startswith(mf.PGDATA_DIR)
    stanzas = [s for s in ini.sections() if s != "global"]
    # every group of the spec, and those add-worker may create without a re-render
    assert stanzas == [pgbr.stanza(spec, g) for g in range(mf.highest_group(spec) + 1)]
    assert mf.highest_group(spec) == spec.workers.groups + 16
    for s in stanzas:
        assert dict(ini[s]) == {
            "pg1-path": mf.PGDATA_DIR,
            "pg1-socket-path": mf.SOCKET_DIR,
            "pg1-port": "5432",
            "pg1-user": spec.credentials.superuser,
        }


def test_pgbackrest_repository_path_on_kubernetes():
    s3 = spec_from_mapping({"backup": {"repo_type": "s3", "repo_path": "/prod/citus"}})
    assert mf.kubernetes_repository(s3)[1] == "/prod/citus"
    # a posix repo_path is a local directory, not a prefix in the bucket
    posix = spec_from_mapping({"backup": {"repo_path": "/var/lib/citus-backups"}})
    spec, path = mf.kubernetes_repository(posix)
    assert path == "/citusdemo" and spec.backup.repo_type == "s3"
    assert posix.backup.repo_type == "posix"  # the spec itself is left alone


def test_the_release_in_the_image_reads_the_rendered_config(spec, tmp_path):
    exe = shutil.which("pgbackrest")
    if not exe:
        pytest.skip("pgbackrest not installed (Debian package)")
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(mf.pgbackrest_conf(spec))
    last = pgbr.stanza(spec, mf.highest_group(spec))
    r = subprocess.run(
        [exe, f"--config={conf}", f"--stanza={last}", "help", "backup", "pg1-path"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"current: {mf.PGDATA_DIR}" in r.stdout


def test_every_member_mounts_the_config_and_gets_the_s3_keys_from_the_secret(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = int(name.rsplit("-", 1)[1])
        pod = s["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["pgbackrest"]["configMap"]["name"] == "citusdemo-pgbackrest"
        patroni = pod["containers"][0]
        mounts = {m["name"]: m for m in patroni["volumeMounts"]}
        assert mounts["pgbackrest"] == {
            "name": "pgbackrest",
            "mountPath": "/etc/pgbackrest",
            "readOnly": True,
        }
        assert mounts["run"]["mountPath"] == mf.SOCKET_DIR  # the socket pgBackRest uses
        env = env_of(s)
        assert env["CITUS_PGBACKREST_CONFIG"]["value"] == "/etc/pgbackrest/pgbackrest.conf"
        assert env["CITUS_PGBACKREST_STANZA"]["value"] == f"citusdemo-g{g}"
        for var, key in (
            ("PGBACKREST_REPO1_S3_KEY", "access-key"),
            ("PGBACKREST_REPO1_S3_KEY_SECRET", "secret-key"),
        ):
            assert env[var] == {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": spec.backup.s3_secret, "key": key}},
            }
    assert mf.S3_SECRET_KEYS == {
        "PGBACKREST_REPO1_S3_KEY": "access-key",
        "PGBACKREST_REPO1_S3_KEY_SECRET": "secret-key",
    }


def test_an_added_worker_group_gets_its_own_stanza(spec):
    g = spec.workers.groups + 1
    sts = next(o for o in mf.group_manifests(spec, g) if o["kind"] == "StatefulSet")
    stanza = env_of(sts)["CITUS_PGBACKREST_STANZA"]["value"]
    assert f"[{stanza}]" in mf.pgbackrest_conf(spec)


def test_postgresql_socket_and_archive_timeout_come_with_the_bootstrap_file(spec, objs):
    cfg = yaml.safe_load(by_kind(objs, "ConfigMap")["citusdemo-patroni"]["data"]["bootstrap.yaml"])
    local = cfg["postgresql"]["parameters"]
    assert local["unix_socket_directories"] == mf.SOCKET_DIR
    assert local["archive_timeout"] == spec.backup.archive_timeout
    # archive_mode and archive_command come from the entrypoint, with the group's stanza
    assert "archive_mode" not in local and "archive_command" not in local


def test_the_backup_cronjob_runs_on_the_spec_schedule(spec, objs):
    cj = by_kind(objs, "CronJob")["citusdemo-backup"]
    assert cj["apiVersion"] == "batch/v1"
    assert cj["spec"]["schedule"] == spec.backup.schedule
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cj["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "citusdemo-backup"
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == spec.kubernetes.image  # the members' image (the overlay rewrites both)
    assert c["command"] == ["citus-backup", "schedule"]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    assert args["type"] == spec.backup.scheduled_type
    # it finds what the members are labelled with, and the leader as the load balancers do
    sts = by_kind(objs, "StatefulSet")["citusdemo-1"]
    member_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = dict(kv.split("=") for kv in args["members"].split(","))
    assert selector == mf.base_labels(spec)
    assert all(member_labels[k] == v for k, v in selector.items())
    assert args["group-label"] in member_labels
    key, value = args["leader"].split("=")
    coordinator_lb = by_kind(objs, "Service")["citusdemo-coordinator"]["spec"]["selector"]
    assert coordinator_lb[key] == value
    assert args["container"] == sts["spec"]["template"]["spec"]["containers"][0]["name"]


def test_the_backup_pod_is_no_member(spec, objs):
    cj = by_kind(objs, "CronJob")["citusdemo-backup"]
    labels = cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    patroni_selector = {**mf.patroni_kubernetes_labels(spec), "cluster-name": spec.name}
    assert not all(labels.get(k) == v for k, v in patroni_selector.items())
    for pol in by_kind(objs, "NetworkPolicy").values():
        sel = pol["spec"]["podSelector"]["matchLabels"]
        assert not all(labels.get(k) == v for k, v in sel.items())


def test_the_backup_role_allows_only_listing_pods_and_exec(spec, objs):
    role = by_kind(objs, "Role")["citusdemo-backup"]
    granted = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""] and "resourceNames" not in rule
        for res in rule["resources"]:
            granted.setdefault(res, set()).update(rule["verbs"])
    # list: find the leaders; exec: create (SPDY, API servers 1.35+) and get (WebSocket before)
    assert granted == {"pods": {"list"}, "pods/exec": {"create", "get"}}
    rb = by_kind(objs, "RoleBinding")["citusdemo-backup"]
    assert rb["roleRef"]["name"] == "citusdemo-backup"
    assert rb["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "citusdemo-backup",
            "namespace": spec.kubernetes.namespace,
        }
    ]
    assert "citusdemo-backup" in by_kind(objs, "ServiceAccount")
    # the members' own ServiceAccount gains nothing
    patroni = by_kind(objs, "Role")["citusdemo-patroni"]["rules"]
    assert not any("pods/exec" in r["resources"] for r in patroni)


def test_no_backup_objects_without_archiving():
    off = spec_from_mapping({"backup": {"archiving": False}})
    objs = mf.cluster_manifests(off)
    assert not by_kind(objs, "CronJob")
    assert "citusdemo-pgbackrest" not in by_kind(objs, "ConfigMap")
    assert set(by_kind(objs, "Role")) == {"citusdemo-patroni", "citusdemo-dagster"}
    assert set(by_kind(objs, "ServiceAccount")) == {"citusdemo"}
    for s in by_kind(objs, "StatefulSet").values():
        env = env_of(s)
        assert not [n for n in env if "PGBACKREST" in n]
        assert "pgbackrest" not in {v["name"] for v in s["spec"]["template"]["spec"]["volumes"]}
    cfg = yaml.safe_load(mf.bootstrap_configmap(off)["data"]["bootstrap.yaml"])
    assert "archive_timeout" not in cfg["postgresql"]["parameters"]
    assert "backup.yaml" not in mf.render_files(off)


def test_rendering_again_without_archiving_removes_backup_yaml(tmp_path):
    mf.write_rendered(spec_from_mapping({}), tmp_path)
    (tmp_path / "mine.yaml").write_text("kind: ConfigMap\n")  # not rendered: kept
    mf.write_rendered(spec_from_mapping({"backup": {"archiving": False}}), tmp_path)
    assert not (tmp_path / "backup.yaml").exists()
    assert (tmp_path / "mine.yaml").exists() and (tmp_path / "group-2.yaml").exists()


def test_s3_secret_must_be_a_kubernetes_name():
    bad = spec_from_mapping({"backup": {"s3_secret": "backup_keys"}})
    with pytest.raises(SpecError, match="^backup.s3_secret: 'backup_keys' is not a valid"):
        mf.cluster_manifests(bad)


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
