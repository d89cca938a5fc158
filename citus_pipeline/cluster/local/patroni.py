"""Patroni on a local member: its configuration, its process, and the REST calls we make to it.

Patroni's own Citus support (its ``citus: {group, database}`` section) creates the extension,
registers worker leaders and secondaries in pg_dist_node and follows failovers; this module
only says where each member listens and starts the process.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import yaml

from ...errors import ClusterError, WaitTimeout
from ...pki import client_context
from ...waiting import until
from ..spec import REPLICA_BASEBACKUP_OPTIONS, ClusterSpec, with_tcp_timeouts
from ..topology import MemberStatus
from . import processes
from .credentials import write_private
from .etcd import DCS_NAMESPACE
from .layout import Layout, Member
from .netns import PREFIX_LEN, MemberNetwork
from .processes import member_pid


def patroni_config(
    spec: ClusterSpec,
    m: Member,
    creds: dict[str, str],
    bin_dir: Path,
    archive: dict[str, str] | None = None,
) -> dict:
    """Member ``m``'s patroni.yml. ``archive`` holds pgBackRest's commands (LocalBackups):
    restore_command, and where they apply archive_command (WAL archiving on),
    replica_command (new standbys from the repository) and restore_bootstrap (``restore``)."""
    s = spec
    c = s.credentials
    config = {
        "scope": s.name,
        "namespace": DCS_NAMESPACE,
        "name": m.name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {
            "listen": f"{m.address}:{m.api_port}",
            "connect_address": f"{m.address}:{m.api_port}",
            "authentication": {"username": c.restapi_user, "password": creds["restapi"]},
        },
        "etcd3": {
            "hosts": [f"{s.etcd_address}:{s.local.etcd_client_port}"],
            "username": c.etcd_user,
            "password": creds["etcd"],
        },
        "citus": {"group": m.group, "database": s.database},
        "bootstrap": {
            "dcs": s.patroni_dcs(_parameters(s)),
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{m.address}:{m.pg_port}",
            "connect_address": f"{m.address}:{m.pg_port}",
            "data_dir": str(m.data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(m.pgpass),
            # Patroni's own connections go through the member's socket: the trust rules of a
            # custom bootstrap (`cluster restore`) name the socket and the listen address, and
            # a TCP client here leaves from 127.0.0.1, not from the member's address
            "use_unix_socket": True,
            "basebackup": list(REPLICA_BASEBACKUP_OPTIONS),
            "authentication": {
                "superuser": {"username": c.superuser, "password": creds["superuser"]},
                "replication": {
                    "username": c.replication_user,
                    "password": creds["replication"],
                },
                "rewind": {"username": c.superuser, "password": creds["superuser"]},
            },
            "parameters": {
                # every member shares the port on its own address: each has its own socket
                # directory (pgBackRest reaches a database through a socket only)
                "unix_socket_directories": str(m.socket_dir),
                "password_encryption": "scram-sha-256",
                "cluster_name": m.name,
                NODE_CONNINFO: node_conninfo(s, m.ca_file),
            },
            "pg_hba": [f"local all {c.superuser} scram-sha-256"]
            + [
                rule
                for net in _client_networks(s)
                for rule in (
                    f"host replication {c.replication_user} {net} scram-sha-256",
                    f"host all all {net} scram-sha-256",
                )
            ],
        },
        "tags": {
            "nofailover": False,
            "noloadbalance": False,
            "clonefrom": False,
            "nosync": False,
        },
    }
    if m.ca_file:
        _with_tls(config, m)
    if archive:
        pg = config["postgresql"]
        if "archive_command" in archive:
            pg["parameters"].update(
                {
                    "archive_mode": "on",
                    "archive_command": archive["archive_command"],
                    "archive_timeout": s.backup.archive_timeout,
                }
            )
        pg["recovery_conf"] = {"restore_command": archive["restore_command"]}
        if "replica_command" in archive:
            # a new standby restores the latest backup and replays the archive, so cloning
            # does not load the leader; without a usable backup it falls back to pg_basebackup
            pg["create_replica_methods"] = ["pgbackrest", "basebackup"]
            pg["pgbackrest"] = {
                "command": archive["replica_command"],
                "keep_data": True,
                "no_params": True,
            }
        if "restore_bootstrap" in archive:
            # `cluster restore`: this member bootstraps its group from the repository; the
            # pgBackRest command writes the recovery target, kept for Patroni to start with
            config["bootstrap"]["method"] = "pgbackrest"
            config["bootstrap"]["pgbackrest"] = {
                "command": archive["restore_bootstrap"],
                "keep_existing_recovery_conf": True,
                "no_params": True,
            }
    return config


S3_KEY_ENV_PREFIX = "PGBACKREST_REPO1_S3_KEY"
NODE_CONNINFO = "citus.node_conninfo"


def _with_tls(config: dict, m: Member) -> None:
    """PostgreSQL and the REST API on m's certificate; TCP clients on TLS only (``hostssl``);
    Patroni's own connections to other members (replication, rewind, REST) verify them."""
    ca = str(m.ca_file)
    config["restapi"].update(certfile=str(m.tls_cert), keyfile=str(m.tls_key), cafile=ca)
    pg = config["postgresql"]
    pg["parameters"].update(ssl="on", ssl_cert_file=str(m.tls_cert), ssl_key_file=str(m.tls_key))
    for auth in pg["authentication"].values():
        auth.update(sslmode="verify-full", sslrootcert=ca)
    pg["pg_hba"] = [
        "hostssl" + rule.removeprefix("host") if rule.startswith("host ") else rule
        for rule in pg["pg_hba"]
    ]


def _parameters(spec: ClusterSpec) -> dict:
    params = {**spec.postgresql.parameters, "citus.shard_count": spec.shard_count}
    params.pop(NODE_CONNINFO, None)  # the member's own (node_conninfo below)
    return params


def node_conninfo(spec: ClusterSpec, ca_file: Path | None) -> str:
    """How Citus connects between nodes: the spec's own conninfo, else verify-full against
    the cluster's CA (plain TCP with tls off). Set in each member's patroni.yml rather than
    the DCS: that copy is rewritten at every start, so turning tls on or off reaches a
    cluster bootstrapped before."""
    tls = f"sslmode=verify-full sslrootcert={ca_file}" if ca_file else "sslmode=disable"
    return with_tcp_timeouts(str(spec.postgresql.parameters.get(NODE_CONNINFO, tls)))


def _client_networks(spec: ClusterSpec) -> list[str]:
    """Where the members' clients connect from: loopback, and the cluster's own /16."""
    nets = ["127.0.0.0/8"]
    if spec.local.network == "netns":
        nets.append(f"{spec.local.base_address}/{PREFIX_LEN}")
    return nets


def write_config(m: Member, config: dict, owner: pwd.struct_passwd | None) -> None:
    write_private(m.config, yaml.safe_dump(config, sort_keys=False), owner)


def config_changed(m: Member, config: dict) -> bool:
    """Whether m's patroni.yml differs from ``config`` (its bootstrap section aside: it only
    ever applied once, and a restore writes its own)."""
    try:
        written = yaml.safe_load(m.config.read_text())
    except (OSError, yaml.YAMLError):
        return True
    strip = lambda c: {k: v for k, v in (c or {}).items() if k != "bootstrap"}
    return strip(written) != strip(config)


def start(
    layout: Layout,
    m: Member,
    config: dict,
    owner: pwd.struct_passwd | None,
    network: MemberNetwork,
) -> None:
    """Write ``config`` to the member's patroni.yml and start Patroni on it, as ``owner``
    (in the member's own network namespace where the cluster has them)."""
    # explicit modes: under a restrictive umask the service user could not reach its config
    for d in (layout.state_dir, m.dir.parent):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    for d in (m.dir, m.socket_dir):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
        if owner:
            os.chown(d, owner.pw_uid, owner.pw_gid)
    write_config(m, config, owner)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(m.dir),
        "PGPASSFILE": str(m.pgpass),
    }
    # an S3 repository's keys reach archive-push through PostgreSQL's environment only
    env.update({k: v for k, v in os.environ.items() if k.startswith(S3_KEY_ENV_PREFIX)})
    argv = [sys.executable, "-m", "patroni", str(m.config)]
    processes.patroni(m).spawn(
        argv, cwd=m.dir, env=env, owner=owner, netns=network.netns_file(m), umask=0o077
    )


def _empty(items: list) -> bool:
    return not items


def _cluster_view(m: Member, timeout: float) -> dict | None:
    try:
        r = httpx.get(f"{m.api_url}/cluster", timeout=timeout, verify=m.api_verify)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


class PatroniAPI:
    """The REST calls made to the members' Patroni: the /cluster view, pause, leader changes.

    ``password`` is asked for at each call that authenticates, so a missing password fails
    the call that needs it, not the construction.
    """

    def __init__(self, layout: Layout, password: Callable[[], str]) -> None:
        self.layout = layout
        self.password = password

    def _auth(self) -> tuple[str, str]:
        return (self.layout.spec.credentials.restapi_user, self.password())

    def group_cluster(self, group: int, timeout: float = 1.5) -> dict | None:
        """Patroni's /cluster view of one group, from the first member that answers. Every
        member is asked at once: a frozen one (or all of them waiting on a frozen DCS) costs
        ``timeout`` once, not once per member."""
        members = self.layout.members([group])
        pool = ThreadPoolExecutor(max_workers=len(members))
        try:
            asked = [pool.submit(_cluster_view, m, timeout) for m in members]
            for done in as_completed(asked):
                if (view := done.result()) is not None:
                    return view
            return None
        finally:
            pool.shutdown(wait=False)  # a member still out answers into the void

    def patch_config(self, m: Member, patch: dict) -> bool:
        """PATCH m's group's dynamic configuration (Patroni merges it); True if accepted.

        The configuration lives in the DCS, so one member that answers is enough for its group."""
        try:
            r = httpx.patch(
                f"{m.api_url}/config",
                json=patch,
                auth=self._auth(),
                timeout=2,
                verify=m.api_verify,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def set_group_config(self, group: int, patch: dict) -> None:
        """PATCH one group's dynamic configuration through the first member that accepts it."""
        if not any(self.patch_config(m, patch) for m in self.layout.members([group])):
            raise ClusterError(
                f"no member of group {group} accepted the configuration change {patch}",
                self.layout.member(group, 1).log,
            )

    def _set_pause(self, m: Member, pause: bool) -> bool:
        """Patroni's maintenance mode on or off for m's group, through m; True if accepted."""
        return self.patch_config(m, {"pause": pause})

    def pause_groups(self, groups: list[int], timeout: float = 5) -> list[int]:
        """Patroni maintenance mode for every group that answers; returns the paused groups.

        A paused Patroni exits on SIGTERM without demoting or handing over, so `down` can stop
        all PostgreSQL servers at once instead of waiting for each leader's graceful handover.
        """
        paused = []
        for g in groups:
            if any(self._set_pause(m, True) for m in self.layout.members([g]) if member_pid(m)):
                paused.append(g)
        pending = [m for m in self.layout.members(paused) if member_pid(m)]

        def unpaused() -> list[Member]:
            # a member seen paused is not asked again
            pending[:] = [m for m in pending if not self._reports_pause(m)]
            return pending

        # best effort: a member that does not confirm in time is stopped all the same
        with contextlib.suppress(WaitTimeout):
            until(unpaused, timeout, 0.1, "the paused members to report it", done=_empty)
        return paused

    def _reports_pause(self, m: Member) -> bool:
        try:
            r = httpx.get(f"{m.api_url}/patroni", timeout=1, verify=m.api_verify)
            return bool(r.json().get("pause"))
        except (httpx.HTTPError, ValueError):
            return False

    def resume_groups(self, groups: list[int], timeout: float = 60) -> None:
        """Leave maintenance mode (set by `down`) as soon as each group's REST API answers."""
        todo = list(groups)

        def still_paused() -> list[int]:
            todo[:] = [
                g
                for g in todo
                if not any(self._set_pause(m, False) for m in self.layout.members([g]))
            ]
            return todo

        try:
            until(still_paused, timeout, 0.2, "groups to leave maintenance mode", done=_empty)
        except WaitTimeout:
            raise ClusterError(
                f"could not resume groups {todo} from maintenance mode",
                self.layout.member(todo[0], 1).log,
            ) from None

    def post(self, m: MemberStatus, path: str, body: dict) -> httpx.Response:
        """POST to one member's API (``/switchover``, ``/failover``); leader changes take long."""
        auth = self._auth()
        verify = client_context(self.layout.ca_file)
        url = f"{m.api_url}{path}"
        return httpx.request("POST", url, json=body, timeout=60, auth=auth, verify=verify)


__all__ = [
    "S3_KEY_ENV_PREFIX",
    "PatroniAPI",
    "config_changed",
    "patroni_config",
    "start",
    "write_config",
]
