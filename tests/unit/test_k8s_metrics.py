"""Monitoring in the manifests: the exporter sidecar of every member and of every pooler pod, who
may scrape them, and the PodMonitors when the spec asks for them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from k8s_render import K8S_VERSION, by_kind

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.apply import resource_path, validate_manifests
from citus_pipeline.cluster.kubernetes.manifests import monitoring as mon
from citus_pipeline.cluster.metrics import EXPORTER_ARGS, EXPORTER_QUERIES
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping


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

    exe = shutil.which("prometheus-postgres-exporter")
    if not exe:
        pytest.skip("prometheus-postgres-exporter not installed (Debian package)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    tag = ClusterSpec().kubernetes.exporter_image.rsplit(":v", 1)[1]
    assert f"version {tag}" in version.stdout + version.stderr


# ---- the pooler's exporter ----------------------------------------------------------------------
def test_every_pooler_pod_has_the_exporter_sidecar(spec, objs):
    dep = by_kind(objs, "Deployment")["citusdemo-pooler"]
    pod = dep["spec"]["template"]
    assert {
        k: v for k, v in pod["metadata"]["annotations"].items() if k.startswith("prometheus.io/")
    } == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9127",
        "prometheus.io/path": "/metrics",
    }
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "pgbouncer-exporter")
    # the pooler's own image, which installs the exporter
    assert sidecar["image"] == spec.kubernetes.pooler_image
    config = f"/etc/pgbouncer-config/{mon.POOLER_EXPORTER_KEY}"
    assert sidecar["command"] == ["pgbouncer-exporter", "--config", config]
    assert "--log-file" not in sidecar["command"]  # the exporter logs to stdout by default only
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 9127, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    # the password reaches libpq from the members' Secret, never the ConfigMap
    (env,) = sidecar["env"]
    assert env == {
        "name": "PGPASSWORD",
        "valueFrom": {
            "secretKeyRef": {
                "name": spec.credentials.kubernetes_secret,
                "key": "superuser-password",
            }
        },
    }
    assert sidecar["securityContext"] == mf.container_security()
    assert sidecar["resources"]["limits"]["memory"]
    assert sidecar["volumeMounts"] == [
        {"name": "config", "mountPath": "/etc/pgbouncer-config", "readOnly": True}
    ]
    cm = by_kind(objs, "ConfigMap")["citusdemo-pooler-config"]["data"]
    exporter = yaml.safe_load(cm[mon.POOLER_EXPORTER_KEY])
    assert exporter["exporter_port"] == 9127
    assert exporter["pgbouncers"][0]["dsn"] == (
        f"postgresql://{spec.credentials.superuser}@127.0.0.1:{spec.pooler.port}/pgbouncer"
        "?sslmode=require"
    )
    # PgBouncer stays the first container (what the overlay's image test reads)
    assert pod["spec"]["containers"][0]["name"] == "pgbouncer"


def test_prometheus_namespace_may_scrape_the_pooler_exporter(spec, objs):
    pol = by_kind(objs, "NetworkPolicy")["citusdemo-pooler-prometheus-scrapes"]["spec"]
    assert pol["podSelector"]["matchLabels"] == mf.pooler_labels(spec)
    (rule,) = pol["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9127}]
    assert rule["from"] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": spec.kubernetes.prometheus_namespace}
            }
        }
    ]
    # the members' policy is the same rule on their own ports
    members = by_kind(objs, "NetworkPolicy")["citusdemo-prometheus-scrapes"]["spec"]
    assert members["ingress"][0]["from"] == rule["from"]


def test_the_pooler_pod_monitor_only_when_asked_for(spec, objs):
    assert "citusdemo-pooler" not in by_kind(objs, "PodMonitor")
    on = spec_from_mapping(
        {"kubernetes": {"pod_monitor": True}, "metrics": {"scrape_interval": 15}}
    )
    rendered = mf.cluster_manifests(on)
    pm = by_kind(rendered, "PodMonitor")["citusdemo-pooler"]
    assert pm["spec"]["selector"]["matchLabels"] == mf.pooler_labels(on)
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["interval"]) == ("metrics", "15s")
    # the local Prometheus's target label, here the pod's name
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pooler"}
    ]
    # the port it names is on the pooler's pods, and the members' PodMonitor does not take them
    pod = by_kind(rendered, "Deployment")["citusdemo-pooler"]["spec"]["template"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert "metrics" in ports
    members = by_kind(rendered, "PodMonitor")["citusdemo-members"]["spec"]["selector"]
    assert not all(pod["metadata"]["labels"].get(k) == v for k, v in members["matchLabels"].items())
    assert validate_manifests([("test", pm)], K8S_VERSION) == []
    # in pooler.yaml, with the rest of the pooler
    assert "kind: PodMonitor" in mf.render_files(on)["pooler.yaml"]
    off = spec_from_mapping({"kubernetes": {"pod_monitor": True}, "pooler": {"enabled": False}})
    assert list(by_kind(mf.cluster_manifests(off), "PodMonitor")) == ["citusdemo-members"]
