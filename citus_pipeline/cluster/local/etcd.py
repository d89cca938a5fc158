"""The one etcd of a local cluster: Patroni's DCS, started, probed and stopped as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from base64 import b64encode
from pathlib import Path

import httpx

from ...errors import ClusterError
from .layout import Layout
from .processes import pid_alive, port_free, read_pid, wait_gone


class Etcd:
    """A single-node etcd on the spec's etcd address, its data and log under the state dir."""

    def __init__(self, layout: Layout) -> None:
        self.spec = layout.spec
        self.dir = layout.etcd_dir

    @property
    def url(self) -> str:
        return f"http://{self.spec.etcd_address}:{self.spec.local.etcd_client_port}"

    @property
    def log(self) -> Path:
        return self.dir / "etcd.log"

    def pid(self) -> int | None:
        pid = read_pid(self.dir / "etcd.pid")
        return pid if pid and pid_alive(pid, str(self.dir)) else None

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.url}/health", timeout=1)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def start(self) -> bool:
        """Start etcd unless it runs; returns whether this call started it."""
        if self.pid():
            return False
        s = self.spec
        if not port_free(str(s.etcd_address), s.local.etcd_client_port):
            raise ClusterError(
                f"{s.etcd_address}:{s.local.etcd_client_port} (etcd) is already in use by another "
                f"process; stop it or change local.etcd_address/etcd_client_port"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        a, cp, pp = s.etcd_address, s.local.etcd_client_port, s.local.etcd_peer_port
        name = f"{s.name}-etcd"
        cmd = [
            "etcd",
            "--name",
            name,
            "--data-dir",
            str(self.dir / "data"),
            "--listen-client-urls",
            f"http://{a}:{cp}",
            "--advertise-client-urls",
            f"http://{a}:{cp}",
            "--listen-peer-urls",
            f"http://{a}:{pp}",
            "--initial-advertise-peer-urls",
            f"http://{a}:{pp}",
            "--initial-cluster",
            f"{name}=http://{a}:{pp}",
            "--initial-cluster-state",
            "new",
            "--auto-compaction-retention",
            "1",
            "--quota-backend-bytes",
            str(1 << 30),
            "--enable-v2=false",
            "--log-level",
            "warn",
        ]
        with open(self.log, "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        (self.dir / "etcd.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"etcd exited with code {proc.returncode}", self.log)
            if self.healthy():
                return True
            time.sleep(0.2)
        raise ClusterError("etcd did not become healthy in 20 s", self.log)

    def stop(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            if wait_gone({"etcd": pid}, 5):
                os.kill(pid, signal.SIGKILL)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (v3 API over HTTP: a removed group's Patroni keys)."""
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        r = httpx.post(
            f"{self.url}/v3/kv/deleterange",
            json={"key": b64encode(key).decode(), "range_end": b64encode(end).decode()},
            timeout=5,
        )
        r.raise_for_status()


__all__ = ["Etcd"]
