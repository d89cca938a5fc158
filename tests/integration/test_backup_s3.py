"""The S3 repository, as Kubernetes uses it: pgBackRest archiving and restoring through an
S3-compatible server on loopback (moto's server, over TLS, path-style, region ru-central1).

moto stands in for Yandex Object Storage: the same protocol pgBackRest speaks to both, not
the same service (the cloud's own behaviour is verified nowhere here).
"""

from __future__ import annotations

import shutil

import psycopg
import pytest
from s3_server import ACCESS_KEY, BUCKET, SECRET_KEY
from s3_server import s3_server as moto_s3

from citus_pipeline.cluster.local.recovery import LocalRecovery

pytestmark = [
    pytest.mark.citus,
    pytest.mark.skipif(
        not shutil.which("pgbackrest"),
        reason="pgbackrest not installed (Debian's pgbackrest): run scripts/bootstrap.sh",
    ),
]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto")) as port:
        yield port


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module, s3_server):
    mp = pytest.MonkeyPatch()
    # pgBackRest reads the keys from the environment; Patroni hands them to archive-push
    mp.setenv("PGBACKREST_REPO1_S3_KEY", ACCESS_KEY)
    mp.setenv("PGBACKREST_REPO1_S3_KEY_SECRET", SECRET_KEY)
    try:
        yield fresh_cluster_module(
            workers={"groups": 1, "members": 2},
            coordinator={"members": 2},
            backup={
                "repo_type": "s3",
                "s3_endpoint": "127.0.0.1",
                "s3_port": s3_server,
                "s3_verify_tls": False,  # moto's certificate is self-signed
                "s3_bucket": BUCKET,
            },
        )
    finally:
        mp.undo()


def _count(cluster) -> int:
    with psycopg.connect(cluster.coordinator_dsn(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM s3_rows").fetchone()[0]


def test_archive_backup_and_restore_through_an_s3_repository(cluster, s3_server):
    rec = LocalRecovery(cluster)
    dsn = cluster.coordinator_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE s3_rows (id bigint PRIMARY KEY)")
        conn.execute("SELECT create_distributed_table('s3_rows', 'id')")
        conn.execute("INSERT INTO s3_rows SELECT generate_series(1, 5000)")
    rec.backup("full")
    rec.restore_point("S3RP")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO s3_rows SELECT generate_series(5001, 9000)")
    infos = rec.list()
    assert [i.status for i in infos] == ["ok", "ok"]
    assert all(i.backups and i.wal_max for i in infos)
    # nothing of the repository is on this machine's disk: it is all in the bucket
    assert not (cluster.layout.backup_dir / "repo").exists()
    rec.restore(to="S3RP", backup_after=False)
    assert _count(cluster) == 5000
