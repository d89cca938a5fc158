"""infra/: Terraform for Yandex Cloud, checked offline (fmt, HCL parse, declared defaults)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.spec import ClusterSpec

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


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


# ---- backups ----------------------------------------------------------------------------------
def test_backup_bucket_is_private_and_encrypted(tf):
    r = tf["resource"]
    bucket = r["yandex_storage_bucket.backup"]
    assert bucket["bucket"] == "${var.backup_bucket}"
    assert bucket["anonymous_access_flags"] == [
        {"read": False, "list": False, "config_read": False}
    ]
    sse = bucket["server_side_encryption_configuration"][0]["rule"][0]
    by_default = sse["apply_server_side_encryption_by_default"][0]
    assert by_default == {
        "kms_master_key_id": "${yandex_kms_symmetric_key.backup.id}",
        "sse_algorithm": "aws:kms",
    }
    # pgBackRest expires backups itself: a versioned bucket would keep what it deletes
    assert "versioning" not in bucket and "lifecycle_rule" not in bucket
    assert bucket.get("force_destroy", False) is False


def test_backup_account_may_edit_storage_and_use_the_bucket_key(tf):
    r = tf["resource"]
    account = "serviceAccount:${yandex_iam_service_account.backup.id}"
    storage = r["yandex_resourcemanager_folder_iam_member.backup_storage"]
    assert (storage["role"], storage["member"]) == ("storage.editor", account)
    kms = r["yandex_kms_symmetric_key_iam_binding.backup"]
    assert kms["role"] == "kms.keys.encrypterDecrypter" and kms["members"] == [account]
    key = r["yandex_iam_service_account_static_access_key.backup"]
    assert key["service_account_id"] == "${yandex_iam_service_account.backup.id}"


def test_backup_outputs_and_the_secret_is_sensitive(tf):
    o = tf["output"]
    assert o["backup_bucket"]["value"] == "${yandex_storage_bucket.backup.bucket}"
    key = "yandex_iam_service_account_static_access_key.backup"
    assert o["backup_access_key_id"]["value"] == f"${{{key}.access_key}}"
    assert o["backup_secret_key"]["value"] == f"${{{key}.secret_key}}"
    assert o["backup_secret_key"]["sensitive"] is True


def test_backup_bucket_is_named_by_the_user(tf):
    v = tf["variable"]["backup_bucket"]
    assert "default" not in v  # bucket names are global: no shared default to collide on
    example = (INFRA / "terraform.tfvars.example").read_text()
    assert re.search(r"^backup_bucket\s*=", example, re.MULTILINE)


def test_readme_creates_the_secret_the_members_read():
    """The kubectl command in infra/README.md makes the Secret and keys the manifests name."""
    readme = (INFRA / "README.md").read_text()
    spec = ClusterSpec()
    blocks = readme.split("```")[1::2]
    (cmd,) = [b for b in blocks if f"create secret generic {spec.backup.s3_secret} " in b]
    assert f"kubectl -n {spec.kubernetes.namespace} create secret" in cmd
    for output, key in (
        ("backup_access_key_id", mf.S3_SECRET_KEYS["PGBACKREST_REPO1_S3_KEY"]),
        ("backup_secret_key", mf.S3_SECRET_KEYS["PGBACKREST_REPO1_S3_KEY_SECRET"]),
    ):
        assert f'--from-literal={key}="$(terraform -chdir=infra output -raw {output})"' in cmd
