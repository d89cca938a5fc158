"""The two Dockerfiles (Patroni+Citus, Dagster user code), the Patroni image's entrypoint and
its pgBackRest helper (citus-backup). How they are built: tests/unit/test_images.py."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import tomllib
from pathlib import Path

import pytest
import yaml

from citus_pipeline.cluster.kubernetes import manifests as mf
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
def test_runs_as_non_root(path):
    users = [a for i, a in instructions(path) if i == "USER"]
    assert users, "no USER instruction"
    last = users[-1].split(":")[0]
    assert last not in ("root", "0"), f"last USER is {last}"
    assert "latest" not in path.read_text().lower().replace("# ", "")


def test_patroni_image_has_the_releases_the_tests_run():
    """Debian's PostgreSQL 15 and pgBackRest, unpinned (the image records what it got: the
    `k8s` tests compare it with this machine's), Citus from its repository or the host, and
    the Python packages of uv.lock through requirements.txt."""
    run = " ".join(x for i, x in instructions(PATRONI_IMAGE) if i == "RUN")
    assert '"postgresql-${PG_MAJOR}"' in run and " pgbackrest " in run
    assert "packagecloud.io/citusdata/community" in run
    assert args_of(PATRONI_IMAGE)["CITUS_PACKAGE"] == "postgresql-15-citus-13.2"
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    pins = dict(
        line.split("==")
        for line in (REPO / "k8s" / "image" / "requirements.txt").read_text().splitlines()
        if "==" in line
    )
    for name in ("patroni", "kubernetes", "psycopg"):
        assert pins[name] == locked[name], name


def test_patroni_image_installs_the_backup_helper():
    copies = [a for i, a in instructions(PATRONI_IMAGE) if i == "COPY"]
    assert f"--chmod=0755 backup.py /usr/local/bin/{mf.BACKUP_SCRIPT}" in copies
    # Patroni runs the callback by name: /usr/local/bin is on the image's PATH
    env = " ".join(a for i, a in instructions(PATRONI_IMAGE) if i == "ENV")
    assert ":/usr/local/bin:" in env
    first = (REPO / "k8s" / "image" / "backup.py").read_text().splitlines()[0]
    assert first == "#!/opt/patroni/bin/python3"  # the venv with the Kubernetes client


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
    # Debian's Python 3.11 under uv from PyPI, not a Docker Hub Python image
    assert "python3 python3-venv" in text and '"uv==${UV_VERSION}"' in text


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
    conf = tmp_path / "pgbackrest.conf"  # the pgBackRest ConfigMap, mounted
    conf.write_text(mf.pgbackrest_configmap(s)["data"][mf.PGBACKREST_CONF_KEY])
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
            "CITUS_PGBACKREST_CONFIG": str(conf),
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
    assert env["CITUS_PGBACKREST_CONFIG"] == mf.PGBACKREST_CONFIG
    assert entrypoint.DATA_DIR == mf.PGDATA_DIR == env["PATRONI_POSTGRESQL_DATA_DIR"]
    assert entrypoint.STANZA_CALLBACK.split()[0] == mf.BACKUP_SCRIPT


# ---- entrypoint: pgBackRest -------------------------------------------------------------------
def test_entrypoint_wires_pgbackrest_into_patroni_like_the_local_backend(entrypoint, tmp_path):
    env = pod_env(tmp_path, group=2)
    conf = env["CITUS_PGBACKREST_CONFIG"]
    cfg = entrypoint.build_config(env)
    pg = cfg["postgresql"]
    base = f"pgbackrest --config={conf} --stanza=citusdemo-g2"
    params = pg["parameters"]
    assert params["archive_mode"] == "on"
    hold = f"{Path(mf.PGDATA_DIR).parent}/{mf.HOLD_ARCHIVE}"
    assert params["archive_command"] == f"test ! -e {hold} && {base} archive-push %p"
    assert params["archive_timeout"] == 60  # from the bootstrap file (the spec)
    assert params["ssl"] == "on"  # merged with, not replacing, the bootstrap file's
    assert pg["recovery_conf"] == {"restore_command": f"{base} archive-get %f %p"}
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert pg["pgbackrest"] == {
        "command": f"{base} --delta --type=standby restore",
        "keep_data": True,
        "no_params": True,
    }
    assert pg["callbacks"] == {
        "on_start": "citus-backup stanza",
        "on_role_change": "citus-backup stanza",
    }
    assert pg["use_unix_socket"] is True
    out = tmp_path / "patroni.yml"
    entrypoint.write_config(cfg, out)
    assert "s3cret" not in out.read_text()


def test_entrypoint_without_pgbackrest_configures_no_archiving(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    del env["CITUS_PGBACKREST_CONFIG"]
    pg = entrypoint.build_config(env)["postgresql"]
    assert "archive_command" not in pg["parameters"] and "create_replica_methods" not in pg
    entrypoint.prepare_pgbackrest(env)  # nothing to prepare


def test_entrypoint_refuses_a_half_pgbackrest_environment(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    del env["CITUS_PGBACKREST_STANZA"]
    with pytest.raises(entrypoint.EntrypointError, match="CITUS_PGBACKREST_STANZA is not"):
        entrypoint.build_config(env)
    env = pod_env(tmp_path)
    env["CITUS_PGBACKREST_CONFIG"] = str(tmp_path / "missing.conf")
    with pytest.raises(entrypoint.EntrypointError, match="missing.conf: pgBackRest config"):
        entrypoint.build_config(env)


def test_entrypoint_creates_pgbackrests_directories_and_pgdata(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    conf = Path(env["CITUS_PGBACKREST_CONFIG"])
    conf.write_text(conf.read_text().replace(mf.PGDATA_MOUNT, str(tmp_path / "vol")))
    env["PATRONI_POSTGRESQL_DATA_DIR"] = str(tmp_path / "vol" / "pgroot" / "data")
    entrypoint.prepare_pgbackrest(env)
    for d in ("pgbackrest/spool", "pgbackrest/lock", "pgbackrest/log", "pgroot/data"):
        p = tmp_path / "vol" / d
        assert p.is_dir() and stat.S_IMODE(p.stat().st_mode) == 0o700, d
    entrypoint.prepare_pgbackrest(env)  # a restarted pod finds them


# ---- citus-backup ------------------------------------------------------------------------------
def test_entrypoint_takes_back_what_fsgroup_opened_on_pgdata(entrypoint, tmp_path):
    """The kubelet's recursive fsGroup change gives a volume's directories g+rwx and setgid;
    PostgreSQL refuses such a data directory. 0700 and 0750 are left alone."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o2770)
    entrypoint.restrict_data_dir(str(data))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    data.chmod(0o750)
    entrypoint.restrict_data_dir(str(data))
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    entrypoint.restrict_data_dir(str(tmp_path / "absent"))  # a first start: nothing yet


def test_statefulsets_regroup_a_volume_only_on_its_first_start():
    spec = spec_from_mapping({})
    sts = next(m for m in mf.cluster_manifests(spec) if m["kind"] == "StatefulSet")
    ctx = sts["spec"]["template"]["spec"]["securityContext"]
    assert ctx["fsGroup"] == mf.IMAGE_UID
    assert ctx["fsGroupChangePolicy"] == "OnRootMismatch"


# ---- entrypoint: `cluster restore` ------------------------------------------------------------
def _restore(env, phase="restore", group="1", rid="abc123"):
    args = ["--set=20261207-101010F", "--type=name", "--target=p 1", "--target-timeline=2"]
    env["CITUS_RESTORE"] = json.dumps({"id": rid, "phase": phase, "groups": {group: args}})
    return env


def test_entrypoint_and_manifests_agree_on_the_restore(entrypoint):
    assert entrypoint.RESTORE_ASIDE == mf.RESTORE_ASIDE
    assert entrypoint.HOLD_ARCHIVE == mf.HOLD_ARCHIVE
    sts = next(m for m in mf.cluster_manifests(spec_from_mapping({})) if m["kind"] == "StatefulSet")
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["CITUS_RESTORE"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": "citusdemo-restore", "key": mf.RESTORE_KEY, "optional": True}


def test_in_a_restore_member_0_bootstraps_from_the_repository_the_others_clone(
    entrypoint, tmp_path
):
    env = _restore(pod_env(tmp_path, group=1))
    env["PATRONI_NAME"] = "citusdemo-1-0"
    cfg = entrypoint.build_config(env)
    boot = cfg["bootstrap"]
    assert boot["method"] == "pgbackrest" and boot["dcs"]  # the DCS settings kept
    command = boot["pgbackrest"]["command"]
    assert command.startswith(f"pgbackrest --config={env['CITUS_PGBACKREST_CONFIG']} ")
    assert "--stanza=citusdemo-g1 --set=20261207-101010F --type=name" in command
    assert "'--target=p 1'" in command and command.endswith(" restore")
    assert boot["pgbackrest"]["keep_existing_recovery_conf"] is True
    assert cfg["postgresql"]["create_replica_methods"] == ["basebackup"]
    env["PATRONI_NAME"] = "citusdemo-1-1"
    other = entrypoint.build_config(env)
    assert "method" not in other["bootstrap"]
    assert other["postgresql"]["create_replica_methods"] == ["basebackup"]
    # another group's member, or no restore: nothing changes
    for plain in (_restore(pod_env(tmp_path, group=2)), pod_env(tmp_path, group=1)):
        cfg = entrypoint.build_config(plain)
        assert "method" not in cfg["bootstrap"]
        assert cfg["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]


def test_a_restore_sets_the_data_aside_once_and_a_rollback_puts_it_back(entrypoint, tmp_path):
    data = tmp_path / "pgroot" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15")
    (data / "patroni.dynamic.json").write_text(json.dumps({"pause": True, "ttl": 30}))
    env = _restore(pod_env(tmp_path))
    request = entrypoint.restore_request(env)
    entrypoint.prepare_restore(request, data)
    aside = tmp_path / "pgroot" / mf.RESTORE_ASIDE
    assert (aside / "PG_VERSION").exists() and not data.exists()
    assert (tmp_path / "pgroot" / mf.HOLD_ARCHIVE).exists()
    data.mkdir()
    (data / "PG_VERSION").write_text("restored")
    entrypoint.prepare_restore(request, data)  # the container restarted: nothing moves again
    assert (data / "PG_VERSION").read_text() == "restored"
    rollback = entrypoint.restore_request(_restore(pod_env(tmp_path), phase="rollback"))
    entrypoint.prepare_restore(rollback, data)
    assert (data / "PG_VERSION").read_text() == "15" and not aside.exists()
    assert json.loads((data / "patroni.dynamic.json").read_text()) == {"ttl": 30}
    assert not (tmp_path / "pgroot" / mf.HOLD_ARCHIVE).exists()
    entrypoint.prepare_restore(rollback, data)  # again: nothing set aside, nothing moves
    assert (data / "PG_VERSION").read_text() == "15"


def test_a_broken_restore_request_is_one_error(entrypoint, tmp_path):
    env = pod_env(tmp_path)
    env["CITUS_RESTORE"] = "{not json"
    with pytest.raises(entrypoint.EntrypointError, match="CITUS_RESTORE: not a restore request"):
        entrypoint.build_config(env)
    env = _restore(pod_env(tmp_path), phase="later")
    with pytest.raises(entrypoint.EntrypointError, match="unknown phase 'later'"):
        entrypoint.build_config(env)
