"""A writer that proves nothing acknowledged is lost: single-row inserts through the coordinator.

Fault drills (a killed leader, a switchover) and `bench rebalance` run one while they break or
move things, then compare the ids it recorded as acknowledged with what the table holds, and
report its failed inserts. Every attempt uses the next id, acknowledged or not, so an insert
whose commit was never confirmed can neither be counted nor collide with a later one. That
comparison is :meth:`WriteProbe.lost`, the one check every drill, bench and test makes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
import psycopg.sql

from .citus_meta import ensure_distributed


def probe_table(dsn: str, table: str) -> int:
    """``table`` (id bigint primary key) created and distributed on id unless it is; returns
    the first id a new probe should use (after every id stored)."""
    ident = psycopg.sql.Identifier(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_distributed(conn, table, "id bigint PRIMARY KEY")
        query = psycopg.sql.SQL("SELECT coalesce(max(id), 0) + 1 FROM {}").format(ident)
        return conn.execute(query).fetchone()[0]


class WriteProbe(threading.Thread):
    """Runs ``insert_sql`` with ``params(id)`` for id = start_id, start_id + 1, ... until stopped.

    ``acked`` holds the ids whose insert returned (``acked_at`` when, monotonic seconds);
    ``failed`` counts the inserts that raised (``failed_at`` when)
    (the connection is then dropped and opened again after ``error_pause``); ``error_log``
    keeps (when, first line) of the first ``keep_errors`` failures, ``errors`` their text.
    ``table`` is where the inserts land, its ids in an ``id`` column: what :meth:`stored` and
    :meth:`lost` read.
    """

    def __init__(
        self,
        dsn: str,
        insert_sql: str,
        *,
        params: Callable[[int], Sequence] = lambda i: (i,),
        start_id: int = 1,
        pause: float = 0.0,
        error_pause: float = 0.2,
        connect_timeout: int = 2,
        keep_errors: int = 1000,
        table: str | None = None,
    ) -> None:
        super().__init__(daemon=True, name="write-probe")
        self.dsn, self.insert_sql, self.params = dsn, insert_sql, params
        self.table = table
        self.start_id = self.next_id = start_id
        self.pause, self.error_pause = pause, error_pause
        self.connect_timeout, self.keep_errors = connect_timeout, keep_errors
        self.acked: list[int] = []
        self.acked_at: list[float] = []
        self.failed = 0
        self.failed_at: list[float] = []
        self.error_log: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self.stopped_at: float | None = None

    def run(self) -> None:
        conn = None
        while not self._halt.is_set():
            row_id, self.next_id = self.next_id, self.next_id + 1
            try:
                if conn is None or conn.closed:
                    # no server-side prepared statements: the probe runs as well through
                    # the pooler's transaction pooling as straight to PostgreSQL
                    conn = psycopg.connect(
                        self.dsn,
                        autocommit=True,
                        connect_timeout=self.connect_timeout,
                        prepare_threshold=None,
                    )
                conn.execute(self.insert_sql, self.params(row_id))
                self.acked.append(row_id)
                self.acked_at.append(time.monotonic())
            except psycopg.Error as err:
                self.failed += 1
                self.failed_at.append(time.monotonic())
                if len(self.error_log) < self.keep_errors:
                    text = str(err).strip().splitlines()
                    line = (text[0] if text else type(err).__name__)[:160]
                    self.error_log.append((self.failed_at[-1], line))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(self.error_pause)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    @property
    def errors(self) -> list[str]:
        return [line for _, line in self.error_log]

    def distinct_errors(self, since: float = 0.0, keep: int = 5) -> list[str]:
        """The first ``keep`` different messages of failures from ``since`` (monotonic) on."""
        seen: dict[str, None] = {}
        for at, line in self.error_log:
            if at >= since and len(seen) < keep:
                seen.setdefault(line, None)
        return list(seen)

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest time without an acknowledged write after ``since`` (monotonic), up to
        the last acknowledgement: what a client saw of an outage."""
        times = [since, *(t for t in self.acked_at if t >= since)] if since else self.acked_at
        if since and self.stopped_at is not None:
            # a writer that never got through again saw an outage until it stopped
            times.append(self.stopped_at)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def stored(self) -> tuple[set[int], int]:
        """The ids from this probe's first on that its table holds, and how many rows carry
        them (more rows than ids: an id stored twice)."""
        if self.table is None:
            raise ValueError("a WriteProbe checks what is stored only given its table")
        query = psycopg.sql.SQL("SELECT id FROM {} WHERE id >= %s").format(
            psycopg.sql.Identifier(self.table)
        )
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            rows = [r[0] for r in conn.execute(query, (self.start_id,))]
        return set(rows), len(rows)

    def lost(self, stored: set[int] | None = None) -> set[int]:
        """Acknowledged ids the table does not hold (must be none): read now, or taken from
        ``stored`` (the ids :meth:`stored` returned)."""
        ids = self.stored()[0] if stored is None else stored
        return set(self.acked) - ids

    def stop(self, timeout: float = 30.0) -> WriteProbe:
        """Stop after the insert in flight and wait for the thread; returns the probe."""
        self.stopped_at = time.monotonic()
        self._halt.set()
        self.join(timeout=timeout)
        return self


__all__ = ["WriteProbe", "probe_table"]
