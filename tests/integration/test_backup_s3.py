"""The S3 repository, as Kubernetes uses it: pgBackRest archiving and restoring through an
S3-compatible server on loopback (moto's server, over TLS, path-style, region ru-central1).

moto stands in for Yandex Object Storage: the same protocol pgBackRest speaks to both, not
the same service (the cloud's own behaviour is verified nowhere here).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys

import httpx
import psycopg
import pytest

from citus_pipeline.cluster.local.recovery import LocalRecovery
from citus_pipeline.errors import WaitTimeout
from citus_pipeline.waiting import until

pytestmark = [
    pytest.mark.citus,
    pytest.mark.skipif(
        not shutil.which("pgbackrest"),
        reason="pgbackrest not installed (Debian's pgbackrest): run scripts/bootstrap.sh",
    ),
]
BUCKET = "citus-pipeline-backups"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# moto's S3 server on plain HTTP, behind a small TLS proxy: pgBackRest speaks S3 over TLS
# only, and werkzeug's own TLS drops kept-alive connections without a close_notify, which
# pgBackRest reads as a TLS error. The proxy ends each side as the other ends.
SERVER = """
import asyncio, ssl, sys, threading
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server, make_ssl_devcert

tls_port, cert_base = int(sys.argv[1]), sys.argv[2]
http = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True)
threading.Thread(target=http.serve_forever, daemon=True).start()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(*make_ssl_devcert(cert_base, host="127.0.0.1"))

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def handle(client_r, client_w):
    up_r, up_w = await asyncio.open_connection("127.0.0.1", http.server_port)
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w), return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", tls_port, ssl=ctx)
    await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto's S3 server is not installed (the dev dependency moto[server])")
    port = _free_port()
    work = tmp_path_factory.mktemp("moto")
    log = work / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port), str(work / "cert")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def bucket_made() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"moto's S3 server exited: {log.read_text()[-500:]}")
            # the bucket Terraform creates in the cloud
            r = httpx.put(f"https://127.0.0.1:{port}/{BUCKET}", verify=False, timeout=2)
            return r.status_code == 200

        try:
            until(bucket_made, 30, 0.3, "moto's S3 server to start", ignore=(httpx.HTTPError,))
        except WaitTimeout as err:
            pytest.fail(f"{err}: {log.read_text()[-500:]}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def cluster(fresh_cluster_module, s3_server):
    mp = pytest.MonkeyPatch()
    # pgBackRest reads the keys from the environment; Patroni hands them to archive-push
    mp.setenv("PGBACKREST_REPO1_S3_KEY", "test-access-key")
    mp.setenv("PGBACKREST_REPO1_S3_KEY_SECRET", "test-secret-key")
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
