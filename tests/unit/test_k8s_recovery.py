"""Backups on Kubernetes as the CLI takes them: a Job made from the backup CronJob's own
template with the type asked for, a scheduled run waited for first, a failed run said in one
line, and the repository read through a member (fakes for the API; the sandbox test runs it)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kube_fakes import make, no_dsn_env  # noqa: F401 -- autouse: no caller's DSN
from kubernetes.client import ApiClient

from citus_pipeline.cluster.backend import get_recovery
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.repository import Repository
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import BackupError

ARCHIVING = spec_from_mapping({"backup": {"archiving": True}})


def _info(group: int, label: str) -> str:
    stanza = f"citusdemo-g{group}"
    return json.dumps(
        [
            {
                "name": stanza,
                "status": {"message": "ok"},
                "archive": [{"id": "15-1", "min": "0" * 24, "max": "0" * 23 + "9"}],
                "db": [{"system-id": 7}],
                "backup": [
                    {
                        "label": label,
                        "type": "full",
                        "timestamp": {"start": 1, "stop": 2},
                        "archive": {"start": "0" * 23 + "2", "stop": "0" * 23 + "3"},
                        "lsn": {"start": "0/2000028", "stop": "0/3000100"},
                        "info": {"size": 100, "repository": {"size": 10, "delta": 10}},
                    }
                ],
            }
        ]
    )


class FakeBatch:
    def __init__(self, outcome="succeeded", active=()):
        cronjob = mf.backup_cronjob(ARCHIVING)
        self.cronjob = SimpleNamespace(
            spec=SimpleNamespace(job_template=cronjob["spec"]["jobTemplate"]),
            metadata=SimpleNamespace(uid="cronjob-uid"),
            status=SimpleNamespace(active=[SimpleNamespace(name=n) for n in active]),
        )
        self.api_client = ApiClient()
        self.created: list[dict] = []
        self.outcome, self.reads = outcome, 0

    def read_namespaced_cron_job(self, name, namespace):
        assert name == mf.backup_name(ARCHIVING)
        if self.reads >= 2:  # read for the template, then while waiting: then it finished
            self.cronjob.status.active = []
        self.reads += 1
        return self.cronjob

    def create_namespaced_job(self, namespace, body):
        self.created.append(body)

    def read_namespaced_job(self, name, namespace):
        status = {"succeeded": None, "failed": None, self.outcome: 1}
        return SimpleNamespace(status=SimpleNamespace(**status))


@pytest.fixture
def recovery(monkeypatch):
    c, *_ = make()
    c.spec = ARCHIVING
    r = get_recovery(c)
    repo = Repository(ARCHIVING, lambda g, args: _info(g, f"2026120{g}F"))
    monkeypatch.setattr(r, "repository", lambda: repo)
    return r


def test_a_backup_is_a_job_of_the_cronjob_with_the_type_asked_for(recovery, monkeypatch):
    batch = FakeBatch(active=["citusdemo-backup-29000000"])
    monkeypatch.setattr(recovery, "_batch", lambda: batch)
    said = []
    done = recovery.backup("diff", lambda msg, *_: said.append(msg))
    (job,) = batch.created
    assert job["metadata"]["name"].startswith("citusdemo-backup-manual-")
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "CronJob" and owner["uid"] == "cronjob-uid" and owner["controller"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    types = [a for a in container["args"] if a.startswith("--type=")]
    assert types == ["--type=diff"]  # the CronJob's scheduled_type replaced, not added to
    assert "--standby=role=replica" in container["args"]
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert any("waiting for the scheduled backup" in m for m in said)
    assert [b.label for b in done] == ["20261200F", "20261201F", "20261202F"]


def test_a_failed_backup_job_is_one_error_naming_the_job(recovery, monkeypatch):
    monkeypatch.setattr(recovery, "_batch", lambda: FakeBatch("failed"))
    monkeypatch.setattr(recovery, "_job_log", lambda job, tail=None: "x\nnot backed up: groups 2\n")
    with pytest.raises(BackupError, match="failed: not backed up: groups 2") as err:
        recovery.backup("full")
    assert "kubectl -n citus logs job/citusdemo-backup-manual-" in str(err.value)


def test_without_archiving_there_is_nothing_to_back_up():
    c, *_ = make()
    c.spec = spec_from_mapping({"backup": {"archiving": False}})
    with pytest.raises(BackupError, match="archiving is off"):
        get_recovery(c).list()


def test_a_restore_the_plan_refuses_changes_nothing(recovery, monkeypatch):
    c = recovery.cluster
    log = c.api.core.log
    monkeypatch.setattr(recovery.points, "list", list)
    with pytest.raises(BackupError, match="unknown restore point 'p1'"):
        recovery.restore("p1")
    assert not [e for e in log if e[0] in ("create", "replace", "patch", "delete")]


def test_a_member_whose_patroni_ended_fails_the_restore_at_once(recovery):
    """Patroni exits with status 0 after a failed bootstrap: any end of its container is
    the restore's failure, named by group, not a wait until the timeout."""
    from citus_pipeline.cluster.kubernetes.restore import StatefulSetRestore

    run = StatefulSetRestore(recovery.cluster, [], ["--type=name", "--target=p"])
    ended = SimpleNamespace(exit_code=0)
    pod = SimpleNamespace(
        metadata=SimpleNamespace(name="citusdemo-2-0"),
        status=SimpleNamespace(
            container_statuses=[
                SimpleNamespace(
                    name="patroni",
                    state=SimpleNamespace(terminated=None),
                    last_state=SimpleNamespace(terminated=ended),
                )
            ]
        ),
    )
    run._last_log = lambda *_a, **_k: "PatroniFatalException: Failed to bootstrap cluster"
    with pytest.raises(BackupError, match="group 2: citusdemo-2-0 exited .* Failed to bootstrap"):
        run._raise_if_failed(2, pod)
    pod.status.container_statuses[0].last_state.terminated = None
    run._raise_if_failed(2, pod)  # running, never ended: no failure


def test_a_backup_pod_that_wrote_nothing_yet_has_an_empty_log(recovery, monkeypatch):
    """The API answers a container's empty log with no body at all (None in the client)."""
    core = recovery.api.core
    pod = SimpleNamespace(metadata=SimpleNamespace(name="citusdemo-backup-manual-1-x"))
    monkeypatch.setattr(
        type(core),
        "list_namespaced_pod",
        lambda *_a, **_k: SimpleNamespace(items=[pod]),
        raising=False,
    )
    monkeypatch.setattr(
        type(core), "read_namespaced_pod_log", lambda *_a, **_k: None, raising=False
    )
    assert recovery._job_log("citusdemo-backup-manual-1", tail=1) == ""


def test_an_exec_streams_through_a_client_of_its_own(monkeypatch):
    """kubernetes.stream swaps the request method of the client it is given: the exec gets
    a private one, so the callers' shared client never sends a REST call as a websocket."""
    import kubernetes.stream
    from kubernetes.client import Configuration, CoreV1Api

    from citus_pipeline.cluster.kubernetes.pod_exec import run_in_pod

    shared = CoreV1Api(ApiClient(Configuration()))
    request = shared.api_client.request
    used = {}

    class Done:
        returncode = 0

        def is_open(self):
            return False

        def peek_stdout(self):
            return False

        def peek_stderr(self):
            return False

        def close(self):
            pass

    def fake_stream(fn, pod, namespace, **kw):
        used["client"] = fn.__self__.api_client
        return Done()

    monkeypatch.setattr(kubernetes.stream, "stream", fake_stream)
    assert run_in_pod(shared, "citus", "citusdemo-1-0", "patroni", ["true"]).status == 0
    assert used["client"] is not shared.api_client
    assert used["client"].configuration is shared.api_client.configuration
    assert shared.api_client.request == request
