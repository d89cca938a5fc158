"""The loader: Price Paid files -> validated rows in Citus, exactly once, N streams at a time.

One reader thread cuts each input into record-aligned chunks (`sources.read_chunks`); N
worker threads, each with its own connection, parse and validate a chunk (`parse`), and
write it in ONE transaction: the chunk's ledger row first (so a concurrent or repeated
load of the same chunk waits and then finds it done), its good rows by COPY, its rejects.
A chunk is therefore loaded entirely or not at all, whatever is killed when; a re-run
skips the chunks the ledger names and redoes the rest. Rows whose id is already present
(a second file with the same records, a re-cut chunk) make the plain COPY fail with a
unique violation; that chunk is then redone through a temporary table and
`INSERT ... ON CONFLICT DO NOTHING`, which counts them as duplicates.

Targets: `uk_price` (typed, distributed: the one-hop fast path), `uk_price_raw` (the
reference schema, coordinator-local: staging for `publish_uk_price`), or `both`.
Memory is bounded by the queue: at most jobs + 2 chunks exist at once.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import psycopg
import pyarrow as pa
from psycopg import errors, sql
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.copy import LibpqWriter

from . import format as fmt
from . import schema as sch
from .parse import ParsedChunk, Reject, parse_chunk, pieces, raw_csv, typed_csv, warm_up
from .sources import (
    DEFAULT_CHUNK_BYTES,
    Chunk,
    InputFile,
    SourceError,
    fingerprint,
    read_chunks,
    read_first_lines,
    resolve,
)

Target = Literal["uk_price", "uk_price_raw", "both"]


class LayoutError(SourceError):
    """A file refused up front because it is not in the published layout."""


@dataclass
class ProgressEvent:
    done_rows: int
    total_bytes: int | None
    done_bytes: int
    message: str
    rows_loaded: int = 0
    rows_rejected: int = 0


Progress = Callable[[ProgressEvent], None]


@dataclass
class LoadReport:
    source: str
    target: str
    files: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0  # good rows not added: id already present or chunk already loaded
    rows_already_loaded: int = 0  # of those, rows in chunks a previous load committed
    chunks: int = 0
    chunks_skipped: int = 0
    transcoded_lines: int = 0  # lines read as Windows-1252
    retries: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    mb_per_s: float = 0.0
    jobs: int = 1
    errors: list[str] = field(default_factory=list)

    def model_dump(self) -> dict:
        return asdict(self)


@dataclass
class PublishReport:
    rows_published: int
    rows_in_uk_price: int
    seconds: float

    def model_dump(self) -> dict:
        return asdict(self)


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
REJECT_INSERT = """
INSERT INTO {schema}.uk_price_rejects (source, source_fingerprint, line_number, raw_record, reason)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""
COPY = "COPY {table} ({columns}) FROM STDIN (FORMAT csv)"
TMP_CREATE = "CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {table}) ON COMMIT DELETE ROWS"
# RETURNING: Citus reports rows processed, not inserted, for INSERT ... SELECT ON CONFLICT
TMP_INSERT = "INSERT INTO {table} SELECT * FROM {tmp} ON CONFLICT DO NOTHING RETURNING 1"

PUBLISH = """
INSERT INTO {schema}.uk_price
    (transaction_id, price, date_of_transfer, property_type, old_new, duration,
     ppd_category_type, postcode, paon, saon, street, locality, town_city, district, county)
SELECT transaction_unique_identifier, price::integer, date_of_transfer::date,
       property_type::"char", "Old/New"::"char", duration::"char", ppdcategory_type::"char",
       nullif(postcode, ''), nullif(paon, ''), nullif(saon, ''), nullif(street, ''),
       nullif(locality, ''), nullif("Town/City", ''), nullif(district, ''), nullif(county, '')
FROM {schema}.uk_price_raw
ON CONFLICT (transaction_id) DO NOTHING
"""

# Parsing memory follows this, not the chunk size (see load_price_paid).
PIECE_BYTES = 4 << 20

# Errors after which the chunk is retried on a new connection (a failover, a restart, a
# worker leader killed mid-COPY): the chunk's transaction was rolled back as a whole.
_RETRY_CLASSES = ("08", "40", "53", "57", "58")
_RETRY_STATES = {"25006"}
_RETRY_WORDS = ("connection", "remote node", "terminat", "shutdown", "recovery")


def _is_duplicate(err: Exception) -> bool:
    """A unique violation, also as Citus forwards it from a shard (XX000 + the shard's text)."""
    if isinstance(err, errors.UniqueViolation):
        return True
    return getattr(
        err, "sqlstate", None
    ) == "XX000" and "duplicate key value violates unique" in str(err)


def _retryable(err: Exception) -> bool:
    if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
        return True
    state = getattr(err, "sqlstate", None) or ""
    if state == "XX000":  # Citus reports a lost worker connection as an internal error
        return any(w in str(err).lower() for w in _RETRY_WORDS)
    return state[:2] in _RETRY_CLASSES or state in _RETRY_STATES


def _recover_prepared(conn: psycopg.Connection) -> None:
    """Finish two-phase commits a failover interrupted.

    When a worker leader dies between PREPARE and COMMIT PREPARED, the chunk is committed
    (the coordinator decided) and the ledger says so, but its rows on that group stay in a
    prepared transaction on the promoted standby -- invisible until Citus's recovery daemon
    runs (citus.recover_2pc_interval, 1 min). The loader does not leave that window open."""
    try:
        conn.execute("SELECT recover_prepared_transactions()")
    except psycopg.errors.InsufficientPrivilege:  # not ours to run: the daemon will do it
        pass


def _sniff(inp: InputFile) -> None:
    import csv

    from .parse import decode_line

    lines = [ln for ln in read_first_lines(inp, 20) if ln]
    records = [next(csv.reader([decode_line(ln)])) for ln in lines]
    problem = fmt.sniff_layout(records)
    if problem:
        raise LayoutError(f"{inp.name}: {problem.message}")


# By default a COPY opens up to 16 connections per worker (one per shard placement it
# writes), and a chunk's two-phase commit then prepares every one of them. One connection per
# worker per loader stream -- Citus switches it between the shards' COPYs -- means one
# PREPARE per worker group per chunk and a quarter less worker CPU: 2 M rows in 12.5 s
# instead of 16.5 s with 6 MiB chunks. Parallelism comes from the loader's streams.
LOADER_SESSION_OPTIONS = "-c citus.max_adaptive_executor_pool_size=1"


def loader_conninfo(dsn: str) -> str:
    """The DSN with the loader's session settings appended to any ``options`` it has."""
    params = conninfo_to_dict(dsn)
    params["options"] = f"{params.get('options', '')} {LOADER_SESSION_OPTIONS}".strip()
    params.setdefault("application_name", "citus-pipeline-load")
    return make_conninfo(**params)


def _bound_malloc() -> None:
    """glibc: no per-thread malloc arenas beyond two, and big buffers straight from mmap.

    Chunk-sized bytes objects made in worker threads otherwise stay in per-thread arenas
    after they are freed (measured: 511 MB peak RSS with 4 streams, 444 MB with this).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    libc.mallopt(_M_ARENA_MAX, 2)


_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


class _BackgroundSender(LibpqWriter):
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
class _ChunkResult:
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


class _ChunkWriter:
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
            self.conn = psycopg.connect(loader_conninfo(self.dsn))
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
            (sch.RAW, sql.SQL(sch.RAW_COLUMNS), raw_csv),
            (sch.TYPED, self.columns, lambda t: typed_csv(t, sch.TYPED_COLUMNS)),
        ):
            if self.target not in (name, "both"):
                continue
            dest = _tmp(name) if idempotent else sch.table(self.schema, name)
            out.append((name, sql.SQL(COPY).format(table=dest, columns=columns), render))
        return out

    def _send(self, cur: psycopg.Cursor, statement: sql.Composable, payloads) -> None:
        with cur.copy(statement, writer=_BackgroundSender(cur)) as cp:
            for payload in payloads:
                cp.write(payload)  # one piece at a time

    def write(self, fp: str, inp: InputFile, chunk: Chunk, idempotent: bool) -> _ChunkResult:
        """Parse and commit the chunk in one transaction (unless the ledger already has it)."""
        conn = self.connect()
        q = lambda s: sch.q(s, self.schema)
        res = _ChunkResult()
        parsed = (
            res.add(parse_chunk(data, line, complete=True))
            for data, line in pieces(chunk.data, chunk.first_line, self.piece_bytes)
        )
        with conn.transaction():
            cur = conn.cursor()
            key = (fp, self.target, chunk.offset)
            cur.execute(
                q(LEDGER_CLAIM), (*key, len(chunk.data), chunk.first_line, inp.name, chunk.lines)
            )
            claimed = cur.fetchone() is not None
            if not claimed:  # committed by an earlier or a concurrent load
                size, good = cur.execute(q(LEDGER_ROW), key).fetchone()
                if size == len(chunk.data):
                    return _ChunkResult(good=good, skipped=True)
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
                            table=sch.table(self.schema, name), tmp=_tmp(name)
                        )
                    )
                    res.loaded = cur.rowcount  # the last one: uk_price when the target is both
            if res.rejects:
                cur.executemany(
                    q(REJECT_INSERT), [(inp.name, fp, r.line, r.raw, r.reason) for r in res.rejects]
                )
            if claimed:
                cur.execute(
                    q(LEDGER_DONE), (res.loaded, len(res.rejects), res.good - res.loaded, *key)
                )
        return res


def load_price_paid(
    source: str | os.PathLike,
    dsn: str,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    schema: str = sch.DEFAULT_SCHEMA,
    target: Target = "uk_price_raw",
    chunk_bytes: int | None = None,
    ensure: bool = True,
    shard_count: int = 32,
    retries: int = 30,
    retry_wait: float = 2.0,
) -> LoadReport:
    """Load a file, a directory of files, or a URL (plain or gzip) into `target`.

    Every good record lands exactly once; every bad one goes to `uk_price_rejects` with its
    line number and reason; a wrong-layout file is refused up front (`LayoutError`). Safe to
    re-run after any crash: committed chunks are skipped, the rest loaded.
    """
    if target not in ("uk_price", "uk_price_raw", "both"):
        raise ValueError(f"target must be uk_price, uk_price_raw or both, not {target!r}")
    jobs = max(1, jobs or os.cpu_count() or 1)
    # A chunk is one transaction: one COPY, one two-phase commit per worker group. Bigger
    # chunks mean fewer commits (2 M rows: 6 MiB chunks 12.5 s, 12 MiB 11.7 s). Parsing goes
    # piece by piece, and a piece in flight costs ~12x its size, so memory follows the piece:
    # the loader stays under ~300 MB RSS. A re-run with another chunk size is still exact:
    # chunks the ledger does not match go through the ON CONFLICT path as duplicates.
    chunk_bytes = chunk_bytes or DEFAULT_CHUNK_BYTES
    piece_bytes = min(chunk_bytes, PIECE_BYTES if jobs <= 2 else PIECE_BYTES // 2)
    _bound_malloc()
    started = time.monotonic()
    report = LoadReport(source=str(source), target=target, jobs=jobs)
    warm = threading.Thread(target=warm_up, daemon=True)
    warm.start()
    if ensure:
        sch.ensure_schema(dsn, shard_count, schema=schema)
    inputs = resolve(source)
    for inp in inputs:
        _sniff(inp)
    report.files = len(inputs)
    total_bytes = None if any(i.is_gzip for i in inputs) else sum(i.size() for i in inputs)
    lock = threading.Lock()
    work: queue.Queue = queue.Queue(maxsize=1)
    failure: list[BaseException] = []
    stop = threading.Event()

    def emit(message: str) -> None:
        if progress:
            progress(
                ProgressEvent(
                    report.rows_read,
                    total_bytes,
                    report.bytes_read,
                    message,
                    report.rows_loaded,
                    report.rows_rejected,
                )
            )

    def tally(inp: InputFile, chunk: Chunk, result: _ChunkResult) -> None:
        with lock:
            report.chunks += 1
            report.rows_read += chunk.lines
            report.bytes_read += len(chunk.data)
            report.transcoded_lines += result.transcoded
            if result.skipped:
                report.chunks_skipped += 1
                report.rows_duplicate += result.good
                report.rows_already_loaded += result.good
            else:
                report.rows_loaded += result.loaded
                report.rows_duplicate += result.good - result.loaded
                report.rows_rejected += len(result.rejects)
            last = chunk.first_line + chunk.lines - 1
            emit(f"{inp.name}: line {last}" + (" (already loaded)" if result.skipped else ""))

    def worker() -> None:
        writer = _ChunkWriter(dsn, schema, target, piece_bytes)
        try:
            while True:
                item = work.get()
                if item is None:
                    return
                if stop.is_set():
                    continue
                fp, inp, chunk = item
                idempotent = False
                attempt = 0
                while True:
                    try:
                        result = writer.write(fp, inp, chunk, idempotent)
                        break
                    except Exception as err:
                        if _is_duplicate(err) and not idempotent:
                            idempotent = True  # ids already present: redo through ON CONFLICT
                            continue
                        if not _retryable(err) or attempt >= retries:
                            raise
                        attempt += 1
                        with lock:
                            report.retries += 1
                        writer.close()
                        time.sleep(min(retry_wait * attempt, 10.0))
                tally(inp, chunk, result)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failure.append(err)
            stop.set()
        finally:
            writer.close()

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(jobs)]
    for t in threads:
        t.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _recover_prepared(conn)  # a chunk an earlier run committed must be visible now
            for inp in inputs:
                fp = fingerprint(inp.path)
                committed = {
                    off: (size, good)
                    for off, size, good in conn.execute(
                        sch.q(LEDGER_COMMITTED, schema), (fp, target)
                    ).fetchall()
                }
                for chunk in read_chunks(inp, chunk_bytes):
                    if stop.is_set():
                        break
                    size, good = committed.get(chunk.offset, (None, 0))
                    if size == len(chunk.data):  # the same chunk as a committed one
                        tally(inp, chunk, _ChunkResult(good=good, skipped=True))
                        continue
                    while not stop.is_set():
                        try:
                            work.put((fp, inp, chunk), timeout=0.5)
                            break
                        except queue.Full:
                            continue
    finally:
        for _ in threads:
            while True:
                try:
                    work.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if all(not t.is_alive() for t in threads):
                        break
        for t in threads:
            t.join()
    if failure:
        raise failure[0]
    if report.retries:
        with psycopg.connect(dsn, autocommit=True) as conn:
            _recover_prepared(conn)
    report.seconds = time.monotonic() - started
    report.rows_per_s = report.rows_read / report.seconds if report.seconds else 0.0
    report.mb_per_s = report.bytes_read / 1e6 / report.seconds if report.seconds else 0.0
    emit("done")
    return report


def publish_uk_price(
    dsn: str,
    *,
    progress: Progress | None = None,
    schema: str = sch.DEFAULT_SCHEMA,
    analyze: bool = True,
) -> PublishReport:
    """uk_price_raw -> uk_price: every staged row not yet in uk_price, typed (idempotent).

    Rows of uk_price_raw were validated by the loader; the CHECK constraints of uk_price
    stop anything else. `ON CONFLICT DO NOTHING` makes a re-run add nothing.
    """
    started = time.monotonic()
    count = sql.SQL("SELECT count(*) FROM {}").format(sch.table(schema, sch.TYPED))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            # Citus reports rows processed, not inserted, for INSERT ... SELECT ON CONFLICT
            (before,) = conn.execute(count).fetchone()
            conn.execute(sch.q(PUBLISH, schema))
            (total,) = conn.execute(count).fetchone()
        published = total - before
        if analyze:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sch.table(schema, sch.TYPED)))
    if progress:
        progress(ProgressEvent(published, None, 0, f"published {published} rows", published, 0))
    return PublishReport(published, total, time.monotonic() - started)


__all__ = [
    "LayoutError",
    "LoadReport",
    "ProgressEvent",
    "PublishReport",
    "Reject",
    "load_price_paid",
    "publish_uk_price",
]
