"""An S3-compatible server for the tests: moto's, over TLS, path-style (what pgBackRest speaks
to Yandex Object Storage). moto stands in for the cloud's object storage: the same protocol,
not the same service. Skips the test, with the reason, where moto is not installed."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from citus_pipeline.errors import WaitTimeout
from citus_pipeline.waiting import until

BUCKET = "citus-pipeline-backups"
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key"

# moto's S3 server on plain HTTP, behind a small TLS proxy: pgBackRest speaks S3 over TLS
# only, and werkzeug's own TLS drops kept-alive connections without a close_notify, which
# pgBackRest reads as a TLS error. The proxy ends each side as the other ends.
SERVER = """
import asyncio, ssl, sys, threading
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server, make_ssl_devcert

host, tls_port, cert_base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
http = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True)
threading.Thread(target=http.serve_forever, daemon=True).start()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(*make_ssl_devcert(cert_base, host=host))

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
    server = await asyncio.start_server(handle, host, tls_port, ssl=ctx)
    await server.serve_forever()

asyncio.run(main())
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(work: Path, host: str = "127.0.0.1") -> Iterator[int]:
    """moto's S3 over TLS on ``host`` with the bucket made (as Terraform makes it); yields
    its port."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto's S3 server is not installed (the dev dependency moto[server])")
    port = free_port(host)
    log = work / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, host, str(port), str(work / "cert")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def bucket_made() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"moto's S3 server exited: {log.read_text()[-500:]}")
            r = httpx.put(f"https://{host}:{port}/{BUCKET}", verify=False, timeout=2)
            return r.status_code == 200

        try:
            until(bucket_made, 30, 0.3, "moto's S3 server to start", ignore=(httpx.HTTPError,))
        except WaitTimeout as err:
            pytest.fail(f"{err}: {log.read_text()[-500:]}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def keys(host: str, port: int, prefix: str) -> list[str]:
    """Every object name under ``prefix`` in the bucket (path-style ListObjectsV2)."""
    import re

    r = httpx.get(
        f"https://{host}:{port}/{BUCKET}",
        params={"list-type": "2", "prefix": prefix, "max-keys": "1000"},
        verify=False,
        timeout=10,
    )
    r.raise_for_status()
    return re.findall(r"<Key>([^<]+)</Key>", r.text)
