"""The loader: Price Paid files -> validated rows in Citus, exactly once, N streams at a time.

One reader (the calling thread) cuts each input into record-aligned chunks
(`sources.read_chunks`) and hands them to N writer threads, each with its own connection,
which parse, validate and commit a chunk in one transaction (`chunk_writer`). A re-run skips
the chunks the ledger names and redoes the rest, so a load killed at any moment is finished
by running it again. A chunk that fails on a failover is retried on a new connection; that
per-chunk retry is the only retry layer of a load (callers do not wrap it in another).

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

import psycopg
from pydantic import BaseModel

from ..cluster import failover
from ..cluster.citus_meta import recover_prepared_transactions
from . import schema as sch
from .chunk_writer import (
    LEDGER_COMMITTED,
    TARGETS,
    ChunkResult,
    ChunkWriter,
    Target,
)
from .deferred_index import indexes_after_bulk_write
from .file_shape import check_file_shape
from .parse import warm_up
from .progress import Progress, ProgressEvent
from .sources import DEFAULT_CHUNK_BYTES, Chunk, InputFile, fingerprint, read_chunks, resolve

# Parsing memory follows this, not the chunk size (see load_price_paid).
PIECE_BYTES = 4 << 20


class LoadReport(BaseModel):
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
    errors: list[str] = []


def _bound_malloc(chunk_bytes: int) -> None:
    """glibc: no per-thread malloc arenas beyond two, and freed buffers kept for reuse.

    Chunk-sized bytes objects made in worker threads otherwise stay in per-thread arenas
    after they are freed (measured: 511 MB peak RSS with 4 streams, 444 MB with two arenas).
    Buffers up to a chunk's size (the chunk, its 4 MiB pieces, their encodings) come from
    the heap, which keeps twice that free at its top instead of handing it back: with the
    1 MiB mmap threshold used before, every such buffer was fresh pages the kernel had to
    zero and fault in, 1.50 M minor faults and 3.5-4.3 s of system time per 4 M rows (12 MiB
    chunks); with a 16 MiB threshold 0.21 M faults and 1.1 s, for ~70 MB more peak RSS (still
    flat in the file size). glibc caps the threshold at 32 MiB: bigger chunks are mmapped.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    threshold = min(max(16 << 20, chunk_bytes + (4 << 20)), 32 << 20)
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold)
    libc.mallopt(_M_ARENA_MAX, 2)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


class _Load:
    """One run of :func:`load_price_paid`: the report, the work queue and N writer threads."""

    def __init__(
        self,
        dsn: str,
        report: LoadReport,
        *,
        schema: str,
        target: Target,
        chunk_bytes: int,
        piece_bytes: int,
        retries: int,
        retry_wait: float,
        progress: Progress | None,
    ) -> None:
        self.dsn = dsn
        self.report = report
        self.schema = schema
        self.target = target
        self.chunk_bytes = chunk_bytes
        self.piece_bytes = piece_bytes
        self.retries = retries
        self.retry_wait = retry_wait
        self.progress = progress
        self.total_bytes: int | None = None
        self.lock = threading.Lock()
        self.work: queue.Queue = queue.Queue(maxsize=1)
        self.failure: list[BaseException] = []
        self.stop = threading.Event()

    # ---- the calling thread: read, hand out, collect ----------------------------------
    def run(self, inputs: list[InputFile]) -> LoadReport:
        self.total_bytes = None if any(i.is_gzip for i in inputs) else sum(i.size() for i in inputs)
        threads = [
            threading.Thread(target=self._writer_thread, name=f"load-{i}", daemon=True)
            for i in range(self.report.jobs)
        ]
        for t in threads:
            t.start()
        try:
            self._read(inputs)
        finally:
            self._stop_writers(threads)
        if self.failure:
            raise self.failure[0]
        if self.report.retries:  # a chunk retried after a failover must be visible now
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                recover_prepared_transactions(conn)
        return self.report

    def _read(self, inputs: list[InputFile]) -> None:
        """Every chunk of every input: tallied at once if the ledger has it, else queued."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # a chunk an earlier run committed must be visible before we compare counts
            recover_prepared_transactions(conn)
            for inp in inputs:
                fp = fingerprint(inp.path)
                committed = {
                    off: (size, good)
                    for off, size, good in conn.execute(
                        sch.q(LEDGER_COMMITTED, self.schema), (fp, self.target)
                    ).fetchall()
                }
                for chunk in read_chunks(inp, self.chunk_bytes):
                    if self.stop.is_set():
                        return
                    size, good = committed.get(chunk.offset, (None, 0))
                    if size == len(chunk.data):  # the same chunk as a committed one
                        self._tally(inp, chunk, ChunkResult(good=good, skipped=True))
                    elif not self._enqueue((fp, inp, chunk)):
                        return

    def _enqueue(self, item: object) -> bool:
        """Queue one chunk; False when a writer failed and the load stops."""
        while not self.stop.is_set():
            try:
                self.work.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _stop_writers(self, threads: list[threading.Thread]) -> None:
        for _ in threads:
            while True:
                try:
                    self.work.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if all(not t.is_alive() for t in threads):
                        break
        for t in threads:
            t.join()

    # ---- the writer threads --------------------------------------------------------
    def _writer_thread(self) -> None:
        writer = ChunkWriter(self.dsn, self.schema, self.target, self.piece_bytes)
        try:
            while (item := self.work.get()) is not None:
                if self.stop.is_set():
                    continue  # drain: the main thread is stopping
                fp, inp, chunk = item
                self._tally(inp, chunk, self._write(writer, fp, inp, chunk))
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            self.failure.append(err)
            self.stop.set()
        finally:
            writer.close()

    def _write(self, writer: ChunkWriter, fp: str, inp: InputFile, chunk: Chunk) -> ChunkResult:
        """Commit one chunk, retried on a new connection after a failover error (the chunk's
        transaction was rolled back whole); ids already present switch it to ON CONFLICT."""
        idempotent = False

        def attempt() -> ChunkResult:
            nonlocal idempotent
            try:
                return writer.write(fp, inp, chunk, idempotent)
            except Exception as err:
                if idempotent or not failover.is_duplicate(err):
                    raise
            idempotent = True  # ids already present: redo through ON CONFLICT
            return writer.write(fp, inp, chunk, idempotent)

        def reconnect(_err: BaseException) -> None:
            with self.lock:
                self.report.retries += 1
            writer.close()

        return failover.retry(
            attempt,
            what=f"load {inp.name} line {chunk.first_line}",
            attempts=self.retries + 1,
            base_seconds=self.retry_wait,
            max_seconds=10.0,
            before_retry=reconnect,
        )

    # ---- the report ----------------------------------------------------------------
    def _tally(self, inp: InputFile, chunk: Chunk, result: ChunkResult) -> None:
        r = self.report
        with self.lock:
            r.chunks += 1
            r.rows_read += chunk.lines
            r.bytes_read += len(chunk.data)
            r.transcoded_lines += result.transcoded
            if result.skipped:
                r.chunks_skipped += 1
                r.rows_duplicate += result.good
                r.rows_already_loaded += result.good
            else:
                r.rows_loaded += result.loaded
                r.rows_duplicate += result.good - result.loaded
                r.rows_rejected += len(result.rejects)
            last = chunk.first_line + chunk.lines - 1
            self.emit(f"{inp.name}: line {last}" + (" (already loaded)" if result.skipped else ""))

    def emit(self, message: str) -> None:
        if self.progress:
            r = self.report
            self.progress(
                ProgressEvent(
                    r.rows_read,
                    self.total_bytes,
                    r.bytes_read,
                    message,
                    r.rows_loaded,
                    r.rows_rejected,
                )
            )


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
    line number and reason; a file of another shape is refused up front (`FileShapeError`). Safe to
    re-run after any crash: committed chunks are skipped, the rest loaded. A chunk that keeps
    failing over past ``retries`` raises `FailoverRetriesExhausted`.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be uk_price, uk_price_raw or both, not {target!r}")
    jobs = max(1, jobs or os.cpu_count() or 1)
    # A chunk is one transaction: one COPY, one two-phase commit per worker group (each a
    # wait for the synchronous standbys) and one rollup upsert. Bigger chunks mean fewer of
    # them (2 M rows: 6 MiB chunks 12.5 s, 12 MiB 11.7 s; 4 M rows into an empty uk_price:
    # 12 MiB 23.0-23.6 s, 24 MiB 18.4-20.5 s, 48 MiB 18.4 s). Parsing goes piece by piece,
    # and a piece in flight costs ~12x its size, so memory follows the piece and the chunk:
    # the loader stays under ~550 MB RSS. A re-run with another chunk size is still exact:
    # chunks the ledger does not match go through the ON CONFLICT path as duplicates.
    chunk_bytes = chunk_bytes or DEFAULT_CHUNK_BYTES
    piece_bytes = min(chunk_bytes, PIECE_BYTES if jobs <= 2 else PIECE_BYTES // 2)
    _bound_malloc(chunk_bytes)
    started = time.monotonic()
    report = LoadReport(source=str(source), target=target, jobs=jobs)
    threading.Thread(target=warm_up, daemon=True).start()
    if ensure:
        # DDL reaches every worker group: a group failing over must cost a wait, not the load.
        failover.retry(
            lambda: sch.ensure_schema(dsn, shard_count, schema=schema),
            what="ensure schema",
            attempts=retries + 1,
            base_seconds=retry_wait,
            max_seconds=10.0,
        )
    inputs = resolve(source)
    for inp in inputs:
        check_file_shape(inp)
    report.files = len(inputs)
    load = _Load(
        dsn,
        report,
        schema=schema,
        target=target,
        chunk_bytes=chunk_bytes,
        piece_bytes=piece_bytes,
        retries=retries,
        retry_wait=retry_wait,
        progress=progress,
    )
    if target == sch.RAW:
        load.run(inputs)
    else:
        with indexes_after_bulk_write(
            dsn, schema, primary_key=True, attempts=retries + 1, retry_wait=retry_wait
        ) as bulk:
            load.run(inputs)
        # Ids the file holds twice, stored twice while the primary key was deferred: one
        # row of each stays, as when the key refuses them chunk by chunk.
        report.rows_loaded -= bulk.duplicates_removed
        report.rows_duplicate += bulk.duplicates_removed
    report.seconds = time.monotonic() - started
    report.rows_per_s = report.rows_read / report.seconds if report.seconds else 0.0
    report.mb_per_s = report.bytes_read / 1e6 / report.seconds if report.seconds else 0.0
    load.emit("done")
    return report


__all__ = ["LoadReport", "Target", "load_price_paid"]
