"""The one etcd of a local cluster: Patroni's DCS, started, probed and stopped as a process.

Its authentication is on: without it any local process could rewrite the leader keys. Two
users: ``root``, which etcd requires before authentication can be enabled and which only
administers, and Patroni's user (``credentials.etcd_user``), whose role may read and write
Patroni's namespace and nothing else. Both passwords live in the state directory's
secrets.json (mode 0600).
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

import httpx

from ...errors import ClusterError
from .layout import Layout
from .processes import Daemon, port_free

DCS_NAMESPACE = "/service/"  # Patroni's keys: /service/<scope>/<citus group>/...
PATRONI_ROLE = "patroni-namespace"


def _b64(text: str | bytes) -> str:
    return b64encode(text.encode() if isinstance(text, str) else text).decode()


def _prefix_end(prefix: str) -> bytes:
    """The range end that makes ``prefix`` a prefix range (etcd's convention)."""
    key = prefix.encode()
    return key[:-1] + bytes([key[-1] + 1])


class Etcd:
    """A single-node etcd on the spec's etcd address, its data and log under the state dir.

    ``credentials`` returns the cluster's passwords (keys ``etcd`` and ``etcd_root``); it is
    called only when etcd is talked to, so a missing password fails that call."""

    def __init__(self, layout: Layout, credentials: Callable[[], dict[str, str]]) -> None:
        self.spec = layout.spec
        self.dir = layout.etcd_dir
        self.credentials = credentials
        # its command line names its data directory, under this one
        self.process = Daemon("etcd", layout.etcd_pidfile, str(self.dir), self.log)

    @property
    def url(self) -> str:
        return f"http://{self.spec.etcd_address}:{self.spec.local.etcd_client_port}"

    @property
    def log(self) -> Path:
        return self.dir / "etcd.log"

    def pid(self) -> int | None:
        return self.process.pid()

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
        proc = self.process.spawn(cmd, cwd=self.dir)
        self.process.await_ready(proc, self.healthy, 20, "etcd to become healthy")
        return True

    def stop(self) -> None:
        self.process.stop(5)

    def _call(self, path: str, body: dict, token: str | None = None) -> dict:
        """One v3 API call over HTTP; a ClusterError with etcd's own message if refused."""
        headers = {"Authorization": token} if token else {}
        try:
            r = httpx.post(f"{self.url}/v3/{path}", json=body, headers=headers, timeout=5)
        except httpx.HTTPError as err:
            raise ClusterError(f"etcd at {self.url} did not answer /v3/{path}: {err}") from err
        data = r.json() if r.content else {}
        if r.status_code != 200:
            raise ClusterError(
                f"etcd refused /v3/{path}: {data.get('error') or data.get('message') or r.text}",
                self.log,
            )
        return data

    def token(self, user: str, password: str) -> str | None:
        """An auth token for ``user``; None while etcd's authentication is off."""
        try:
            return self._call("auth/authenticate", {"name": user, "password": password})["token"]
        except ClusterError as err:
            if "authentication is not enabled" in str(err):
                return None
            raise

    def auth_enabled(self) -> bool:
        return self.token("root", self.credentials()["etcd_root"]) is not None

    def enable_auth(self) -> None:
        """Create root and Patroni's user and role, then turn authentication on. Call only
        while no Patroni runs without credentials (it would lose the DCS); idempotent."""
        if self.auth_enabled():
            return
        creds, user = self.credentials(), self.spec.credentials.etcd_user

        def ensure(path: str, body: dict) -> None:
            try:
                self._call(path, body)
            except ClusterError as err:
                if "already" not in str(err):  # an earlier, interrupted call made it
                    raise

        ensure("auth/role/add", {"name": "root"})
        ensure("auth/user/add", {"name": "root", "password": creds["etcd_root"]})
        ensure("auth/user/grant", {"user": "root", "role": "root"})
        ensure("auth/role/add", {"name": PATRONI_ROLE})
        self._call(
            "auth/role/grant",
            {
                "name": PATRONI_ROLE,
                "perm": {
                    "permType": "READWRITE",
                    "key": _b64(DCS_NAMESPACE),
                    "range_end": _b64(_prefix_end(DCS_NAMESPACE)),
                },
            },
        )
        ensure("auth/user/add", {"name": user, "password": creds["etcd"]})
        ensure("auth/user/grant", {"user": user, "role": PATRONI_ROLE})
        self._call("auth/enable", {})

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (a removed group's Patroni keys), as Patroni's user."""
        token = self.token(self.spec.credentials.etcd_user, self.credentials()["etcd"])
        self._call(
            "kv/deleterange", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}, token
        )


__all__ = ["DCS_NAMESPACE", "Etcd"]
