"""Dagster resources for the Citus cluster: the cluster backend, the coordinator connection, and
where the Price Paid files are.

`ClusterResource` wraps the cluster backend (local processes or Kubernetes) chosen by config.
`CitusResource` hands out pooled psycopg connections to the coordinator; it takes the
`ClusterResource` it needs as a nested resource, which supplies the DSN when none is
configured, so backend, spec and state are configured once. It retries *idempotent* work
across the errors a Patroni failover or switchover produces, through `cluster.failover` (the
project's one classifier and retry loop); work that is not idempotent gets a plain connection
and no retries. The DSN and passwords never pass through Dagster config or logs.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import PrivateAttr

from ... import settings
from ...cluster import failover

if TYPE_CHECKING:
    from ...cluster.pgbackrest import BackupInfo
    from ...cluster.restore_points import RestorePoint
    from ...cluster.spec import ClusterSpec
    from ...cluster.topology import ClusterBackend, ClusterTopology

T = TypeVar("T")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ClusterResource(dg.ConfigurableResource):
    """The cluster backend chosen by config: ``local`` (processes on loopback) or ``kubernetes``."""

    backend: Literal["local", "kubernetes"] = "local"
    spec_path: str = ""
    state_dir: str = ""

    def spec(self) -> ClusterSpec:
        from ...cluster.spec import load_spec

        return load_spec(self.spec_path or None)

    def get_backend(self) -> ClusterBackend:
        from ...cluster.backend import get_backend

        return get_backend(self.spec(), kind=self.backend, state_dir=self.state_dir or None)

    def coordinator_dsn(self) -> str:
        return self.get_backend().coordinator_dsn()

    def client_dsn(self) -> str:
        """The pooler's session pool where the spec has a pooler, else the coordinator."""
        return self.get_backend().client_dsn()

    def topology(self) -> ClusterTopology:
        """Groups, members, roles, lag and pg_dist_node, as the backend reports them."""
        return self.get_backend().status()

    def ensure_up(self) -> ClusterTopology:
        """Local: start whatever is not running. Kubernetes: only observe (the operator deploys)."""
        return self.get_backend().ensure_up()

    def add_worker(self) -> int:
        return self.get_backend().add_worker()

    def remove_worker(self, group: int) -> None:
        self.get_backend().remove_worker(group)

    def restore_point(self, name: str, run_id: str | None = None) -> RestorePoint | None:
        """A cluster-consistent restore point, once archived; None when the spec archives no
        WAL (``backup.archiving: false``), so there is nothing a point could be restored from."""
        backend = self.get_backend()
        if not backend.spec.backup.archiving:
            return None
        return backend.restore_points().take(name, run_id)

    def backup(self, backup_type: str) -> list[BackupInfo]:
        """A pgBackRest backup of every group (local backend; on Kubernetes the CronJob
        rendered from the spec runs them in the pods)."""
        from ...cluster.local import LocalCluster
        from ...cluster.local.recovery import LocalRecovery

        backend = self.get_backend()
        # pgBackRest run from here reaches only local members: a capability of that class
        if not isinstance(backend, LocalCluster):
            raise dg.Failure(
                description="on Kubernetes the backup CronJob takes the backups "
                "(citus-pipeline k8s render); this asset takes only the restore point there"
            )
        return LocalRecovery(backend).backup(backup_type)


class CitusResource(dg.ConfigurableResource):
    """The Citus coordinator, reached through a libpq DSN that follows the leader.

    ``dsn`` comes from the environment (``CITUS_PIPELINE_DSN``, mapped from a Secret on
    Kubernetes). Left empty, ``cluster`` (the local backend by default) supplies it: the
    pooler's session pool where the spec has a pooler (PgBouncer accepts no ``options``
    startup parameter, so the session settings are SET on each new connection), else the
    coordinator. It carries no password (the password lives in a passfile it names) and is
    never logged.
    """

    dsn: str = ""
    cluster: ClusterResource | None = None
    db_schema: str = "public"
    retry_attempts: int = 6
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 10.0
    pool_max_size: int = 4
    connect_wait_seconds: float = 20.0
    statement_timeout_ms: int = 0

    _pool: ConnectionPool | None = PrivateAttr(default=None)

    # ---- the DSN --------------------------------------------------------------------
    def conninfo(self) -> str:
        """The DSN to the coordinator's leader (secret-free, but still never log it)."""
        if self.dsn:
            return self.dsn
        return (self.cluster or ClusterResource()).client_dsn()

    def checked_schema(self) -> str:
        if not _SCHEMA_RE.match(self.db_schema):
            raise ValueError(
                f"citus.db_schema {self.db_schema!r}: expected a plain lower-case identifier"
            )
        return self.db_schema

    # ---- connections ----------------------------------------------------------------
    def session_settings(self) -> dict[str, str]:
        """What each pooled connection SETs once it is opened."""
        settings_: dict[str, str] = {}
        if self.statement_timeout_ms:
            settings_["statement_timeout"] = str(int(self.statement_timeout_ms))
        if self.db_schema != "public":
            # Our SQL names tables unqualified; tests give each run its own schema.
            settings_["search_path"] = f"{self.checked_schema()},public"
        return settings_

    def _configure(self, conn: psycopg.Connection) -> None:
        for name, value in self.session_settings().items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.conninfo(),
                min_size=0,
                max_size=self.pool_max_size,
                # no server-side prepared statements: a DSN may name a transaction pooler
                kwargs={"autocommit": True, "prepare_threshold": None},
                configure=self._configure,
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
    def _drop_broken_connections(self, err: BaseException) -> None:
        if self._pool is not None:
            self._pool.check()  # throw away connections to the old leader

    def retry_idempotent(
        self,
        work: Callable[[], T],
        *,
        what: str,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Run ``work`` (which must be idempotent and must not retry itself), retrying it
        after failover errors with this resource's budget.

        Any other error is raised at once. After the last attempt the failover error is
        raised as `FailoverRetriesExhausted`, with a message that says what was being done.
        """
        return failover.retry(
            work,
            what=what,
            attempts=self.retry_attempts,
            base_seconds=self.retry_base_seconds,
            max_seconds=self.retry_max_seconds,
            log=log,
            before_retry=self._drop_broken_connections,
            sleep=sleep,
        )

    def query_idempotent(
        self, sql: str, params: tuple | dict | None = None, *, what: str = "query", log=None
    ) -> list[tuple]:
        """A read-only (or otherwise idempotent) statement, retried across failovers."""

        def run() -> list[tuple]:
            with self.connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

        return self.retry_idempotent(run, what=what, log=log)

    def run_idempotent(self, work: Callable[[psycopg.Connection], T], *, what: str, log=None) -> T:
        """``work(conn)`` on a pooled connection, retried (each time on a fresh connection)
        across failovers; ``work`` must be idempotent."""

        def run() -> T:
            with self.connection() as conn:
                return work(conn)

        return self.retry_idempotent(run, what=what, log=log)


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
        # The variable is read again here: run config for this resource (the launchpad's
        # `sample_rows`, say) replaces the whole configuration, `work_dir` included, and the
        # checkout's default is not writable in the Dagster image.
        p = Path(self.work_dir or settings.WORK_DIR.get() or settings.DEFAULT_WORK_DIR)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def sample_path(self) -> Path:
        """Where the generated sample of this size and seed is (or will be)."""
        return self.work_path() / f"pp-sample-{self.sample_rows}-{self.sample_seed}.csv"

    def ensure_sample(self, log: Callable[[str], None]) -> tuple[Path, float]:
        """The generated sample (generated once, reused while its name matches), and the
        seconds spent generating it now (0 when reused)."""
        from ...data.generate import generate_complete

        out = self.sample_path()
        t0 = time.perf_counter()
        if not out.exists():
            log(f"generating a {self.sample_rows:,}-row sample (seed {self.sample_seed}) at {out}")
            tmp = out.with_suffix(".partial")  # renamed when complete: never a half sample
            generate_complete(tmp, rows=self.sample_rows, seed=self.sample_seed)
            tmp.rename(out)
        return out, time.perf_counter() - t0

    def monthly_path(self) -> Path:
        return Path(self.monthly_dir) if self.monthly_dir else self.work_path() / "monthly"

    def monthly_file(self, month: str) -> Path | None:
        """The update file for ``month`` (YYYY-MM), or None when it is not there."""
        base = self.monthly_path()
        for name in (f"pp-{month}.csv", f"pp-{month}.csv.gz", f"pp-monthly-{month}.csv"):
            if (base / name).is_file():
                return base / name
        return None


__all__ = ["CitusResource", "ClusterResource", "PricePaidFiles"]
