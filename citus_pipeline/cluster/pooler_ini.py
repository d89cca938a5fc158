"""PgBouncer's configuration for the pooler (``pooler:`` of the spec), the same on both
backends: they differ only in where it listens, where the coordinator's leader is (HAProxy's
leader endpoint locally, the group's leader Service on Kubernetes) and where the files are.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import ClusterSpec

# A leader that is away for a failover's seconds: PgBouncer retries the login every second
# instead of its default 15 s, so the pool follows the new leader at once.
SERVER_LOGIN_RETRY_S = 1


def session_database(spec: ClusterSpec) -> str:
    """The pooler's second name for the database, pooled per session instead of per
    transaction: the project's own clients (the Dagster resources, the CLI) connect to it,
    since they keep session state (search_path, statement_timeout, the loaders' temp tables);
    applications take the transaction pool under the database's own name."""
    return f"{spec.database}_session"


@dataclass(frozen=True)
class PoolerPlace:
    """Where one backend's PgBouncer listens, reaches the leader and finds its files."""

    listen_addr: str
    server_host: str
    server_port: int
    auth_file: str
    ca_file: str | None  # None: no TLS (a local cluster with tls.enabled false)
    cert_file: str = ""
    key_file: str = ""


def pgbouncer_ini(spec: ClusterSpec, place: PoolerPlace, header: str) -> str:
    p = spec.pooler
    tls = (
        f"server_tls_sslmode = verify-full\nserver_tls_ca_file = {place.ca_file}\n"
        f"client_tls_sslmode = require\nclient_tls_cert_file = {place.cert_file}\n"
        # no client certificate is asked for, but without a CA file PgBouncer loads the
        # system's bundle, which an image without ca-certificates lacks (it will not start)
        f"client_tls_ca_file = {place.ca_file}\n"
        f"client_tls_key_file = {place.key_file}\n"
        if place.ca_file
        else ""
    )
    return f"""; {header}
[databases]
* = host={place.server_host} port={place.server_port}
{session_database(spec)} = host={place.server_host} port={place.server_port} dbname={spec.database} pool_mode=session

[pgbouncer]
listen_addr = {place.listen_addr}
listen_port = {p.port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {place.auth_file}
admin_users = {spec.credentials.superuser}
stats_users = {spec.credentials.superuser}
pool_mode = {p.pool_mode}
max_client_conn = {p.max_client_conn}
default_pool_size = {p.default_pool_size}
server_login_retry = {SERVER_LOGIN_RETRY_S}
server_connect_timeout = 5
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
{tls}"""


__all__ = ["SERVER_LOGIN_RETRY_S", "PoolerPlace", "pgbouncer_ini", "session_database"]
