"""Monitoring in the manifests: the exporter sidecar of every member, who may scrape it, and the
PodMonitor when the spec asks for one."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from k8s_render import K8S_VERSION, by_kind

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.apply import resource_path, validate_manifests
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
