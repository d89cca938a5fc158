"""One loader stream: parse a chunk piece by piece and commit it in ONE transaction.

The transaction writes the chunk's ledger row first (so a concurrent or repeated load of the
same chunk waits and then finds it done), its good rows by COPY, its rejects. A chunk is
therefore loaded entirely or not at all, whatever is killed when. Rows whose id is already
present make the plain COPY fail with a unique violation; the chunk is then redone through a
temporary table and ``INSERT ... ON CONFLICT DO NOTHING``, which counts them as duplicates.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.copy import LibpqWriter

from . import binary_copy, rollup
from . import schema as sch
from .parse import ParsedChunk, Reject, parse_chunk, pieces
from .sources import Chunk, InputFile

Target = Literal["uk_price", "uk_price_raw", "both"]
TARGETS = ("uk_price", "uk_price_raw", "both")

LEDGER_CLAIM = """
INSERT INTO {schema}.uk_price_load_ledger
    (source_fingerprint, target, chunk_offset, chunk_bytes, first_line, source,
     rows_read, rows_loaded, rows_rejected, rows_duplicate)
VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0, 0)
ON CONFLICT DO NOTHING
RETURNING 1
"""
LEDGER_DONE = """
UPDATE {schema}.uk_price_load_ledger
SET rows_loaded = %s, rows_rejected = %s, rows_duplicate = %s, committed_at = now()
WHERE source_fingerprint = %s AND target = %s AND chunk_offset = %s
"""
LEDGER_ROW = """
SELECT chunk_bytes, rows_loaded + rows_duplicate FROM {schema}.uk_price_load_ledger
WHERE source_fingerprint = %s AND target = %s AND chunk_offset = %s
"""
LEDGER_COMMITTED = """
SELECT chunk_offset, chunk_bytes, rows_loaded + rows_duplicate
FROM {schema}.uk_price_load_ledger WHERE source_fingerprint = %s AND target = %s
"""
# Binary: the coordinator reads the typed values as they come instead of parsing text
# (data.binary_copy says why and what it saves).
COPY = "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
TMP_CREATE = "CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {table}) ON COMMIT DELETE ROWS"
# RETURNING: Citus reports rows processed, not inserted, for INSERT ... SELECT ON CONFLICT
TMP_INSERT = "INSERT INTO {table} SELECT * FROM {tmp} ON CONFLICT DO NOTHING RETURNING {returned}"
# What the ON CONFLICT path returns per inserted row: uk_price's rollup keys and price.
RETURNED = {
    sch.RAW: sql.SQL("1"),
    sch.TYPED: sql.SQL(
        "extract(year FROM date_of_transfer)::smallint, property_type, district, town_city, price"
    ),
}


# By default a COPY opens up to 16 connections per worker (one per shard placement it
# writes), and a chunk's two-phase commit then prepares every one of them. One connection per
# worker per loader stream -- Citus switches it between the shards' COPYs -- means one
# PREPARE per worker group per chunk and a quarter less worker CPU: 2 M rows in 12.5 s
# instead of 16.5 s with 6 MiB chunks. Parallelism comes from the loader's streams.
# Set per transaction, not per session: through PgBouncer's transaction pooling a session's
# settings would stay with whichever server connection took them (and PgBouncer 1.18 refuses
# the `options` startup parameter outright).
LOADER_SETTINGS = "SET LOCAL citus.max_adaptive_executor_pool_size = 1"


def loader_conninfo(dsn: str) -> str:
    """The DSN, named as the loader's unless it names itself."""
    params = conninfo_to_dict(dsn)
    params.setdefault("application_name", "citus-pipeline-load")
    return make_conninfo(**params)


class BackgroundSender(LibpqWriter):
    """COPY data sent from a thread of its own, so the loader parses the next piece of a chunk
    while the server is still taking the previous one. At most `depth` pieces wait."""

    def __init__(self, cursor: psycopg.Cursor, depth: int = 1):
        super().__init__(cursor)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="copy-sender", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:  # after an error, drain so the producer never blocks
                continue
            try:
                super().write(memoryview(data))  # psycopg cuts it into protocol messages
            except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
                self._error = err

    def write(self, data: Buffer) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def finish(self, exc: BaseException | None = None) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error
        super().finish(exc)


@dataclass
class ChunkResult:
    """What one committed chunk added: `skipped` if a previous or concurrent load had it."""

    good: int = 0
    loaded: int = 0
    rejects: list[Reject] = field(default_factory=list)
    transcoded: int = 0
    skipped: bool = False

    def add(self, parsed: ParsedChunk) -> ParsedChunk:
        self.good += parsed.good.num_rows
        self.rejects.extend(parsed.rejects)
        self.transcoded += parsed.transcoded_lines
        return parsed


def _tmp(table: str) -> sql.Identifier:
    """The session's temporary copy of `table` for the ON CONFLICT path."""
    return sql.Identifier(f"load_tmp_{table}")


class ChunkWriter:
    """One worker's connection: writes whole chunks, one transaction each, parsing a chunk
    piece by piece while its rows stream to the coordinator."""

    def __init__(self, dsn: str, schema: str, target: Target, piece_bytes: int):
        self.dsn = dsn
        self.schema = schema
        self.target = target
        self.piece_bytes = piece_bytes
        self.conn: psycopg.Connection | None = None
        self.columns = sql.SQL(", ").join(map(sql.Identifier, sch.TYPED_COLUMNS))

    def connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            # no server-side prepared statements: the same connection may be a different
            # server session at every transaction behind a transaction pooler
            self.conn = psycopg.connect(loader_conninfo(self.dsn), prepare_threshold=None)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _streams(
        self, idempotent: bool
    ) -> list[tuple[str, sql.Composable, Callable[[pa.Table], Buffer]]]:
        """(table, COPY statement, serialiser) for each table the target writes; with
        `idempotent`, the COPY goes to a temporary copy of the table."""
        out = []
        for name, columns, render in (
            (sch.RAW, sql.SQL(sch.RAW_COLUMNS), binary_copy.raw_rows),
            (sch.TYPED, self.columns, binary_copy.typed_rows),
        ):
            if self.target not in (name, "both"):
                continue
            dest = _tmp(name) if idempotent else sch.table(self.schema, name)
            out.append((name, sql.SQL(COPY).format(table=dest, columns=columns), render))
        return out

    def _send(self, cur: psycopg.Cursor, statement: sql.Composable, payloads) -> None:
        with cur.copy(statement, writer=BackgroundSender(cur)) as cp:
            cp.write(binary_copy.SIGNATURE)
            for payload in payloads:
                if len(payload):
                    cp.write(payload)  # one piece at a time
            cp.write(binary_copy.TRAILER)

    def write(self, fp: str, inp: InputFile, chunk: Chunk, idempotent: bool) -> ChunkResult:
        """Parse and commit the chunk in one transaction (unless the ledger already has it)."""
        conn = self.connect()
        q = lambda s: sch.q(s, self.schema)
        res = ChunkResult()
        delta = rollup.Delta()  # what this chunk adds to uk_price's rollup
        typed = self.target in (sch.TYPED, "both")

        def tally(p: ParsedChunk) -> ParsedChunk:
            res.add(p)
            if typed and not idempotent:  # every good row goes in: count them as parsed
                delta.add_parsed(p.good)
            return p

        parsed = (
            tally(parse_chunk(data, line, complete=True))
            for data, line in pieces(chunk.data, chunk.first_line, self.piece_bytes)
        )
        with conn.transaction():
            cur = conn.cursor()
            cur.execute(LOADER_SETTINGS)
            key = (fp, self.target, chunk.offset)
            cur.execute(
                q(LEDGER_CLAIM), (*key, len(chunk.data), chunk.first_line, inp.name, chunk.lines)
            )
            claimed = cur.fetchone() is not None
            if not claimed:  # committed by an earlier or a concurrent load
                size, good = cur.execute(q(LEDGER_ROW), key).fetchone()
                if size == len(chunk.data):
                    return ChunkResult(good=good, skipped=True)
                # a load that cut the file differently committed a chunk starting here: some
                # of these rows may be in, some not; the ON CONFLICT path adds what is missing
                idempotent = True
            streams = self._streams(idempotent)
            if idempotent:
                for name, _, _ in streams:
                    cur.execute(
                        sql.SQL(TMP_CREATE).format(
                            tmp=_tmp(name), table=sch.table(self.schema, name)
                        )
                    )
            if len(streams) == 1:  # the whole chunk in one COPY
                _, statement, render = streams[0]
                self._send(cur, statement, (render(p.good) for p in parsed))
            else:  # both tables: piece by piece
                for p in parsed:
                    for _, statement, render in streams:
                        self._send(cur, statement, [render(p.good)])
            res.loaded = res.good
            if idempotent:
                for name, _, _ in streams:
                    cur.execute(
                        sql.SQL(TMP_INSERT).format(
                            table=sch.table(self.schema, name),
                            tmp=_tmp(name),
                            returned=RETURNED[name],
                        )
                    )
                    res.loaded = cur.rowcount  # the last one: uk_price when the target is both
                    if name == sch.TYPED:  # only the rows really inserted count
                        for *key, price in cur.fetchall():
                            delta.add(tuple(key), 1, price)
            if typed:
                delta.write(cur, self.schema)
            sch.insert_rejects(cur, self.schema, inp.name, fp, res.rejects)
            if claimed:
                cur.execute(
                    q(LEDGER_DONE), (res.loaded, len(res.rejects), res.good - res.loaded, *key)
                )
        return res


__all__ = [
    "LEDGER_COMMITTED",
    "LOADER_SETTINGS",
    "TARGETS",
    "BackgroundSender",
    "ChunkResult",
    "ChunkWriter",
    "Target",
    "loader_conninfo",
]
