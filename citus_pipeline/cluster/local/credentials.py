"""Passwords of a local cluster and how clients use them without seeing them.

Passwords come from the environment or from secrets.json (generated once, mode 0600); clients
get a DSN that names a passfile, so no password is ever in a DSN, a log or a command line.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
from pathlib import Path

import psycopg

from ...errors import ClusterError
from ..pooler_ini import session_database
from ..spec import READ_SESSION_OPTIONS, TCP_TIMEOUTS
from .layout import Layout, Member

# The embedded etcd exists only locally: its passwords are generated in either mode.
ETCD_SECRETS = ("etcd", "etcd_root")


def load(layout: Layout) -> dict[str, str]:
    """The superuser, replication and REST API passwords (generated on first use, or from the
    environment), and the etcd users' passwords (always generated)."""
    c = layout.spec.credentials
    stored = _stored(layout)
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
            **{k: stored[k] for k in ETCD_SECRETS},
        }
    return stored


def _stored(layout: Layout) -> dict[str, str]:
    """secrets.json, created (mode 0600) or completed with what an older version lacked."""
    f = layout.secrets_file
    creds = json.loads(f.read_text()) if f.exists() else {}
    wanted = ("superuser", "replication", "restapi", *ETCD_SECRETS)
    if all(k in creds for k in wanted):
        return creds
    creds.update({k: secrets.token_urlsafe(24) for k in wanted if k not in creds})
    f.parent.mkdir(parents=True, exist_ok=True)
    write_private(f, json.dumps(creds), None)
    return creds


def write_private(path: Path, text: str, owner: pwd.struct_passwd | None) -> None:
    """Replace ``path`` by ``text``, readable by its owner only (and owned by ``owner``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    tmp.replace(path)


def write_client_passfile(layout: Layout, creds: dict[str, str]) -> None:
    """The passfile every DSN of this cluster names."""
    user = layout.spec.credentials.superuser
    write_private(layout.client_passfile, f"*:*:*:{user}:{creds['superuser']}\n", None)


def tls_options(layout: Layout) -> str:
    """What a client's conninfo adds to reach a member: verify-full against the cluster's CA
    (nothing with tls off)."""
    ca = layout.ca_file
    return f" sslmode=verify-full sslrootcert={ca}" if ca else ""


def _dsn(
    layout: Layout,
    members: list[Member],
    attrs: str = "",
    dbname: str | None = None,
    connect_timeout: int = 5,
) -> str:
    """libpq conninfo of ``members`` (libpq tries them in turn) as the superuser, through the
    passfile; ``attrs`` are further keywords, each followed by a space."""
    hosts = ",".join(m.address for m in members)
    ports = ",".join(str(m.pg_port) for m in members)
    return (
        f"host={hosts} port={ports} dbname={dbname or layout.spec.database} "
        f"user={layout.spec.credentials.superuser} passfile={layout.client_passfile} "
        f"{attrs}connect_timeout={connect_timeout} {TCP_TIMEOUTS}{tls_options(layout)}"
    )


def coordinator_dsn(layout: Layout) -> str:
    """libpq conninfo for the coordinator leader; the password is in a passfile, not here."""
    return _dsn(layout, layout.members([0]), "target_session_attrs=read-write ")


def pooler_dsn(layout: Layout, session: bool = False) -> str:
    """libpq conninfo of the pooler (PgBouncer before the coordinator's leader). Its
    transaction pool (the spec's ``pool_mode``): a client keeps no session state and prepares
    no statements (psycopg: ``prepare_threshold=None``); ``session``: the session pool."""
    s = layout.spec
    dbname = session_database(s) if session else s.database
    return (
        f"host={s.pooler_address} port={s.pooler.port} dbname={dbname} "
        f"user={s.credentials.superuser} passfile={layout.client_passfile} "
        f"connect_timeout=5 {TCP_TIMEOUTS}{tls_options(layout)}"
    )


def read_dsn(layout: Layout) -> str:
    """libpq conninfo of the read endpoint: a coordinator standby (the leader only where no
    standby answers), whose sessions read from the worker groups' standbys."""
    attrs = (
        f"target_session_attrs=prefer-standby options='{READ_SESSION_OPTIONS}' "
        "application_name=citus-pipeline-read "
    )
    return _dsn(layout, layout.members([0]), attrs)


def member_dsn(
    layout: Layout, m: Member, dbname: str | None = None, connect_timeout: int = 3
) -> str:
    return _dsn(layout, [m], dbname=dbname, connect_timeout=connect_timeout)


def connect_coordinator(layout: Layout, timeout: int = 5) -> psycopg.Connection:
    return psycopg.connect(
        coordinator_dsn(layout).replace("connect_timeout=5", f"connect_timeout={timeout}"),
        autocommit=True,
    )


__all__ = [
    "connect_coordinator",
    "coordinator_dsn",
    "load",
    "member_dsn",
    "pooler_dsn",
    "read_dsn",
    "tls_options",
    "write_client_passfile",
    "write_private",
]
