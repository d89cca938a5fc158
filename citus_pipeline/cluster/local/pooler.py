"""The pooler of a local cluster (``pooler:``): PgBouncer in front of the coordinator's
leader, which it reaches through HAProxy.

HAProxy is how Patroni's own documentation routes clients to a leader: it asks every
coordinator member's REST API ``GET /primary`` each second (200 on the leader only) and sends
connections to the one that answers 200; when a member stops being the leader its sessions are
cut (``on-marked-down shutdown-sessions``), so a write never reaches a standby. HAProxy's
address is the leader endpoint, the local counterpart of the leader Service on Kubernetes;
PgBouncer's server side connects there with ``verify-full`` (the coordinator members'
certificates name the endpoint too).

PgBouncer pools in transaction mode by default: many clients share few server connections,
so 1,000 clients fit under the coordinator's ``max_connections``. It authenticates clients
with SCRAM against the superuser's password (its auth file, mode 0600, the service user's)
and logs in to PostgreSQL with SCRAM likewise. Both run as the service user, in the host's
network namespace (on the bridge with ``local.network: netns``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess

import psycopg

from ...errors import ClusterError, WaitTimeout
from ...waiting import until
from ..pooler_ini import PoolerPlace, pgbouncer_ini
from .credentials import pooler_dsn, write_private
from .layout import Layout, Member
from .processes import Daemon, stop_all

HEALTH_INTERVAL_MS = 1000


class Pooler:
    def __init__(self, layout: Layout, owner: pwd.struct_passwd | None) -> None:
        self.layout = layout
        self.spec = layout.spec
        self.owner = owner
        self.dir = layout.pooler_dir

    @property
    def enabled(self) -> bool:
        return self.spec.pooler.enabled

    def _daemon(self, name: str, config: str) -> Daemon:
        return Daemon(
            name, self.dir / f"{name}.pid", str(self.dir / config), self.dir / f"{name}.log"
        )

    @property
    def haproxy(self) -> Daemon:
        return self._daemon("haproxy", "haproxy.cfg")

    @property
    def pgbouncer(self) -> Daemon:
        return self._daemon("pgbouncer", "pgbouncer.ini")

    def pids(self) -> list[int]:
        return [p for d in (self.haproxy, self.pgbouncer) if (p := d.pid())]

    # ---- configuration ----------------------------------------------------------------
    def haproxy_config(self, coordinators: list[Member]) -> str:
        s = self.spec
        ca = self.layout.ca_file
        check = f"check-ssl verify required ca-file {ca}" if ca else ""
        servers = "\n".join(
            f"    server {m.name} {m.address}:{m.pg_port} check port {m.api_port} {check}".rstrip()
            for m in coordinators
        )
        return f"""# written by citus-pipeline at every `cluster up`: edits are overwritten
global
    log stdout format raw local0 notice
    maxconn {4 * s.pooler.max_client_conn}

defaults
    log global
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 2s

listen coordinator-leader
    bind {s.leader_endpoint_address}:{s.local.postgres_port}
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    default-server inter {HEALTH_INTERVAL_MS} fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""

    def pgbouncer_config(self) -> str:
        s = self.spec
        crt, key = self.layout.pooler_tls
        place = PoolerPlace(
            listen_addr=s.pooler_address,
            server_host=s.leader_endpoint_address,
            server_port=s.local.postgres_port,
            auth_file=str(self.dir / "userlist.txt"),
            ca_file=str(self.layout.ca_file) if self.layout.ca_file else None,
            cert_file=str(crt),
            key_file=str(key),
        )
        return pgbouncer_ini(
            s, place, "written by citus-pipeline at every `cluster up`: edits are overwritten"
        )

    def write_config(self, coordinators: list[Member], superuser_password: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        user = self.spec.credentials.superuser
        write_private(self.dir / "userlist.txt", f'"{user}" "{superuser_password}"\n', self.owner)
        write_private(self.dir / "haproxy.cfg", self.haproxy_config(coordinators), self.owner)
        write_private(self.dir / "pgbouncer.ini", self.pgbouncer_config(), self.owner)

    # ---- processes --------------------------------------------------------------------
    def start(
        self, coordinators: list[Member], superuser_password: str, timeout: float = 30
    ) -> None:
        """Write the configs and start what does not run (what runs reloads them), then
        wait until a query through PgBouncer reaches the leader."""
        if not self.enabled:
            return
        for tool in ("haproxy", "pgbouncer"):
            if not shutil.which(tool):
                raise ClusterError(
                    f"pooler.enabled but {tool} is not installed: apt-get install {tool} "
                    "(scripts/bootstrap.sh does), or set pooler.enabled: false"
                )
        self.write_config(coordinators, superuser_password)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        started: list[tuple[Daemon, subprocess.Popen]] = []
        for daemon, argv, reload in (
            # master-worker mode: SIGUSR2 reloads the configuration without a restart
            (
                self.haproxy,
                ["haproxy", "-W", "-db", "-f", str(self.dir / "haproxy.cfg")],
                signal.SIGUSR2,
            ),
            (self.pgbouncer, ["pgbouncer", str(self.dir / "pgbouncer.ini")], signal.SIGHUP),
        ):
            if daemon.pid():
                daemon.send_signal(reload)
            else:
                started.append(
                    (daemon, daemon.spawn(argv, cwd=self.dir, env=env, owner=self.owner))
                )
        dsn = pooler_dsn(self.layout)

        def answered() -> bool:
            for daemon, proc in started:
                if proc.poll() is not None:
                    raise ClusterError(
                        f"{daemon.name} exited with code {proc.returncode}", daemon.log
                    )
            with psycopg.connect(dsn, connect_timeout=3, prepare_threshold=None) as conn:
                return conn.execute("SELECT NOT pg_is_in_recovery()").fetchone() == (True,)

        try:
            until(
                answered,
                timeout,
                0.3,
                "the pooler to reach the coordinator's leader",
                ignore=(psycopg.Error,),
            )
        except WaitTimeout as err:
            err.log = self.pgbouncer.log
            self.stop()
            raise
        except ClusterError:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        stop_all([self.pgbouncer, self.haproxy], timeout)


__all__ = ["Pooler"]
