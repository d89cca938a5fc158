"""`citus-backup` (k8s/image/backup.py), the members' backup helper: the stanza callback, a
backup on a group's primary copied from its standbys through their pgBackRest TLS server, the
CronJob's scheduled run of every group, and the exec stream it reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.spec import spec_from_mapping

REPO = Path(__file__).resolve().parents[2]


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


def test_a_held_stanza_lock_is_waited_for_then_the_backup_runs(helper):
    """pgBackRest exits 50 while its asynchronous archive-push holds the archive lock that
    stanza-create needs too: waited for, not reported as a failed backup."""
    waits = []
    run = Recorder([helper.LOCK_HELD, helper.LOCK_HELD])
    assert helper.backup(MEMBER, "full", run, sleep=waits.append) == 0
    assert [c[-1] for c, _ in run.calls] == ["stanza-create"] * 3 + ["backup"]
    assert waits == [helper.LOCK_WAIT_S] * 2
    held = Recorder([helper.LOCK_HELD] * helper.LOCK_ATTEMPTS)
    assert helper.backup(MEMBER, "full", held, sleep=lambda _s: None) == helper.LOCK_HELD
    assert len(held.calls) == helper.LOCK_ATTEMPTS  # given up on: no backup attempted
    assert helper.stanza(MEMBER, "primary", Recorder([helper.LOCK_HELD]), sleep=waits.append) == 0


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
