"""Local backend: the HA Citus cluster as real processes on loopback addresses.

One etcd, and one Patroni process per member; each member has its own 127.0.x.y address
(so it looks like its own host in pg_dist_node), its own data directory under the state
directory, and runs as an unprivileged system user when started by root. Patroni's own
Citus support (its ``citus: {group, database}`` section) creates the extension, registers
worker leaders and secondaries in pg_dist_node and follows failovers; this module only
starts, stops and observes processes, and drains a group before it is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import yaml

from ..errors import ClusterError
from .citus_meta import (
    cleanup_orphans,
    drain_group,
    fetch_dist_nodes,
    fetch_node_shards,
    remove_group_nodes,
)
from .spec import ClusterSpec
from .topology import ClusterBackend, ClusterTopology, MemberStatus

STATE_ENV = "CITUS_PIPELINE_STATE_DIR"
Progress = Callable[[str, int, int], None]


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or Path.cwd() / ".citus-pipeline").resolve()


@dataclass(frozen=True)
class Member:
    group: int
    index: int
    name: str
    address: str
    pg_port: int
    api_port: int
    dir: Path

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.dir / "patroni.log"

    @property
    def pidfile(self) -> Path:
        return self.dir / "patroni.pid"

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{self.api_port}"


# ---------------------------------------------------------------------------------------
# small process helpers


def _pid_alive(pid: int, needle: str | None = None) -> bool:
    # A process started by this one (`up` inside a long-lived program: the Dagster asset,
    # the tests, a benchmark) stays a zombie until reaped, and a zombie answers kill(0).
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    if needle is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return needle in cmdline


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------


class LocalCluster(ClusterBackend):
    """The cluster of a :class:`ClusterSpec` as local processes under ``state_dir``."""

    name = "local"

    def __init__(self, spec: ClusterSpec, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir()
        self._run_as = self._service_user() if os.geteuid() == 0 else None

    # ---- layout ------------------------------------------------------------------------
    @property
    def etcd_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def client_passfile(self) -> Path:
        return self.state_dir / "pgpass"

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _exclusive(self, what: str, wait: float = 300) -> Iterator[None]:
        """One state-changing command at a time per state directory (up, down, add, remove)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as f:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"another command holds {self.state_dir / '.lock'} for longer than "
                            f"{wait:.0f} s; `{what}` did not run"
                        ) from None
                    time.sleep(0.2)
            yield

    def worker_groups(self) -> list[int]:
        """Worker groups of this cluster: the spec's, plus any added with add-worker."""
        return list(self._state().get("worker_groups") or self.spec.worker_groups)

    def groups(self) -> list[int]:
        return [0, *self.worker_groups()]

    def member(self, group: int, index: int) -> Member:
        name = self.spec.member_name(group, index)
        return Member(
            group=group,
            index=index,
            name=name,
            address=str(self.spec.member_address(group, index)),
            pg_port=self.spec.local.postgres_port,
            api_port=self.spec.local.restapi_port,
            dir=self.state_dir / "members" / name,
        )

    def members(self, groups: Iterable[int] | None = None) -> list[Member]:
        out = []
        for g in self.groups() if groups is None else groups:
            out += [self.member(g, i) for i in range(1, self.spec.members_in_group(g) + 1)]
        return out

    def member_by_name(self, name: str) -> Member:
        for m in self.members():
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.members())
        raise ClusterError(f"no member named {name!r} in this cluster (members: {known})")

    # ---- preflight -----------------------------------------------------------------------
    def _service_user(self) -> pwd.struct_passwd:
        user = self.spec.local.service_user
        try:
            return pwd.getpwnam(user)
        except KeyError:
            raise ClusterError(
                f"local.service_user {user!r} does not exist; PostgreSQL refuses to run as root "
                f"(install postgresql-15, which creates 'postgres', or name another user)"
            ) from None

    def pg_bin_dir(self) -> Path:
        if self.spec.local.pg_bin_dir:
            return self.spec.local.pg_bin_dir
        pg_config = os.environ.get("PG_CONFIG") or shutil.which("pg_config")
        if pg_config:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=False
            )
            if out.returncode == 0:
                return Path(out.stdout.strip())
        default = Path(f"/usr/lib/postgresql/{self.spec.postgresql.version}/bin")
        if default.exists():
            return default
        raise ClusterError(
            f"PostgreSQL {self.spec.postgresql.version} not found: install postgresql-"
            f"{self.spec.postgresql.version} (scripts/bootstrap.sh) or set PG_CONFIG=/path/to/pg_config"
        )

    def pg_lib_dir(self) -> Path:
        pg_config = self.pg_bin_dir() / "pg_config"
        cmd = str(pg_config) if pg_config.exists() else (os.environ.get("PG_CONFIG") or "pg_config")
        out = subprocess.run([cmd, "--pkglibdir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return Path(out.stdout.strip())
        return self.pg_bin_dir().parent / "lib"

    def preflight(self, members: list[Member], check_ports: bool = True) -> None:
        """Everything a user can get wrong, checked before any process starts."""
        bindir = self.pg_bin_dir()
        postgres = bindir / "postgres"
        if not postgres.exists():
            raise ClusterError(
                f"{postgres} is missing: install postgresql-{self.spec.postgresql.version}"
            )
        ver = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, check=False
        ).stdout
        want = f" {self.spec.postgresql.version}."
        if want not in ver:
            raise ClusterError(
                f"{postgres} is {ver.strip()!r}, the spec asks for PostgreSQL "
                f"{self.spec.postgresql.version} (set PG_CONFIG or local.pg_bin_dir)"
            )
        citus = self.pg_lib_dir() / "citus.so"
        if not citus.exists():
            raise ClusterError(
                f"the citus extension is missing: {citus} not found; install "
                f"postgresql-{self.spec.postgresql.version}-citus-13.2 from the Citus package "
                f"repository (scripts/bootstrap.sh) or set PG_CONFIG to a PostgreSQL that has it"
            )
        if not shutil.which("etcd"):
            raise ClusterError(
                "etcd not found on PATH: install Debian's etcd-server (scripts/bootstrap.sh)"
            )
        if self._run_as:
            for path in (
                Path(sys.executable).resolve(),
                Path(sys.base_prefix).resolve(),
                Path(__file__),
            ):
                self._check_reachable(path, "the Python environment that runs Patroni")
            self._check_reachable(self.state_dir, "the state directory")
        if check_ports:
            for m in members:
                for port, what in ((m.pg_port, "PostgreSQL"), (m.api_port, "Patroni REST API")):
                    if not _port_free(m.address, port):
                        raise ClusterError(
                            f"{m.address}:{port} ({what} of member {m.name}) is already in use by "
                            f"another process; stop it or change local.base_address/ports in the spec"
                        )

    def _check_reachable(self, path: Path, what: str) -> None:
        """The service user must be able to traverse every directory above ``path``."""
        for parent in [p for p in path.parents][::-1]:
            if not parent.exists():
                break
            st = parent.stat()
            if not st.st_mode & 0o001 and not (
                st.st_uid == self._run_as.pw_uid
                or (st.st_gid == self._run_as.pw_gid and st.st_mode & 0o010)
            ):
                raise ClusterError(
                    f"user {self._run_as.pw_name} cannot reach {what} {path}: directory {parent} "
                    f"is not searchable by it (chmod o+x {parent}; scripts/bootstrap.sh builds the "
                    f"environment on /usr/bin/python3; set {STATE_ENV} for the state directory)"
                )

    # ---- credentials ---------------------------------------------------------------------
    def credentials(self) -> dict[str, str]:
        c = self.spec.credentials
        if c.source == "env":
            missing = [
                v
                for v in (
                    c.superuser_password_env,
                    c.replication_password_env,
                    c.restapi_password_env,
                )
                if not os.environ.get(v)
            ]
            if missing:
                raise ClusterError(f"credentials.source is env but {', '.join(missing)} is not set")
            return {
                "superuser": os.environ[c.superuser_password_env],
                "replication": os.environ[c.replication_password_env],
                "restapi": os.environ[c.restapi_password_env],
            }
        path = self.state_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        creds = {k: secrets.token_urlsafe(24) for k in ("superuser", "replication", "restapi")}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        return creds

    def _write_private(self, path: Path, text: str, owner: pwd.struct_passwd | None) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if owner:
            os.chown(tmp, owner.pw_uid, owner.pw_gid)
        tmp.replace(path)

    def coordinator_dsn(self) -> str:
        """libpq conninfo for the coordinator leader; the password is in a passfile, not here."""
        coord = self.members([0])
        hosts = ",".join(m.address for m in coord)
        ports = ",".join(str(m.pg_port) for m in coord)
        return (
            f"host={hosts} port={ports} dbname={self.spec.database} "
            f"user={self.spec.credentials.superuser} passfile={self.client_passfile} "
            f"target_session_attrs=read-write connect_timeout=5"
        )

    def member_dsn(self, m: Member, dbname: str | None = None) -> str:
        return (
            f"host={m.address} port={m.pg_port} dbname={dbname or self.spec.database} "
            f"user={self.spec.credentials.superuser} passfile={self.client_passfile} connect_timeout=3"
        )

    # ---- configuration -----------------------------------------------------------------
    def patroni_config(self, m: Member, creds: dict[str, str]) -> dict:
        s = self.spec
        c = s.credentials
        return {
            "scope": s.name,
            "namespace": "/service/",
            "name": m.name,
            "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
            "restapi": {
                "listen": f"{m.address}:{m.api_port}",
                "connect_address": f"{m.address}:{m.api_port}",
                "authentication": {"username": c.restapi_user, "password": creds["restapi"]},
            },
            "etcd3": {"hosts": [f"{s.etcd_address}:{s.local.etcd_client_port}"]},
            "citus": {"group": m.group, "database": s.database},
            "bootstrap": {
                "dcs": s.patroni_dcs(
                    {**s.postgresql.parameters, "citus.shard_count": s.shard_count}
                ),
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            },
            "postgresql": {
                "listen": f"{m.address}:{m.pg_port}",
                "connect_address": f"{m.address}:{m.pg_port}",
                "data_dir": str(m.data_dir),
                "bin_dir": str(self.pg_bin_dir()),
                "pgpass": str(m.dir / "pgpass"),
                # replicas clone at once instead of waiting for a spread checkpoint (~2 min)
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": c.superuser, "password": creds["superuser"]},
                    "replication": {
                        "username": c.replication_user,
                        "password": creds["replication"],
                    },
                    "rewind": {"username": c.superuser, "password": creds["superuser"]},
                },
                "parameters": {
                    # every member shares the port on its own address: no shared unix socket
                    "unix_socket_directories": "",
                    "password_encryption": "scram-sha-256",
                    "cluster_name": m.name,
                },
                "pg_hba": [
                    f"host replication {c.replication_user} 127.0.0.0/8 scram-sha-256",
                    "host all all 127.0.0.0/8 scram-sha-256",
                ],
            },
            "tags": {
                "nofailover": False,
                "noloadbalance": False,
                "clonefrom": False,
                "nosync": False,
            },
        }

    # ---- etcd --------------------------------------------------------------------------
    @property
    def etcd_url(self) -> str:
        return f"http://{self.spec.etcd_address}:{self.spec.local.etcd_client_port}"

    def _etcd_pid(self) -> int | None:
        pid = _read_pid(self.etcd_dir / "etcd.pid")
        return pid if pid and _pid_alive(pid, str(self.etcd_dir)) else None

    def _etcd_healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.etcd_url}/health", timeout=1)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def _start_etcd(self) -> bool:
        if self._etcd_pid():
            return False
        s = self.spec
        if not _port_free(str(s.etcd_address), s.local.etcd_client_port):
            raise ClusterError(
                f"{s.etcd_address}:{s.local.etcd_client_port} (etcd) is already in use by another "
                f"process; stop it or change local.etcd_address/etcd_client_port"
            )
        self.etcd_dir.mkdir(parents=True, exist_ok=True)
        a, cp, pp = s.etcd_address, s.local.etcd_client_port, s.local.etcd_peer_port
        name = f"{s.name}-etcd"
        cmd = [
            "etcd",
            "--name",
            name,
            "--data-dir",
            str(self.etcd_dir / "data"),
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
        with open(self.etcd_dir / "etcd.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.etcd_dir,
            )
        (self.etcd_dir / "etcd.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(
                    f"etcd exited with code {proc.returncode}", self.etcd_dir / "etcd.log"
                )
            if self._etcd_healthy():
                return True
            time.sleep(0.2)
        raise ClusterError("etcd did not become healthy in 20 s", self.etcd_dir / "etcd.log")

    def _etcd_delete_prefix(self, prefix: str) -> None:
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        r = httpx.post(
            f"{self.etcd_url}/v3/kv/deleterange",
            json={"key": b64encode(key).decode(), "range_end": b64encode(end).decode()},
            timeout=5,
        )
        r.raise_for_status()

    # ---- Patroni members ---------------------------------------------------------------
    def member_pid(self, m: Member) -> int | None:
        pid = _read_pid(m.pidfile)
        return pid if pid and _pid_alive(pid, str(m.config)) else None

    def postmaster_pid(self, m: Member) -> int | None:
        pid = _read_pid(m.data_dir / "postmaster.pid")
        return pid if pid and _pid_alive(pid, str(m.data_dir)) else None

    def _start_member(self, m: Member, creds: dict[str, str]) -> bool:
        if self.member_pid(m):
            return False
        owner = self._run_as
        # explicit modes: under a restrictive umask the service user could not reach its config
        for d in (self.state_dir, m.dir.parent):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        m.dir.mkdir(exist_ok=True)
        os.chmod(m.dir, 0o700)
        if owner:
            os.chown(m.dir, owner.pw_uid, owner.pw_gid)
        self._write_private(
            m.config, yaml.safe_dump(self.patroni_config(m, creds), sort_keys=False), owner
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(m.dir),
            "PGPASSFILE": str(m.dir / "pgpass"),
        }
        kwargs: dict = {}
        if owner:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        with open(m.log, "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "patroni", str(m.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=m.dir,
                env=env,
                umask=0o077,
                **kwargs,
            )
        m.pidfile.write_text(str(proc.pid))
        return True

    def _signal_member(self, m: Member, sig: int) -> int | None:
        pid = self.member_pid(m)
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def _wait_gone(self, pids: dict[str, int], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {k: p for k, p in pids.items() if _pid_alive(p)}
            if not pids:
                return []
            time.sleep(0.1)
        return list(pids)

    # ---- observing ---------------------------------------------------------------------
    def _group_cluster(self, group: int) -> dict | None:
        """Patroni's /cluster view of one group, from the first member that answers."""
        for m in self.members([group]):
            try:
                r = httpx.get(f"{m.api_url}/cluster", timeout=1.5)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                continue
        return None

    def member_statuses(self) -> list[MemberStatus]:
        out: list[MemberStatus] = []
        for g in self.groups():
            view = self._group_cluster(g) or {"members": []}
            seen = {}
            for pm in view.get("members", []):
                seen[pm["name"]] = pm
            for m in self.members([g]):
                pm = seen.get(m.name)
                if pm is None:
                    state = "stopped" if not self.member_pid(m) else "starting"
                    out.append(
                        MemberStatus(
                            group=g,
                            name=m.name,
                            host=m.address,
                            port=m.pg_port,
                            role="unknown",
                            state=state,
                            api_url=m.api_url,
                        )
                    )
                    continue
                role = pm.get("role", "unknown")
                role = {
                    "standby_leader": "leader",
                    "sync_standby": "sync_standby",
                    "quorum_standby": "quorum_standby",
                }.get(role, role)
                if role not in ("leader", "sync_standby", "quorum_standby", "replica"):
                    role = "unknown"
                lag = pm.get("lag")
                out.append(
                    MemberStatus(
                        group=g,
                        name=m.name,
                        host=pm.get("host", m.address),
                        port=int(pm.get("port", m.pg_port)),
                        role=role,
                        state=pm.get("state", "unknown"),
                        timeline=pm.get("timeline"),
                        lag_mb=round(lag / 1048576, 1) if isinstance(lag, int) else None,
                        api_url=m.api_url,
                    )
                )
        return out

    def _coordinator_conn(self, timeout: int = 5) -> psycopg.Connection:
        return psycopg.connect(
            self.coordinator_dsn().replace("connect_timeout=5", f"connect_timeout={timeout}"),
            autocommit=True,
        )

    def status(self, with_shards: bool = True) -> ClusterTopology:
        if not self.state_dir.exists() or not self._state():
            raise ClusterError(
                f"no local cluster in {self.state_dir}: run `citus-pipeline cluster up`"
            )
        members = self.member_statuses()
        topo = ClusterTopology(
            scope=self.spec.name,
            database=self.spec.database,
            backend="local",
            members=members,
            coordinator_dsn=self.coordinator_dsn(),
        )
        if topo.leader(0) is None:
            return topo
        try:
            with self._coordinator_conn(3) as conn:
                topo.dist_nodes = fetch_dist_nodes(conn)
                if with_shards:
                    try:
                        topo.shards = fetch_node_shards(conn)
                    except psycopg.Error:
                        topo.shards = []
        except psycopg.Error:
            pass
        return topo

    def is_running(self) -> bool:
        return bool(self._etcd_pid()) or any(self.member_pid(m) for m in self.members())

    def _readiness(self, groups: list[int]) -> list[str]:
        """What still keeps the cluster from being ready (empty list: ready)."""
        waiting: list[str] = []
        members = [m for m in self.member_statuses() if m.group in groups]
        for g in groups:
            gm = [m for m in members if m.group == g]
            leader = next((m for m in gm if m.role == "leader" and m.state == "running"), None)
            if leader is None:
                waiting.append(f"group {g}: no running leader")
                continue
            sync = ("sync_standby", "quorum_standby")
            if (
                len(gm) > 1
                and self.spec.patroni.synchronous_mode
                and not any(m.role in sync and m.state == "streaming" for m in gm)
            ):
                waiting.append(f"group {g}: no streaming synchronous standby")
            for m in gm:
                if m is not leader and m.state != "streaming":
                    waiting.append(f"group {g}: {m.name} is {m.state}")
        worker_groups = [g for g in groups if g > 0]
        if not worker_groups:
            return waiting
        try:
            with self._coordinator_conn(2) as conn:
                nodes = fetch_dist_nodes(conn)
        except psycopg.Error as err:
            return [*waiting, f"coordinator not answering: {str(err).strip().splitlines()[0]}"]
        for g in worker_groups:
            leader = next((m for m in members if m.group == g and m.role == "leader"), None)
            if leader is None:
                continue
            if not any(
                n.groupid == g
                and n.role == "primary"
                and n.active
                and (n.host, n.port) == (leader.host, leader.port)
                for n in nodes
            ):
                waiting.append(f"group {g}: leader {leader.name} not yet in pg_dist_node")
        return waiting

    def wait_ready(
        self, groups: list[int], timeout: float, progress: Progress | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        total = len(groups) * 3
        waiting = ["starting"]
        while time.monotonic() < deadline:
            self._check_members_alive(groups)
            waiting = self._readiness(groups)
            if progress:
                progress(
                    waiting[0] if waiting else "ready", total - min(len(waiting), total), total
                )
            if not waiting:
                return
            time.sleep(0.5)
        first = waiting[0]
        g = int(first.split()[1].rstrip(":")) if first.startswith("group ") else 0
        raise ClusterError(
            f"cluster not ready after {timeout:.0f} s: {first}", self.member(g, 1).log
        )

    def _check_members_alive(self, groups: list[int]) -> None:
        stopped = self._state().get("stopped", {})  # members stopped on purpose (fault drills)
        for m in self.members(groups):
            if m.pidfile.exists() and not self.member_pid(m) and not stopped.get(m.name):
                raise ClusterError(f"Patroni of member {m.name} exited: {_tail(m.log, 1)}", m.log)

    # ---- lifecycle ---------------------------------------------------------------------
    def _check_same_topology(self) -> None:
        state = self._state()
        recorded = state.get("spec")
        if not recorded:
            return
        current = self.spec.model_dump(
            mode="json", include={"name", "database", "coordinator", "workers", "local"}
        )
        for key in current:
            if recorded.get(key) != current[key]:
                raise ClusterError(
                    f"{self.state_dir} holds a cluster made from a different spec (field {key!r} "
                    f"changed); run `citus-pipeline cluster down --purge` first or set {STATE_ENV}"
                )

    def up(self, progress: Progress | None = None, timeout: float = 240) -> ClusterTopology:
        self.preflight([], check_ports=False)  # before the lock creates the state directory
        with self._exclusive("up"):
            return self._up_locked(progress, timeout)

    def _up_locked(self, progress: Progress | None = None, timeout: float = 240) -> ClusterTopology:
        self._check_same_topology()
        members = self.members()
        not_running = [m for m in members if not self.member_pid(m)]
        self.preflight(not_running, check_ports=True)
        creds = self.credentials()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            os.chmod(self.state_dir, 0o755)
        state = self._state()
        state.setdefault("worker_groups", self.spec.worker_groups)
        state["spec"] = self.spec.model_dump(
            mode="json", include={"name", "database", "coordinator", "workers", "local"}
        )
        state["stopped"] = {}
        self._save_state(state)
        self._write_private(
            self.client_passfile,
            f"*:*:*:{self.spec.credentials.superuser}:{creds['superuser']}\n",
            None,
        )
        started_etcd = False
        started: list[Member] = []
        try:
            if progress:
                progress("starting etcd", 0, 1)
            started_etcd = self._start_etcd()
            # coordinator first: its Patroni registers the workers as they come up
            for m in members:
                if self._start_member(m, creds):
                    started.append(m)
            if state.get("paused"):
                self._resume_groups(state["paused"])
                state["paused"] = []
                self._save_state(state)
            self.wait_ready(self.groups(), timeout, progress)
        except BaseException:
            self._stop_members(started, timeout=10)
            if started_etcd:
                self._stop_etcd()
            raise
        return self.status()

    def _stop_members(self, members: list[Member], timeout: float = 20) -> None:
        pids = {m.name: p for m in members if (p := self._signal_member(m, signal.SIGTERM))}
        by_name = {m.name: m for m in members}
        for name in self._wait_gone(pids, timeout):
            self._signal_member(by_name[name], signal.SIGKILL)
        # postmasters left behind (a killed or paused Patroni leaves PostgreSQL running)
        self._stop_postmasters(members)

    def _stop_postmasters(self, members: list[Member], timeout: float = 15) -> None:
        """Fast shutdown (SIGINT) of every listed postmaster at once; SIGKILL what lingers."""
        pids = {m.name: p for m in members if (p := self.postmaster_pid(m))}
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for name in self._wait_gone(pids, timeout):
            try:
                os.kill(pids[name], signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _pause_groups(self, timeout: float = 5) -> list[int]:
        """Patroni maintenance mode for every group that answers; returns the paused groups.

        A paused Patroni exits on SIGTERM without demoting or handing over, so `down` can stop
        all PostgreSQL servers at once instead of waiting for each leader's graceful handover.
        """
        paused = []
        auth = (self.spec.credentials.restapi_user, self.credentials()["restapi"])
        for g in self.groups():
            for m in self.members([g]):
                if not self.member_pid(m):
                    continue
                try:
                    r = httpx.patch(
                        f"{m.api_url}/config", json={"pause": True}, auth=auth, timeout=2
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    paused.append(g)
                    break
        deadline = time.monotonic() + timeout
        pending = [m for m in self.members(paused) if self.member_pid(m)]
        while pending and time.monotonic() < deadline:
            still = []
            for m in pending:
                try:
                    if not httpx.get(f"{m.api_url}/patroni", timeout=1).json().get("pause"):
                        still.append(m)
                except (httpx.HTTPError, ValueError):
                    still.append(m)
            pending = still
            if pending:
                time.sleep(0.1)
        return paused

    def _resume_groups(self, groups: list[int], timeout: float = 60) -> None:
        """Leave maintenance mode (set by `down`) as soon as each group's REST API answers."""
        auth = (self.spec.credentials.restapi_user, self.credentials()["restapi"])
        deadline = time.monotonic() + timeout
        todo = list(groups)
        while todo and time.monotonic() < deadline:
            for g in list(todo):
                for m in self.members([g]):
                    try:
                        r = httpx.patch(
                            f"{m.api_url}/config", json={"pause": False}, auth=auth, timeout=2
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200:
                        todo.remove(g)
                        break
            if todo:
                time.sleep(0.2)
        if todo:
            raise ClusterError(
                f"could not resume groups {todo} from maintenance mode", self.member(todo[0], 1).log
            )

    def _stop_etcd(self) -> None:
        pid = self._etcd_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            if self._wait_gone({"etcd": pid}, 5):
                os.kill(pid, signal.SIGKILL)

    def down(self, purge: bool = False) -> None:
        with self._exclusive("down"):
            return self._down_locked(purge)

    def _down_locked(self, purge: bool = False) -> None:
        members = self.members()
        if any(self.member_pid(m) for m in members):
            paused = self._pause_groups()
            state = self._state()
            if state:
                state["paused"] = sorted(set(state.get("paused", [])) | set(paused))
                self._save_state(state)
        self._stop_members(members, timeout=12)
        self._stop_etcd()
        if purge:
            self.purge()

    # what `down --purge` deletes: only what this cluster wrote (other tools keep their own
    # files, even other clusters' state directories, under the same directory)
    OWNED = ("members", "etcd", "cluster.json", "secrets.json", "pgpass", ".lock")

    def purge(self) -> None:
        for name in self.OWNED:
            path = self.state_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if self.state_dir.exists() and not any(self.state_dir.iterdir()):
            self.state_dir.rmdir()

    # ---- fault drills ------------------------------------------------------------------
    def stop_member(self, name: str, kill: bool = False) -> None:
        """Stop one member: gracefully (Patroni stops PostgreSQL) or, with kill, SIGKILL both."""
        m = self.member_by_name(name)
        state = self._state()
        state.setdefault("stopped", {})[m.name] = True
        self._save_state(state)
        if kill:
            pm = self.postmaster_pid(m)
            self._signal_member(m, signal.SIGKILL)
            if pm:
                os.kill(pm, signal.SIGKILL)
        else:
            self._stop_members([m], timeout=30)

    def start_member(self, name: str, wait: float = 120, progress: Progress | None = None) -> None:
        m = self.member_by_name(name)
        state = self._state()
        state.setdefault("stopped", {}).pop(m.name, None)
        self._save_state(state)
        self.preflight([m], check_ports=not self.member_pid(m))
        self._start_member(m, self.credentials())
        self.wait_ready([m.group], wait, progress)

    def kill_postmaster(self, name: str) -> int:
        """SIGKILL one member's postmaster (Patroni stays up and reacts). Returns the pid."""
        m = self.member_by_name(name)
        pid = self.postmaster_pid(m)
        if not pid:
            raise ClusterError(f"member {name} has no running postmaster")
        os.kill(pid, signal.SIGKILL)
        return pid

    def _rest(self, method: str, m: MemberStatus, path: str, body: dict) -> httpx.Response:
        creds = self.credentials()
        return httpx.request(
            method,
            f"{m.api_url}{path}",
            json=body,
            timeout=60,
            auth=(self.spec.credentials.restapi_user, creds["restapi"]),
        )

    def _change_leader(self, action: str, group: int, candidate: str | None, timeout: float) -> str:
        topo = self.status(with_shards=False)
        leader = topo.leader(group)
        if leader is None:
            raise ClusterError(f"group {group} has no leader to {action} from")
        standbys = [
            m for m in topo.members_of(group) if m.role != "leader" and m.state == "streaming"
        ]
        if candidate is None:
            pref = [m for m in standbys if m.role in ("sync_standby", "quorum_standby")] or standbys
            if not pref:
                raise ClusterError(f"group {group} has no streaming standby to take over")
            candidate = pref[0].name
        body = {"candidate": candidate}
        if action == "switchover":
            body["leader"] = leader.name
        r = self._rest("POST", leader, f"/{action}", body)
        if r.status_code not in (200, 202):
            raise ClusterError(
                f"{action} of group {group} refused by Patroni: {r.text.strip()}",
                self.member(group, 1).log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.status(with_shards=False).leader(group)
            if new and new.name == candidate and new.state == "running":
                self.wait_ready([group], max(5.0, deadline - time.monotonic()))
                return candidate
            time.sleep(0.5)
        raise ClusterError(
            f"{action} of group {group} to {candidate} did not finish in {timeout:.0f} s",
            self.member_by_name(candidate).log,
        )

    def switchover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._change_leader("switchover", group, candidate, timeout)

    def failover(self, group: int, candidate: str | None = None, timeout: float = 120) -> str:
        return self._change_leader("failover", group, candidate, timeout)

    # ---- scale out / in ----------------------------------------------------------------
    def add_worker(self, progress: Progress | None = None, timeout: float = 180) -> int:
        with self._exclusive("add-worker"):
            return self._add_worker_locked(progress, timeout)

    def _add_worker_locked(self, progress: Progress | None = None, timeout: float = 180) -> int:
        if self.status(with_shards=False).leader(0) is None:
            raise ClusterError("the coordinator has no leader: is the cluster up?")
        groups = self.worker_groups()
        group = max(groups, default=0) + 1
        new = self.members([group])
        self.preflight(new, check_ports=True)
        state = self._state()
        state["worker_groups"] = [*groups, group]
        self._save_state(state)
        creds = self.credentials()
        try:
            for m in new:
                self._start_member(m, creds)
            self.wait_ready([group], timeout, progress)
        except BaseException:
            self._stop_members(new, timeout=10)
            state = self._state()
            state["worker_groups"] = groups
            self._save_state(state)
            for m in new:
                shutil.rmtree(m.dir, ignore_errors=True)
            raise
        return group

    def remove_worker(self, group: int, transfer_mode: str = "block_writes") -> int:
        with self._exclusive("remove-worker"):
            return self._remove_worker_locked(group, transfer_mode)

    def _remove_worker_locked(self, group: int, transfer_mode: str = "block_writes") -> int:
        """Drain ``group`` with citus_drain_node, then stop and forget it. Refuses on a failed drain."""
        groups = self.worker_groups()
        if group not in groups:
            raise ClusterError(
                f"group {group} is not a worker group of this cluster (workers: {groups})"
            )
        if len(groups) == 1:
            raise ClusterError(f"refusing to remove group {group}: it is the last worker group")
        with self._coordinator_conn() as conn:
            moved = drain_group(conn, group, transfer_mode)  # raises DrainError: nothing removed
            cleanup_orphans(conn)
            members = self.members([group])
            # Patroni goes first, by SIGKILL: a graceful stop of a worker leader makes the
            # coordinator's Patroni hold pg_dist_node for a promotion that never comes.
            pids = {m.name: p for m in members if (p := self._signal_member(m, signal.SIGKILL))}
            self._wait_gone(pids, 10)
            self._etcd_delete_prefix(f"/service/{self.spec.name}/{group}/")
            remove_group_nodes(conn, group)
            self._stop_members(members)  # the now unmanaged postmasters
        state = self._state()
        state["worker_groups"] = [g for g in groups if g != group]
        self._save_state(state)
        for m in members:
            shutil.rmtree(m.dir, ignore_errors=True)
        return moved


__all__ = ["STATE_ENV", "ClusterError", "LocalCluster", "Member", "default_state_dir"]
