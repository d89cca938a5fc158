"""The committed base (k8s/base) and its overlay against a fresh render, and the `k8s` commands
that render, validate and name the certificate's hosts."""

from __future__ import annotations

import pytest
import yaml
from k8s_render import REPO, by_kind
from typer.testing import CliRunner

from citus_pipeline.cli.k8s import app as k8s_app
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.apply import resource_path
from citus_pipeline.errors import SpecError


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
    assert "47 objects valid" in r.output


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


def test_tls_sans_cover_a_members_connections_to_itself(spec):
    # Patroni sets citus.local_hostname to localhost in the pods: Citus's background
    # rebalance connects there with verify-full
    assert "localhost" in mf.tls_dns_names(spec)
