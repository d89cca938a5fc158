"""The two Dockerfiles (Patroni+Citus, Dagster user code) and the Patroni image's entrypoint."""

from __future__ import annotations

import importlib.util
import re
import stat
from pathlib import Path

import pytest
import yaml

from citus_pipeline.cluster import manifests as mf
from citus_pipeline.cluster.spec import spec_from_mapping

REPO = Path(__file__).resolve().parents[2]
PATRONI_IMAGE = REPO / "k8s" / "image" / "Dockerfile"
DAGSTER_IMAGE = REPO / "k8s" / "dagster" / "Dockerfile"
DOCKERFILES = [PATRONI_IMAGE, DAGSTER_IMAGE]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        buf += " " + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(path) if i == "ARG" and "=" in a)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned(path):
    images = [a.split()[0] for i, a in instructions(path) if i == "FROM"]
    images += re.findall(r"--from=(\S+)", path.read_text())
    assert images
    for image in images:
        assert ":" in image, f"{image}: no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: tag is not a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_non_root(path):
    users = [a for i, a in instructions(path) if i == "USER"]
    assert users, "no USER instruction"
    last = users[-1].split(":")[0]
    assert last not in ("root", "0"), f"last USER is {last}"
    assert "latest" not in path.read_text().lower().replace("# ", "")


def test_patroni_image_package_versions_are_pinned():
    a = args_of(PATRONI_IMAGE)
    assert re.fullmatch(r"15\.\d+-\S+", a["PG_VERSION"])
    assert a["CITUS_PACKAGE"] == "postgresql-15-citus-13.2"
    assert re.fullmatch(r"13\.2\.\d+\.citus-\d+", a["CITUS_VERSION"])
    assert re.fullmatch(r"4\.1\.\d+", a["PATRONI_VERSION"])
    run = " ".join(x for i, x in instructions(PATRONI_IMAGE) if i == "RUN")
    assert '"postgresql-${PG_MAJOR}=${PG_VERSION}"' in run
    assert '"${CITUS_PACKAGE}=${CITUS_VERSION}"' in run
    assert '"patroni[kubernetes,psycopg3]==${PATRONI_VERSION}"' in run
    assert "packagecloud.io/citusdata/community" in run
    # every pip requirement has an exact version
    reqs = re.findall(r'"([^"$][^"]*)"', run.split("pip install", 1)[1].split("&&", 1)[0])
    assert len(reqs) == 2
    assert all("==" in r for r in reqs), reqs


def test_patroni_image_uid_matches_the_manifests():
    text = PATRONI_IMAGE.read_text()
    assert f"--uid {mf.IMAGE_UID}" in text
    users = [a for i, a in instructions(PATRONI_IMAGE) if i == "USER"]
    assert users[-1] == f"{mf.IMAGE_UID}:{mf.IMAGE_UID}"


def test_dagster_image_syncs_the_lock_and_serves_the_code_location():
    text = " ".join(a for _, a in instructions(DAGSTER_IMAGE))
    assert "uv sync --frozen" in text
    cmd = next(a for i, a in instructions(DAGSTER_IMAGE) if i == "CMD")
    assert "code-server" in cmd and "citus_pipeline.definitions" in cmd
    assert re.search(r"FROM python:3\.11\.\d+-", DAGSTER_IMAGE.read_text())


def test_dagster_values_read_the_dsn_from_a_secret():
    v = yaml.safe_load((REPO / "k8s" / "dagster" / "values.yaml").read_text())
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["postgresql"]["enabled"] is False and v["postgresql"]["postgresqlHost"]
    dep = v["dagster-user-deployments"]["deployments"][0]
    assert dep["codeServerArgs"] == ["-m", "citus_pipeline.definitions"]
    assert dep["image"]["tag"] != "latest"
    for env in (
        dep["env"],
        v["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["env"],
    ):
        by = {e["name"]: e for e in env}
        assert by["CITUS_PIPELINE_DSN"]["valueFrom"]["secretKeyRef"]["name"] == "citus-dsn"
        assert "value" not in by["CITUS_PIPELINE_DSN"] and "value" not in by["PGPASSWORD"]


# ---- entrypoint -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def entrypoint():
    spec = importlib.util.spec_from_file_location(
        "citus_entrypoint", REPO / "k8s" / "image" / "entrypoint.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pod_env(tmp_path, group=1) -> dict[str, str]:
    s = spec_from_mapping({})
    boot = tmp_path / "bootstrap.yaml"
    boot.write_text(mf.bootstrap_configmap(s)["data"][mf.BOOTSTRAP_KEY])
    env = {}
    for e in mf.member_env(s, group):
        if "value" in e:
            env[e["name"]] = e["value"]
    env.update(
        {
            "PATRONI_NAME": f"citusdemo-{group}-0",
            "PATRONI_KUBERNETES_NAMESPACE": "citus",
            "PATRONI_KUBERNETES_POD_IP": "10.112.1.7",
            "PATRONI_SUPERUSER_PASSWORD": "s3cret-su",
            "PATRONI_REPLICATION_PASSWORD": "s3cret-repl",
            "PATRONI_RESTAPI_PASSWORD": "s3cret-api",
            "CITUS_PATRONI_BOOTSTRAP_FILE": str(boot),
        }
    )
    # what the kubelet does with $(VAR) references
    for k, v in env.items():
        env[k] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], v)
    return env


def test_entrypoint_config_uses_the_stable_dns_name_and_no_secrets(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    cfg = entrypoint.build_config(env)
    assert (
        cfg["postgresql"]["connect_address"] == "citusdemo-1-0.citusdemo-1-headless.citus.svc:5432"
    )
    assert cfg["restapi"]["connect_address"] == "citusdemo-1-0.citusdemo-1-headless.citus.svc:8008"
    assert cfg["citus"] == {"group": 1, "database": "citus"}
    assert (
        cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]["password_encryption"]
        == "scram-sha-256"
    )
    assert cfg["postgresql"]["parameters"]["ssl"] == "on"
    out = tmp_path / "patroni.yml"
    entrypoint.write_config(cfg, out)
    text = out.read_text()
    assert "s3cret" not in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_entrypoint_builds_the_dns_name_when_no_connect_address_is_given(entrypoint, tmp_path):
    env = pod_env(tmp_path, group=2)
    del env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"]
    env["CITUS_HEADLESS_SERVICE"] = "citusdemo-2-headless"
    assert (
        entrypoint.build_config(env)["postgresql"]["connect_address"]
        == "citusdemo-2-0.citusdemo-2-headless.citus.svc:5432"
    )
    del env["CITUS_HEADLESS_SERVICE"]
    assert entrypoint.build_config(env)["postgresql"]["connect_address"] == "10.112.1.7:5432"


def test_entrypoint_refuses_missing_secrets_in_one_line(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    del env["PATRONI_RESTAPI_PASSWORD"]
    with pytest.raises(
        entrypoint.EntrypointError,
        match="^environment variables not set: PATRONI_RESTAPI_PASSWORD$",
    ):
        entrypoint.build_config(env)


def test_entrypoint_tls_key_copied_private(entrypoint, tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    for f in ("tls.crt", "tls.key", "ca.crt"):
        (tls / f).write_text(f)
    (tls / "tls.key").chmod(0o440)
    key = tmp_path / "copy" / "tls.key"
    entrypoint.prepare_tls(str(tls), key)
    assert key.read_text() == "tls.key" and stat.S_IMODE(key.stat().st_mode) == 0o600
    (tls / "ca.crt").unlink()
    with pytest.raises(entrypoint.EntrypointError, match="ca.crt: missing"):
        entrypoint.prepare_tls(str(tls), key)


def test_entrypoint_and_manifests_agree_on_paths(entrypoint):
    assert str(entrypoint.KEY_COPY) == mf.TLS_KEY_COPY  # ssl_key_file points at the private copy
    env = {e["name"]: e.get("value") for e in mf.member_env(spec_from_mapping({}), 1)}
    assert env["CITUS_TLS_DIR"] == mf.TLS_MOUNT
    assert env["CITUS_PATRONI_BOOTSTRAP_FILE"] == f"{mf.BOOTSTRAP_MOUNT}/{mf.BOOTSTRAP_KEY}"
