"""Dagster resources for the Citus cluster: the coordinator connection and the cluster backend.

`CitusResource` hands out pooled psycopg connections to the coordinator and retries
*idempotent* work when it hits the errors a Patroni failover or switchover produces
(connection refused/reset, a leader that became read-only, an administrator shutdown).
Work that is not idempotent gets a plain connection and no retries.

`ClusterResource` wraps the cluster backend (local processes or Kubernetes) chosen by
config; the DSN and passwords never pass through Dagster config or logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import PrivateAttr

T = TypeVar("T")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_WORK_DIR = REPO_ROOT / ".citus-pipeline" / "work"

# SQLSTATEs a failover produces: the old leader goes read-only or is shut down, and
# connections break while the new leader is promoted.
FAILOVER_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: we reached a demoted leader / a replica
        "57P01",  # admin_shutdown: Patroni stopped the postmaster
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or shutting down
        "08000",  # connection_exception
        "08001",  # sqlclient_unable_to_establish_sqlconnection
        "08003",  # connection_does_not_exist
        "08004",  # sqlserver_rejected_establishment_of_sqlconnection
        "08006",  # connection_failure
        "40001",  # serialization_failure (Citus 2PC recovery after a worker switchover)
    }
)
# Errors without a SQLSTATE (client side) whose message says the connection went away.
_FAILOVER_MESSAGES = (
    "connection refused",
    "connection reset",
    "server closed the connection",
    "terminating connection",
    "the connection is closed",
    "connection timeout",
    "could not connect",
    "consuming input failed",
    "no connection to the server",
    "connection to server",
    "connection to the remote node",
    "read-only transaction",
    "is in recovery",
    "failed to connect",
    "lost connection",
)


def is_failover_error(err: BaseException) -> bool:
    """True when ``err`` is what a leader change looks like from a client, so retrying helps."""
    if isinstance(err, PoolTimeout):
        return True  # no connection to a read-write coordinator within the wait
    if isinstance(err, psycopg.Error):
        if err.sqlstate in FAILOVER_SQLSTATES:
            return True
        if err.sqlstate and not err.sqlstate.startswith(("XX", "08", "57")):
            # Citus relays worker errors as XX000 with the worker's message; anything else
            # with a SQLSTATE (syntax, constraint, ...) is a real error: never retry.
            return False
        return isinstance(err, psycopg.OperationalError | psycopg.InternalError) and any(
            m in str(err).lower() for m in _FAILOVER_MESSAGES
        )
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    # Data-path code may wrap the psycopg error; follow the chain.
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and is_failover_error(cause)


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """Exponential backoff between attempts: base, 2*base, 4*base ... capped at ``cap``."""
    return [min(cap, base * (2**i)) for i in range(max(0, attempts - 1))]


class CitusResource(dg.ConfigurableResource):
    """The Citus coordinator, reached through a libpq DSN that follows the leader.

    ``dsn`` comes from the environment (``CITUS_COORDINATOR_DSN``, mapped from a Secret on
    Kubernetes). Left empty, the local cluster backend supplies it. It carries no password
    (the password lives in a passfile it names) and is never logged.
    """

    dsn: str = ""
    db_schema: str = "public"
    cluster_backend: Literal["local", "kubernetes"] = "local"
    spec_path: str = ""
    state_dir: str = ""
    retry_attempts: int = 6
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 10.0
    pool_max_size: int = 4
    connect_wait_seconds: float = 20.0
    statement_timeout_ms: int = 0

    _pool: ConnectionPool | None = PrivateAttr(default=None)

    # ---- the DSN --------------------------------------------------------------------
    def conninfo(self) -> str:
        """The coordinator DSN (secret-free, but still never log it)."""
        if self.dsn:
            return self.dsn
        from ...cluster.backend import get_backend
        from ...cluster.spec import load_spec

        backend = get_backend(
            load_spec(self.spec_path or None),
            kind=self.cluster_backend,
            state_dir=self.state_dir or None,
        )
        return backend.coordinator_dsn()

    def checked_schema(self) -> str:
        if not _SCHEMA_RE.match(self.db_schema):
            raise ValueError(
                f"citus.db_schema {self.db_schema!r}: expected a plain lower-case identifier"
            )
        return self.db_schema

    # ---- connections ----------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            kwargs: dict = {"autocommit": True}
            options = []
            if self.statement_timeout_ms:
                options.append(f"-c statement_timeout={int(self.statement_timeout_ms)}")
            if self.db_schema != "public":
                # Our SQL names tables unqualified; tests give each run its own schema.
                options.append(f"-c search_path={self.checked_schema()},public")
            if options:
                kwargs["options"] = " ".join(options)
            self._pool = ConnectionPool(
                self.conninfo(),
                min_size=0,
                max_size=self.pool_max_size,
                kwargs=kwargs,
                check=ConnectionPool.check_connection,  # drop connections a failover broke
                open=True,
                timeout=self.connect_wait_seconds,
                name="citus-coordinator",
            )
        return self._pool

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection to the coordinator leader (no retries)."""
        with self._get_pool().connection() as conn:
            yield conn

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # ---- retries --------------------------------------------------------------------
    def retry_idempotent(
        self,
        work: Callable[[], T],
        *,
        what: str,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Run ``work`` (which must be idempotent), retrying it after failover errors.

        Any other error is raised at once. After the last attempt the failover error is
        raised with a message that says what was being done.
        """
        delays = backoff_delays(
            self.retry_attempts, self.retry_base_seconds, self.retry_max_seconds
        )
        for attempt in range(len(delays) + 1):
            try:
                return work()
            except Exception as err:
                if not is_failover_error(err):
                    raise
                if attempt >= len(delays):
                    raise FailoverRetriesExhausted(
                        f"{what}: the coordinator or a worker kept failing over "
                        f"({self.retry_attempts} attempts): {_one_line(err)}"
                    ) from err
                if self._pool is not None:
                    self._pool.check()  # throw away connections to the old leader
                if log:
                    log(
                        f"{what}: failover error ({_one_line(err)}); retry {attempt + 1}/"
                        f"{len(delays)} in {delays[attempt]:.1f}s"
                    )
                sleep(delays[attempt])
        raise AssertionError("unreachable")

    def query_idempotent(
        self, sql: str, params: tuple | dict | None = None, *, what: str = "query", log=None
    ) -> list[tuple]:
        """A read-only (or otherwise idempotent) statement, retried across failovers."""

        def run() -> list[tuple]:
            with self.connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

        return self.retry_idempotent(run, what=what, log=log)


class FailoverRetriesExhausted(RuntimeError):
    """Idempotent work kept hitting failover errors past the retry budget."""


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class ClusterResource(dg.ConfigurableResource):
    """The cluster backend chosen by config: ``local`` (processes on loopback) or ``kubernetes``."""

    backend: Literal["local", "kubernetes"] = "local"
    spec_path: str = ""
    state_dir: str = ""

    def spec(self):
        from ...cluster.spec import load_spec

        return load_spec(self.spec_path or None)

    def get_backend(self):
        from ...cluster.backend import get_backend

        return get_backend(self.spec(), kind=self.backend, state_dir=self.state_dir or None)

    def topology(self):
        """Groups, members, roles, lag and pg_dist_node, as the backend reports them."""
        return self.get_backend().status()

    def ensure_up(self):
        """Local: start whatever is not running. Kubernetes: only observe (the operator deploys)."""
        backend = self.get_backend()
        return backend.up() if self.backend == "local" else backend.status()

    def add_worker(self) -> int:
        return self.get_backend().add_worker()

    def remove_worker(self, group: int) -> None:
        self.get_backend().remove_worker(group)


class PricePaidFiles(dg.ConfigurableResource):
    """Where the Price Paid files come from.

    ``source``: a complete file, a directory of files or a URL; empty means a generated
    sample of ``sample_rows`` rows (deterministic from ``sample_seed``) under ``work_dir``.
    ``monthly_dir`` holds one update file per month, ``pp-YYYY-MM.csv`` (or ``.csv.gz``).
    """

    source: str = ""
    sample_rows: int = 1_000_000
    sample_seed: int = 1995
    work_dir: str = ""
    monthly_dir: str = ""

    def work_path(self) -> Path:
        p = Path(self.work_dir) if self.work_dir else DEFAULT_WORK_DIR
        p.mkdir(parents=True, exist_ok=True)
        return p

    def monthly_path(self) -> Path:
        return Path(self.monthly_dir) if self.monthly_dir else self.work_path() / "monthly"

    def monthly_file(self, month: str) -> Path | None:
        """The update file for ``month`` (YYYY-MM), or None when it is not there."""
        base = self.monthly_path()
        for name in (f"pp-{month}.csv", f"pp-{month}.csv.gz", f"pp-monthly-{month}.csv"):
            if (base / name).is_file():
                return base / name
        return None


def env_or(name: str, default):
    """``dg.EnvVar(name)`` when the variable is set, else ``default``.

    Dagster resolves an EnvVar at run time and refuses an unset one; the local default
    needs no variables, so only what is set is taken from the environment (and shown in
    the UI as the variable's name, never its value).
    """
    return dg.EnvVar(name) if os.environ.get(name) else default


def env_int_or(name: str, default: int):
    return dg.EnvVar.int(name) if os.environ.get(name) else default


__all__ = [
    "FAILOVER_SQLSTATES",
    "CitusResource",
    "ClusterResource",
    "FailoverRetriesExhausted",
    "PricePaidFiles",
    "backoff_delays",
    "env_int_or",
    "env_or",
    "is_failover_error",
]
