"""A throwaway PostgreSQL (no Patroni, no Citus) for tests that need a database to exist, not
a cluster: run as the machine's `postgres` user under a temporary directory, stopped and
removed on exit. Skips the test, with the reason, where it cannot start."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def pg_bindir() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip()) if out.returncode == 0 else Path("/usr/lib/postgresql/15/bin")


@dataclass
class PlainPostgres:
    base: Path
    port: int

    def dsn(self, host: str = "127.0.0.1", user: str = "postgres", dbname: str = "postgres") -> str:
        return f"host={host} port={self.port} user={user} dbname={dbname} connect_timeout=3"


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess:
    pre = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*pre, *cmd], capture_output=True, text=True, timeout=120, check=False)


@contextmanager
def plain_postgres(
    port: int,
    listen: str = "127.0.0.1",
    *,
    settings: dict[str, str] | None = None,
    hba: list[str] | None = None,
    files: dict[str, bytes] | None = None,
) -> Iterator[PlainPostgres]:
    """PostgreSQL on ``listen:port``. ``hba`` lines go before the trust-on-loopback default;
    ``files`` (name -> content, e.g. a server certificate) are written into the data directory
    for ``settings`` to name."""
    bindir = pg_bindir()
    if not (bindir / "initdb").exists():
        pytest.skip(f"no initdb in {bindir}")
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' user to run a throwaway PostgreSQL")
    base = Path(tempfile.mkdtemp(prefix="plain-pg-", dir="/tmp"))
    os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    try:
        r = _as_postgres(
            str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        assert r.returncode == 0, r.stderr
        for name, content in (files or {}).items():
            path = data / name
            path.write_bytes(content)
            path.chmod(0o600)  # PostgreSQL refuses a key others can read
            os.chown(path, user.pw_uid, user.pw_gid)
        if hba:
            conf = data / "pg_hba.conf"
            conf.write_text("\n".join(hba) + "\n" + conf.read_text())
        opts = {
            "listen_addresses": listen,
            "port": str(port),
            "unix_socket_directories": str(base),
            **(settings or {}),
        }
        r = _as_postgres(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "start",
            "-o",
            " ".join(f"-c {k}={v}" for k, v in opts.items()),
        )
        if r.returncode != 0:
            log = (base / "log").read_text() if (base / "log").exists() else ""
            pytest.skip(f"could not start PostgreSQL on {listen}:{port}: {(r.stderr + log)[-300:]}")
        try:
            yield PlainPostgres(base, port)
        finally:
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
