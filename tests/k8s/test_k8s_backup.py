"""Archiving and the backups on real nodes: every member archives its group's WAL to an S3
repository (moto's server on the node network, standing in for Yandex Object Storage); the
rendered CronJob, fired by the real CronJob controller, backs up every group through
`citus-backup schedule` in the members' own image, copied from a streaming standby through
its pgBackRest TLS server; and the `cluster backup | backups | restore-point |
restore-points | restore` commands work on the cluster with `--backend kubernetes`."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest
import yaml
from kubernetes import client
from s3_server import ACCESS_KEY, SECRET_KEY, keys, s3_server

from citus_pipeline.cluster import health
from citus_pipeline.cluster.backend import get_recovery
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.pgbackrest import stanza
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import BackupError
from citus_pipeline.sandbox.layout import GATEWAY
from citus_pipeline.waiting import until

from .drills import K8S_SPEC, ensure_namespace

pytestmark = [pytest.mark.k8s, pytest.mark.citus]

SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"  # set by the CronJob controller


@pytest.fixture(scope="module")
def spec(kube, tmp_path_factory):
    """The sandbox's spec with archiving to S3 and a backup every minute; the bucket and the
    Secret of its keys made first (what infra/ and README step 3 give in the cloud)."""
    with s3_server(tmp_path_factory.mktemp("moto"), host=GATEWAY) as port:
        backup = {
            "archiving": True,
            "repo_type": "s3",
            "s3_endpoint": GATEWAY,
            "s3_port": port,
            "s3_verify_tls": False,  # moto's certificate is self-signed
            "schedule": "*/1 * * * *",
        }
        s = spec_from_mapping({**K8S_SPEC, "backup": backup})
        ensure_namespace(kube, s.kubernetes.namespace)
        core = client.CoreV1Api(kube.api())
        core.create_namespaced_secret(
            s.kubernetes.namespace,
            {
                "metadata": {"name": mf.s3_secret_name(s)},
                "data": {
                    "access-key": base64.b64encode(ACCESS_KEY.encode()).decode(),
                    "secret-key": base64.b64encode(SECRET_KEY.encode()).decode(),
                },
            },
        )
        yield s


def test_the_cronjob_controller_fires_the_backup_of_every_group(kube, cluster, spec):
    ns = spec.kubernetes.namespace
    batch = client.BatchV1Api(kube.api())
    cronjob = batch.read_namespaced_cron_job(mf.backup_name(spec), ns)
    assert cronjob.spec.schedule == "*/1 * * * *"
    # The CronJob exists from the apply on, so a run may fire while the members still start
    # and rightly fail ("no leader pod right now"); judged is a run fired on a whole cluster.
    whole_since = datetime.now(UTC)

    def scheduled(job) -> datetime:
        stamp = (job.metadata.annotations or {}).get(SCHEDULED, "")
        return datetime.fromisoformat(stamp) if stamp else whole_since

    def fired() -> list:
        jobs = batch.list_namespaced_job(ns).items
        return [
            j
            for j in jobs
            if any(o.kind == "CronJob" for o in j.metadata.owner_references or [])
            and scheduled(j) > whole_since
            and (j.status.succeeded or j.status.failed)
        ]

    jobs = until(fired, 360, 5, "a Job of the backup CronJob to finish", done=bool)
    job = jobs[0]
    pods = (
        client.CoreV1Api(kube.api())
        .list_namespaced_pod(ns, label_selector=f"job-name={job.metadata.name}")
        .items
    )
    logs = "\n".join(kube.container_log(ns, p.metadata.name, "backup") for p in pods)
    assert job.status.succeeded == 1, logs
    # each group copied from a standby, through the standby's pgBackRest TLS server
    for g in range(spec.workers.groups + 1):
        assert f"group {g}: incr backup" in logs and "copied from a standby" in logs, logs
    assert logs.count("replay on the standby reached") == spec.workers.groups + 1, logs
    assert pods[0].spec.containers[0].image == spec.kubernetes.image
    # in the bucket: every group's WAL and a full backup of every group
    port = spec.backup.s3_port
    for g in range(spec.workers.groups + 1):
        name = stanza(spec, g)
        archived = keys(GATEWAY, port, f"{spec.name}/archive/{name}/")
        assert any(n.endswith(".lz4") for n in archived), (name, archived[:10])
        backed_up = keys(GATEWAY, port, f"{spec.name}/backup/{name}/")
        assert any(n.endswith("F/backup.manifest") for n in backed_up), (name, backed_up[:10])


def _cli(kube, spec, tmp_path, *args: str) -> subprocess.CompletedProcess:
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "CITUS_PIPELINE_BACKEND": "kubernetes",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "citus_pipeline.cli", "cluster", *args, "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def _suspend_schedule(kube, spec) -> None:
    """The module's CronJob fires every minute: suspended, so what is listed is the test's."""
    client.BatchV1Api(kube.api()).patch_namespaced_cron_job(
        mf.backup_name(spec), spec.kubernetes.namespace, {"spec": {"suspend": True}}
    )


def test_the_backup_commands_work_on_kubernetes(kube, cluster, spec, tmp_path):
    """A backup of every group from a standby (a Job of the CronJob), the listing read in a
    member, a restore point recorded in the ConfigMap, and a restore planned from them."""
    _suspend_schedule(kube, spec)
    recovery = get_recovery(cluster)
    done = recovery.backup("full")
    assert sorted(b.group for b in done) == list(range(spec.workers.groups + 1))
    assert all(b.type == "full" and b.size > 0 for b in done)
    assert recovery.log.count("copied from a standby") == spec.workers.groups + 1
    assert recovery.log.count("replay on the standby reached") == spec.workers.groups + 1

    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY)")
        conn.execute("INSERT INTO kept VALUES (1) ON CONFLICT DO NOTHING")
    r = _cli(kube, spec, tmp_path, "restore-point", "k8s-point-1")
    assert r.returncode == 0, r.stderr
    assert "restore point k8s-point-1" in r.stdout and "group 2" in r.stdout

    listing = _cli(kube, spec, tmp_path, "backups", "--json")
    assert listing.returncode == 0, listing.stderr
    infos = json.loads(listing.stdout)
    assert [i["group"] for i in infos] == list(range(spec.workers.groups + 1))
    for i in infos:
        assert i["status"] == "ok" and i["backups"][-1]["label"] in {b.label for b in done}
        assert i["backups"][-1]["type"] == "full"
    points = json.loads(_cli(kube, spec, tmp_path, "restore-points", "--json").stdout)
    assert "k8s-point-1" in [p["name"] for p in points]

    # an unknown point: refused in one line, nothing changed
    unknown = _cli(kube, spec, tmp_path, "restore", "--to", "no-such-point", "--yes")
    assert unknown.returncode != 0 and "no-such-point" in unknown.stderr
    assert unknown.stderr.strip().count("\n") == 0  # one line


def _table(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*), md5(string_agg(id::text || ':' || v, ',' ORDER BY id)) FROM sold"
        ).fetchone()


def test_damage_then_restore_to_a_point_gives_back_the_table_exactly(kube, cluster, spec, tmp_path):
    """A distributed table at a point, then damaged; `cluster restore --to` the point brings
    back every row (count and hash over every row), every group led, pg_dist_node following."""
    _suspend_schedule(kube, spec)
    if not all(i.backups for i in get_recovery(cluster).list()):
        get_recovery(cluster).backup("full")  # this test alone: a backup before the point
    dsn = cluster.coordinator_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE sold (id bigint PRIMARY KEY, v text NOT NULL)")
        conn.execute("SELECT create_distributed_table('sold', 'id')")
        conn.execute("INSERT INTO sold SELECT i, md5(i::text) FROM generate_series(1, 20000) i")
    before = _table(dsn)
    r = _cli(kube, spec, tmp_path, "restore-point", "k8s-before-damage")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM sold WHERE id % 3 = 0")
        conn.execute("UPDATE sold SET v = 'damaged' WHERE id % 5 = 0")
    assert _table(dsn) != before

    restored = _cli(kube, spec, tmp_path, "restore", "--to", "k8s-before-damage", "--yes")
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert "cluster restored to restore point k8s-before-damage" in restored.stdout
    assert _table(cluster.coordinator_dsn()) == before
    topo = cluster.status()
    assert health.every_group_has_a_leader(topo).holds
    assert health.dist_nodes_follow_leaders(topo).holds
    assert (
        len(topo.members) == spec.coordinator.members + spec.workers.groups * spec.workers.members
    )
    # nothing of the restore is left: its ConfigMap, the set-aside data, the archive hold
    core = client.CoreV1Api(kube.api())
    names = [
        c.metadata.name for c in core.list_namespaced_config_map(spec.kubernetes.namespace).items
    ]
    assert mf.restore_name(spec) not in names
    # the restored timelines are archived and a full backup follows the restore
    infos = json.loads(_cli(kube, spec, tmp_path, "backups", "--json").stdout)
    for i in infos:
        assert i["backups"][-1]["type"] == "full"
        assert int(i["backups"][-1]["wal_start"][:8], 16) >= 2, i  # on the new timeline


def test_a_restore_failing_half_way_puts_the_cluster_back_as_it_was(
    kube, cluster, spec, tmp_path, monkeypatch
):
    """Group 2's first member cannot restore (its backup is gone from the plan's label):
    the restore stops naming group 2, and every member is back on its own data, nothing of
    the restore left, no restored timeline archived."""
    _suspend_schedule(kube, spec)
    if not all(i.backups for i in get_recovery(cluster).list()):
        get_recovery(cluster).backup("full")  # this test alone: a backup before the point
    dsn = cluster.coordinator_dsn()
    r = _cli(kube, spec, tmp_path, "restore-point", "k8s-never-reached")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sold (id bigint PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO sold VALUES (-1, 'after the point') ON CONFLICT DO NOTHING")
    before = _table(dsn)
    recovery = get_recovery(cluster)
    planned = recovery.plan("k8s-never-reached")
    last = len(planned) - 1
    gone = planned[last].backup.model_copy(update={"label": "20991231-000000F"})
    planned[last] = dataclasses.replace(planned[last], backup=gone)
    monkeypatch.setattr(recovery, "plan", lambda *_a, **_k: planned)
    timelines = {i.group: i.wal_max for i in recovery.list()}

    with pytest.raises(BackupError, match=f"group {last}: "):
        recovery.restore("k8s-never-reached", timeout=300, backup_after=False)

    assert _table(cluster.coordinator_dsn()) == before  # the rows after the point: all there
    topo = cluster.status()
    assert health.every_group_has_a_leader(topo).holds
    assert all(m.state in ("running", "streaming") for m in topo.members), topo.members
    core = client.CoreV1Api(kube.api())
    names = [
        c.metadata.name for c in core.list_namespaced_config_map(spec.kubernetes.namespace).items
    ]
    assert mf.restore_name(spec) not in names
    after = {i.group: i.wal_max for i in get_recovery(cluster).list()}
    for g, wal in after.items():  # still on the timeline the cluster was on
        assert wal[:8] == timelines[g][:8], (g, timelines[g], wal)
