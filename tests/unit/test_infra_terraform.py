"""infra/: Terraform for Yandex Cloud, checked offline (fmt, HCL parse, declared defaults)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _unq(v: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on keys and strings; drop them."""
    if isinstance(v, dict):
        return {_unq(k): _unq(x) for k, x in v.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(v, list):
        return [_unq(x) for x in v]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def _load(name: str) -> dict[str, Any]:
    with (INFRA / name).open() as f:
        return _unq(hcl2.load(f))


def _blocks(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """{'<type>.<name>': body} for resource/variable/output lists."""
    out: dict[str, dict[str, Any]] = {}
    for item in doc.get(kind, []):
        for k, v in item.items():
            if kind == "resource":
                for name, body in v.items():
                    out[f"{k}.{name}"] = body
            else:
                out[k] = v
    return out


@pytest.fixture(scope="module")
def tf() -> dict[str, dict[str, dict[str, Any]]]:
    merged: dict[str, dict[str, dict[str, Any]]] = {"resource": {}, "variable": {}, "output": {}}
    for f in sorted(INFRA.glob("*.tf")):
        doc = _load(f.name)
        for kind, blocks in merged.items():
            blocks.update(_blocks(doc, kind))
    return merged


def test_terraform_fmt_check():
    if shutil.which("terraform") is None:
        pytest.skip("terraform binary not installed")
    r = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, f"terraform fmt -check failed for: {r.stdout}{r.stderr}"


def test_every_tf_file_parses():
    files = sorted(INFRA.glob("*.tf"))
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf"} <= {f.name for f in files}
    for f in files:
        _load(f.name)


def test_versions_pinned():
    doc = _load("versions.tf")
    terraform = doc["terraform"][0]
    assert terraform["required_version"].startswith("~>")
    yandex = terraform["required_providers"][0]["yandex"]
    assert yandex["source"] == "yandex-cloud/yandex"
    assert yandex["version"].startswith(("~>", "=")) and any(c.isdigit() for c in yandex["version"])


def test_default_node_group_is_3_nodes_of_4_vcpu_16_gb(tf):
    v = tf["variable"]
    assert (
        v["node_count"]["default"],
        v["node_cores"]["default"],
        v["node_memory_gb"]["default"],
    ) == (3, 4, 16)
    ng = tf["resource"]["yandex_kubernetes_node_group.main"]
    res = ng["instance_template"][0]["resources"][0]
    assert res["cores"] == "${var.node_cores}"
    assert res["memory"] == "${var.node_memory_gb}"
    assert ng["scale_policy"][0]["fixed_scale"][0]["size"] == "${var.node_count}"


def test_three_zones_and_zonal_or_regional_master(tf):
    assert tf["variable"]["zones"]["default"] == ["ru-central1-a", "ru-central1-b", "ru-central1-d"]
    assert tf["resource"]["yandex_vpc_subnet.zone"]["for_each"] == "${local.subnets}"
    master = tf["resource"]["yandex_kubernetes_cluster.main"]["master"][0]
    dynamic = {k for d in master["dynamic"] for k in d}
    assert dynamic == {"zonal", "regional"}
    assert tf["variable"]["regional_master"]["type"] in ("bool", "${bool}")


def test_every_variable_and_output_is_documented(tf):
    for kind in ("variable", "output"):
        for name, body in tf[kind].items():
            assert body.get("description"), f"{kind} {name} has no description"


def test_service_account_roles(tf):
    r = tf["resource"]
    cluster_roles = set(
        re.findall(r'"([^"]+)"', r["yandex_resourcemanager_folder_iam_member.cluster"]["for_each"])
    )
    assert cluster_roles == {"k8s.clusters.agent", "vpc.publicAdmin", "load-balancer.admin"}
    assert (
        r["yandex_resourcemanager_folder_iam_member.nodes_puller"]["role"]
        == "container-registry.images.puller"
    )


def test_outputs(tf):
    o = tf["output"]
    assert {"cluster_id", "cluster_endpoint", "get_credentials_command"} <= set(o)
    assert "yc managed-kubernetes cluster get-credentials" in o["get_credentials_command"]["value"]


def test_security_groups_open_only_what_is_needed(tf):
    nodes = tf["resource"]["yandex_vpc_security_group.nodes"]["ingress"]
    master = tf["resource"]["yandex_vpc_security_group.master"]["ingress"]
    for rule in nodes + master:
        cidrs = rule.get("v4_cidr_blocks")
        assert cidrs != ["0.0.0.0/0"], f"ingress open to the world: {rule.get('description')}"
    assert sorted(int(r["port"]) for r in master) == [443, 6443]
    node_ports = [r for r in nodes if r.get("from_port") == 30000]
    assert node_ports and node_ports[0]["to_port"] == 32767
    assert node_ports[0]["v4_cidr_blocks"] == "${var.client_cidrs}"
    assert not any(r.get("port") == 22 for r in nodes), "no SSH into nodes"
    cluster = tf["resource"]["yandex_kubernetes_cluster.main"]
    assert cluster["network_policy_provider"] == "CALICO"


def test_no_secrets_in_files():
    for f in INFRA.rglob("*"):
        if f.is_file() and f.suffix in (".tf", ".tfvars", ".example", ".md"):
            text = f.read_text()
            for marker in ("token =", "service_account_key_file =", "private_key", "password ="):
                assert marker not in text, f"{f.name} contains {marker!r}"
