"""Monthly update files applied to uk_price: A inserts, C replaces, D deletes — exactly once.

The whole file is applied in ONE transaction: its validated records are copied into
`uk_price_monthly_stage` (distributed and co-located with uk_price, so each statement
below runs shard by shard on the workers, joined on the distribution column), then

  outcomes  LEFT JOIN stage -> uk_price: which C/D ids are unknown, which A ids exist
  D         DELETE ... USING stage
  C         UPDATE ... FROM stage          (a C for an unknown id is logged, not inserted)
  A         INSERT ... SELECT ... ON CONFLICT DO NOTHING

and every record's outcome goes to `uk_price_monthly_log` keyed by (file fingerprint,
line). The rollup (`data.rollup`) follows in the same transaction. A file whose fingerprint is in the log is not applied again, so applying the same
file twice changes nothing. An id that occurs more than once in one file: its last record
wins, the earlier ones are logged as superseded. If uk_price_raw holds rows (the staging
path of the pipeline), the same changes are mirrored there so a later publish stays exact.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql
from pydantic import BaseModel, computed_field

from ..cluster.citus_meta import recover_prepared_transactions
from . import binary_copy, rollup
from . import schema as sch
from .deferred_index import build_missing
from .file_shape import check_file_shape
from .parse import parse_chunk
from .progress import Progress, ProgressEvent
from .sources import InputFile, fingerprint, read_chunks, resolve


class MonthlyReport(BaseModel):
    source: str
    rows_read: int = 0
    rows_rejected: int = 0
    adds: int = 0
    changes: int = 0
    deletes: int = 0
    adds_existing: int = 0  # A records whose id was already present (left unchanged)
    unknown_changes: int = 0
    unknown_deletes: int = 0
    superseded: int = 0
    files_already_applied: int = 0
    seconds: float = 0.0
    unknown_ids: list[str] = []  # first 1000

    @computed_field
    @property
    def applied(self) -> int:
        return self.adds + self.changes + self.deletes


LOCK = "SELECT pg_advisory_xact_lock(hashtext('uk_price_monthly:' || %s))"
ALREADY = "SELECT count(*) FROM {schema}.uk_price_monthly_log WHERE source_fingerprint = %s"
STAGE_COLUMNS = ("source_fingerprint", "line_number", "record_status") + sch.TYPED_COLUMNS
OUTCOMES = """
SELECT s.line_number, s.record_status, s.transaction_id::text, u.transaction_id IS NOT NULL
FROM {schema}.uk_price_monthly_stage s
LEFT JOIN {schema}.uk_price u ON u.transaction_id = s.transaction_id
WHERE s.source_fingerprint = %s
"""
APPLY_D = """
DELETE FROM {schema}.uk_price u USING {schema}.uk_price_monthly_stage s
WHERE u.transaction_id = s.transaction_id AND s.source_fingerprint = %s AND s.record_status = 'D'
"""
_SET = ", ".join(f"{c} = s.{c}" for c in sch.TYPED_COLUMNS[1:])
APPLY_C = (
    "UPDATE {schema}.uk_price u SET " + _SET + " FROM {schema}.uk_price_monthly_stage s "
    "WHERE u.transaction_id = s.transaction_id AND s.source_fingerprint = %s AND s.record_status = 'C'"
)
_COLS = ", ".join(sch.TYPED_COLUMNS)
APPLY_A = (
    "INSERT INTO {schema}.uk_price ("
    + _COLS
    + ") SELECT "
    + _COLS
    + " FROM {schema}.uk_price_monthly_stage s WHERE s.source_fingerprint = %s AND s.record_status = 'A'"
    " ON CONFLICT (transaction_id) DO NOTHING"
)
CLEAR_STAGE = "DELETE FROM {schema}.uk_price_monthly_stage WHERE source_fingerprint = %s"
RAW_IN_USE = "SELECT EXISTS (SELECT 1 FROM {schema}.uk_price_raw)"
TMP = """
CREATE TEMP TABLE monthly_tmp (
    source_fingerprint text, line_number bigint, record_status "char", LIKE {schema}.uk_price
) ON COMMIT DROP
"""
_RAW_VALUES = (
    "t.price::text, t.date_of_transfer::timestamp, coalesce(t.postcode, ''), t.property_type::text, "
    "t.old_new::text, t.duration::text, coalesce(t.paon, ''), coalesce(t.saon, ''), "
    "coalesce(t.street, ''), coalesce(t.locality, ''), coalesce(t.town_city, ''), "
    "coalesce(t.district, ''), coalesce(t.county, ''), t.ppd_category_type::text, 'A'"
)
# uk_price_raw is co-located with the stage: these run shard by shard on the workers too.
_RAW_FROM_STAGE = (
    "{schema}.uk_price_monthly_stage t WHERE t.source_fingerprint = %s AND t.record_status = "
)
RAW_D = (
    "DELETE FROM {schema}.uk_price_raw r USING "
    + _RAW_FROM_STAGE
    + "'D' AND r.transaction_unique_identifier = t.transaction_id"
)
RAW_C = (
    "UPDATE {schema}.uk_price_raw r SET ("
    + sch.RAW_COLUMNS.split(", ", 1)[1]
    + ") = ("
    + _RAW_VALUES
    + ") FROM "
    + _RAW_FROM_STAGE
    + "'C' AND r.transaction_unique_identifier = t.transaction_id"
)
RAW_A = (
    "INSERT INTO {schema}.uk_price_raw ("
    + sch.RAW_COLUMNS
    + ") SELECT t.transaction_id, "
    + _RAW_VALUES
    + " FROM "
    + _RAW_FROM_STAGE
    + "'A' ON CONFLICT DO NOTHING"
)
LOG_COPY = (
    "COPY {schema}.uk_price_monthly_log "
    "(source_fingerprint, line_number, transaction_id, record_status, outcome, source) FROM STDIN"
)


def _stage_rows(fp: str, t: pa.Table, lines: np.ndarray) -> bytes:
    """The month's good records as one binary COPY of monthly_tmp: each row led by the
    file's fingerprint, the record's line and its status."""
    lead = (
        binary_copy.text_fields(pa.repeat(pa.scalar(fp), t.num_rows), empty_is_null=False),
        [binary_copy.int8_field(lines.astype(np.int64))],
        [binary_copy.char_field(t["record_status"])],
    )
    return binary_copy.SIGNATURE + bytes(binary_copy.typed_rows(t, lead)) + binary_copy.TRAILER


@dataclass
class MonthFile:
    """One update file as the apply sees it: its good records (the last one per id), the
    line of each, the records an id's later record superseded, and the rejects."""

    good: pa.Table | None
    lines: np.ndarray
    superseded: list[tuple[int, str, str, int]]  # (line, id, status, line of the winner)
    rejects: list
    rows_read: int


def read_month_file(inp: InputFile) -> MonthFile:
    """Parse an update file with the loader's parser; the last record of an id wins."""
    tables, line_arrays, rejects = [], [], []
    rows_read = 0
    for chunk in read_chunks(inp):
        parsed = parse_chunk(chunk.data, chunk.first_line, complete=False)
        rows_read += parsed.lines
        tables.append(parsed.good)
        line_arrays.append(parsed.good_lines)
        rejects.extend(parsed.rejects)
    good = pa.concat_tables(tables) if tables else None
    lines = np.concatenate(line_arrays) if line_arrays else np.zeros(0, np.int64)
    superseded: list[tuple[int, str, str, int]] = []
    if good is not None and good.num_rows:
        ids = good["transaction_id"].to_pylist()
        last = {tid.lower(): i for i, tid in enumerate(ids)}
        keep = np.zeros(len(ids), dtype=bool)
        keep[list(last.values())] = True
        status = good["record_status"].to_pylist()
        for i in np.flatnonzero(~keep):
            winner = int(lines[last[ids[i].lower()]])
            superseded.append((int(lines[i]), ids[i], status[i], winner))
        good = good.filter(pa.array(keep))
        lines = lines[keep]
    return MonthFile(good, lines, superseded, rejects, rows_read)


def _outcome(status: str, known: bool, report: MonthlyReport) -> str:
    """What the apply does with one record, counted in the report."""
    if status == "A":
        report.adds_existing += known
        report.adds += not known
        return "exists" if known else "inserted"
    if status == "C":
        report.changes += known
        report.unknown_changes += not known
        return "changed" if known else "unknown id"
    report.deletes += known
    report.unknown_deletes += not known
    return "deleted" if known else "unknown id"


def _apply_records(
    cur: psycopg.Cursor, schema: str, fp: str, month: MonthFile, report: MonthlyReport
) -> list[tuple[int, str, str, str]]:
    """Stage the file's good records, apply D, C and A to uk_price (and uk_price_raw while
    it is in use); returns each record's (line, id, status, outcome)."""
    Q = lambda s: sch.q(s, schema)
    cur.execute(Q(TMP))
    with cur.copy(sql.SQL("COPY monthly_tmp FROM STDIN (FORMAT binary)")) as cp:
        cp.write(_stage_rows(fp, month.good, month.lines))
    cur.execute(Q(CLEAR_STAGE), (fp,))
    cur.execute(Q("INSERT INTO {schema}.uk_price_monthly_stage SELECT * FROM monthly_tmp"))
    outcomes = []
    for line, st, tid, known in cur.execute(Q(OUTCOMES), (fp,)).fetchall():
        tid = "{" + tid.upper() + "}"
        outcomes.append((line, tid, st, _outcome(st, known, report)))
        if not known and st != "A" and len(report.unknown_ids) < 1000:
            report.unknown_ids.append(tid)
    # the rollup: every staged id's row as it was out, the rows C and A leave in
    for stmt in (rollup.MONTHLY_BEFORE, APPLY_D, APPLY_C, APPLY_A, rollup.MONTHLY_AFTER):
        cur.execute(Q(stmt), (fp,))
    cur.execute(Q(rollup.DROP_EMPTY))
    (raw_in_use,) = cur.execute(Q(RAW_IN_USE)).fetchone()
    if raw_in_use:
        for stmt in (RAW_D, RAW_C, RAW_A):
            cur.execute(Q(stmt), (fp,))
    cur.execute(Q(CLEAR_STAGE), (fp,))
    return outcomes


def _apply_file(dsn: str, schema: str, inp: InputFile, report: MonthlyReport) -> None:
    """One file in ONE transaction; a file already in the log changes nothing."""
    fp = fingerprint(inp.path)
    month = read_month_file(inp)
    report.rows_read += month.rows_read
    with psycopg.connect(dsn) as conn, conn.transaction():
        cur = conn.cursor()
        cur.execute(LOCK, (fp,))
        (n_logged,) = cur.execute(sch.q(ALREADY, schema), (fp,)).fetchone()
        if n_logged:
            report.files_already_applied += 1
            return
        outcomes = []
        if month.good is not None and month.good.num_rows:
            outcomes = _apply_records(cur, schema, fp, month, report)
        for line, tid, st, winner in month.superseded:
            outcomes.append((line, tid, st, f"superseded by line {winner}"))
            report.superseded += 1
        sch.insert_rejects(cur, schema, inp.name, fp, month.rejects)
        # a file with no good records is still logged (as applied) through a marker row
        if not outcomes:
            outcomes.append((0, "{00000000-0000-0000-0000-000000000000}", "A", "no good records"))
        with cur.copy(sch.q(LOG_COPY, schema)) as cp:
            for line, tid, st, outcome in outcomes:
                cp.write_row((fp, line, tid, st, outcome, inp.name))
    report.rows_rejected += len(month.rejects)


def apply_monthly(
    source: str | os.PathLike,
    dsn: str,
    *,
    progress: Progress | None = None,
    schema: str = sch.DEFAULT_SCHEMA,
    shard_count: int = 32,
    ensure: bool = True,
) -> MonthlyReport:
    """Apply a monthly update file (or every file of a directory, in name order) to uk_price."""
    started = time.monotonic()
    report = MonthlyReport(source=str(source))
    if ensure:
        sch.ensure_schema(dsn, shard_count, schema=schema)
    sch.ensure_monthly_stage(dsn, schema=schema)
    # Its upserts need uk_price's primary key, which a killed first load may have left unbuilt.
    build_missing(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A file whose commit a failover interrupted is in the log (a table on the
        # coordinator) but may still sit prepared on a worker: finish it before skipping it.
        recover_prepared_transactions(conn)
    inputs = resolve(source)
    for inp in inputs:
        check_file_shape(inp)
    for inp in inputs:
        already = report.files_already_applied
        _apply_file(dsn, schema, inp, report)
        if progress and report.files_already_applied == already:
            progress(
                ProgressEvent(
                    report.rows_read,
                    None,
                    0,
                    f"applied {inp.name}",
                    report.applied,
                    report.rows_rejected,
                )
            )
    report.seconds = time.monotonic() - started
    return report


__all__ = ["MonthFile", "MonthlyReport", "apply_monthly", "read_month_file"]
