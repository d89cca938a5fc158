"""The two Dockerfiles (Patroni+Citus, Dagster user code), the Patroni image's entrypoint and
its pgBackRest helper (citus-backup). How they are built: tests/unit/test_images.py."""

from __future__ import annotations

import importlib.util
import re
import stat
import sys
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
    assert params["archive_command"] == f"{base} archive-push %p"
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


@pytest.fixture(scope="module")
def helper():
    spec = importlib.util.spec_from_file_location(
        "citus_backup", REPO / "k8s" / "image" / "backup.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


MEMBER = {
    "CITUS_PGBACKREST_CONFIG": "/etc/pgbackrest/pgbackrest.conf",
    "CITUS_PGBACKREST_STANZA": "citusdemo-g1",
    "PATRONI_SUPERUSER_PASSWORD": "s3cret-su",
}


class Recorder:
    def __init__(self, statuses=()):
        self.calls, self.statuses = [], list(statuses)

    def __call__(self, cmd, env):
        self.calls.append((cmd, env))
        return self.statuses.pop(0) if self.statuses else 0


def test_callback_creates_the_stanza_on_a_primary_only(helper):
    run = Recorder()
    assert helper.stanza(MEMBER, "replica", run) == 0 and run.calls == []
    assert helper.stanza(MEMBER, "primary", run) == 0
    ((cmd, env),) = run.calls
    assert cmd == [
        "pgbackrest",
        "--config=/etc/pgbackrest/pgbackrest.conf",
        "--stanza=citusdemo-g1",
        "--no-online",  # pg_control only: callbacks get no password from Patroni
        "stanza-create",
    ]
    assert "PGPASSWORD" not in env
    args = helper.parse_args(["stanza", "on_role_change", "primary", "citusdemo"])
    assert (args.command, args.role) == ("stanza", "primary")


def test_backup_confirms_the_stanza_then_backs_up_with_the_password(helper):
    run = Recorder()
    assert helper.backup(MEMBER, "incr", run) == 0
    (stanza_cmd, stanza_env), (backup_cmd, backup_env) = run.calls
    assert stanza_cmd[-1] == "stanza-create" and "PGPASSWORD" not in stanza_env
    assert backup_cmd[:3] == helper.pgbackrest(MEMBER)
    assert "--type=incr" in backup_cmd and backup_cmd[-1] == "backup"
    assert backup_env["PGPASSWORD"] == "s3cret-su"
    failing = Recorder([55])
    assert helper.backup(MEMBER, "full", failing) == 55 and len(failing.calls) == 1


def test_backup_outside_a_member_is_one_error_line(helper, capsys, monkeypatch):
    monkeypatch.delenv("CITUS_PGBACKREST_CONFIG", raising=False)
    assert helper.main(["backup", "--type", "full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("citus-backup: CITUS_PGBACKREST_CONFIG")


def pod(helper, name, group, role=None, running=True):
    labels = {"application": "citus-pipeline", "cluster-name": "citusdemo", "citus-group": group}
    if role:
        labels["role"] = role
    return helper.Pod(name, labels, running)


def test_schedule_finds_each_groups_leader(helper):
    pods = [
        pod(helper, "citusdemo-0-1", "0", "primary"),
        pod(helper, "citusdemo-0-0", "0", "replica"),
        pod(helper, "citusdemo-1-0", "1", "primary", running=False),  # terminating
        pod(helper, "citusdemo-1-1", "1", "primary"),
        pod(helper, "citusdemo-2-0", "2", "replica"),
        helper.Pod("citusdemo-backup-29000000-abcde", {"cluster-name": "citusdemo"}),
    ]
    assert helper.leaders(pods, "citus-group", "role=primary") == {
        0: "citusdemo-0-1",
        1: "citusdemo-1-1",
        2: None,
    }


def test_schedule_backs_up_every_group_and_fails_if_one_was_not(helper):
    calls, said = [], []

    def exec_in(pod_name, command):
        calls.append((pod_name, command))
        if pod_name == "citusdemo-1-0":
            raise RuntimeError("pods/exec is forbidden")
        return 0

    groups = {0: "citusdemo-0-0", 1: "citusdemo-1-0", 2: None, 3: "citusdemo-3-1"}
    assert helper.schedule(groups, "diff", exec_in, said.append) == 1
    assert calls == [
        (p, ["citus-backup", "backup", "--type=diff"])
        for p in ("citusdemo-0-0", "citusdemo-1-0", "citusdemo-3-1")
    ]
    assert said[-1] == "not backed up: groups 1, 2"
    assert helper.schedule({0: "citusdemo-0-0"}, "incr", lambda p, c: 0, said.append) == 0
    assert helper.schedule({}, "incr", lambda p, c: 0, said.append) == 1


def test_schedule_arguments_are_what_the_cronjob_passes(helper):
    cj = mf.backup_cronjob(spec_from_mapping({}))
    c = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][0] == mf.BACKUP_SCRIPT == helper.SCRIPT
    args = helper.parse_args(c["command"][1:] + c["args"])
    assert (args.command, args.type, args.group_label) == ("schedule", "incr", "citus-group")
    assert args.leader == "role=primary" and args.container == "patroni"
    assert args.standby == "role=replica" and args.tls_port == mf.PGBACKREST_TLS_PORT
    # the standby's address is its pod's name under its group's headless Service
    host = args.standby_host.format(pod="citusdemo-2-1", group=2)
    assert host == f"citusdemo-2-1.{mf.headless_name(spec_from_mapping({}), 2)}.citus.svc"


def test_schedule_names_each_groups_running_standbys(helper):
    pods = [
        pod(helper, "citusdemo-1-0", "1", "primary"),
        pod(helper, "citusdemo-1-1", "1", "replica"),
        pod(helper, "citusdemo-1-2", "1", "replica", running=False),
        pod(helper, "citusdemo-2-0", "2", "primary"),
    ]
    assert helper.standbys(pods, "citus-group", "role=replica") == {1: ["citusdemo-1-1"]}
    calls, said = [], []
    groups = {1: "citusdemo-1-0", 2: "citusdemo-2-0"}
    sources = {1: ["citusdemo-1-1.h.citus.svc"]}

    def exec_in(pod_name, command):
        calls.append((pod_name, command))
        return 0

    assert helper.schedule(groups, "full", exec_in, said.append, sources, 8432) == 0
    assert calls == [
        (
            "citusdemo-1-0",
            [
                "citus-backup",
                "backup",
                "--type=full",
                "--standby=citusdemo-1-1.h.citus.svc",
                "--tls-port=8432",
            ],
        ),
        ("citusdemo-2-0", ["citus-backup", "backup", "--type=full"]),
    ]
    assert "copied from a standby" in said[0] and "no standby running" in said[2]


@pytest.fixture
def member_conf(tmp_path):
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(mf.pgbackrest_conf(spec_from_mapping({})))
    return {
        **MEMBER,
        "CITUS_PGBACKREST_CONFIG": str(conf),
        "CITUS_TLS_DIR": mf.TLS_MOUNT,
    }


def test_a_backup_from_standbys_reaches_each_through_its_tls_server(helper, member_conf):
    run = Recorder()
    hosts = ("a.h.citus.svc", "b.h.citus.svc")
    assert helper.backup(member_conf, "full", run, standbys=hosts, tls_port=8432) == 0
    _stanza, (cmd, env) = run.calls
    assert cmd[-1] == "backup" and "--backup-standby" in cmd
    assert env["PGPASSWORD"] == "s3cret-su"
    opts = dict(a.removeprefix("--").split("=", 1) for a in cmd if a.startswith("--pg"))
    for i, host in ((2, hosts[0]), (3, hosts[1])):
        assert opts[f"pg{i}-host"] == host and opts[f"pg{i}-host-type"] == "tls"
        assert opts[f"pg{i}-host-port"] == "8432"
        assert opts[f"pg{i}-host-ca-file"] == f"{mf.TLS_MOUNT}/ca.crt"
        assert opts[f"pg{i}-host-cert-file"] == f"{mf.TLS_MOUNT}/tls.crt"
        assert opts[f"pg{i}-path"] == mf.PGDATA_DIR and opts[f"pg{i}-port"] == "5432"
        assert opts[f"pg{i}-socket-path"] == mf.SOCKET_DIR
    assert not any(k.startswith("pg1-") for k in opts)  # this primary: the config's pg1


def test_a_failed_backup_from_the_standbys_is_taken_from_the_primary(helper, member_conf, capsys):
    run = Recorder([0, 56, 0])  # stanza ok, from the standby: "unable to find standby"
    assert helper.backup(member_conf, "incr", run, standbys=("a.h",)) == 0
    (_s, _), (first, _), (second, _) = run.calls
    assert "--backup-standby" in first and "--backup-standby" not in second
    assert "taking it from this primary" in capsys.readouterr().err
    both_fail = Recorder([0, 56, 55])
    assert helper.backup(member_conf, "incr", both_fail, standbys=("a.h",)) == 55


def test_the_members_run_pgbackrests_tls_server_beside_patroni():
    spec = spec_from_mapping({})
    sts = next(m for m in mf.cluster_manifests(spec) if m["kind"] == "StatefulSet")
    containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
    server = containers[mf.PGBACKREST_CONTAINER]
    assert server["command"][-1] == "server" and server["image"] == spec.kubernetes.image
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    patroni = {m["name"]: m["mountPath"] for m in containers["patroni"]["volumeMounts"]}
    for shared in ("pgdata", "run", "tls", "pgbackrest"):
        assert mounts[shared] == patroni[shared]  # the same files and socket as PostgreSQL
    conf = mf.pgbackrest_conf(spec)
    assert f"tls-server-auth={mf.MEMBER_CERT_CN}=*" in conf
    assert f"tls-server-port={mf.PGBACKREST_TLS_PORT}" in conf
    pols = {
        p["metadata"]["name"]: p for p in mf.cluster_manifests(spec) if p["kind"] == "NetworkPolicy"
    }
    ports = pols["citusdemo-members"]["spec"]["ingress"][0]["ports"]
    assert {"protocol": "TCP", "port": mf.PGBACKREST_TLS_PORT} in ports
    off = spec_from_mapping({"backup": {"archiving": False}})
    sts = next(m for m in mf.cluster_manifests(off) if m["kind"] == "StatefulSet")
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert mf.PGBACKREST_CONTAINER not in names


class FakeStream:
    """The kubernetes client's WSClient as exec_in uses it: output frames, then the status."""

    def __init__(self, frames, status):
        self.frames, self.status, self.out, self.err = list(frames), status, "", ""
        self.closed = False

    def is_open(self):
        return bool(self.frames)

    def update(self, timeout=0):
        channel, data = self.frames.pop(0)
        if channel == 1:
            self.out += data
        else:
            self.err += data

    def peek_stdout(self):
        return self.out

    def read_stdout(self):
        out, self.out = self.out, ""
        return out

    def peek_stderr(self):
        return self.err

    def read_stderr(self):
        err, self.err = self.err, ""
        return err

    @property
    def returncode(self):
        if isinstance(self.status, Exception):
            raise self.status
        return self.status

    def close(self):
        self.closed = True


def test_exec_in_forwards_the_output_and_returns_the_exit_status(helper, monkeypatch, capsys):
    import kubernetes.stream
    from kubernetes import client

    members = object.__new__(helper.KubernetesMembers)  # without the in-cluster config
    members.core, members.namespace, members.container = client.CoreV1Api(), "citus", "patroni"
    seen = {}

    def fake_stream(fn, pod, namespace, **kw):
        # the exec call of the client the image pins (a GET: `get` on pods/exec)
        assert fn.__name__ == "connect_get_namespaced_pod_exec"
        seen.update(kw, pod=pod, namespace=namespace)
        return resp

    monkeypatch.setattr(kubernetes.stream, "stream", fake_stream)
    resp = FakeStream([(1, "backup start\n"), (2, "WARN: x\n"), (1, "backup stop\n")], 0)
    assert members.exec_in("citusdemo-1-0", ["citus-backup", "backup"]) == 0
    assert resp.closed
    assert seen["pod"] == "citusdemo-1-0" and seen["container"] == "patroni"
    assert seen["command"] == ["citus-backup", "backup"] and seen["tty"] is False
    out = capsys.readouterr()
    assert out.out == "backup start\nbackup stop\n" and out.err == "WARN: x\n"
    resp = FakeStream([(1, "x\n")], 55)
    assert members.exec_in("citusdemo-1-0", ["citus-backup", "backup"]) == 55
    # a stream that broke without an exit status counts as a failure
    resp = FakeStream([], TypeError("'NoneType' object is not subscriptable"))
    assert members.exec_in("citusdemo-1-0", ["citus-backup", "backup"]) == 1
    assert "without an exit status" in capsys.readouterr().err
