"""Whether a monthly update file is in uk_price as the file says, after `apply_monthly`.

The file is read exactly as the apply reads it (`monthly.read_month_file`: the loader's parser
over the file's chunks), so a record counts here when the apply used it: rejected records are
skipped (they are in uk_price_rejects) and the last record of an id wins. Then A/C ids must be
present with the file's price and date, D ids gone; ids the apply logged as unknown and A
records for ids that already existed are counted, not failed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from .monthly import read_month_file
from .sources import fingerprint, resolve

# {transaction id: (record status, price, 'YYYY-MM-DD')}
MonthlyActions = dict[uuid.UUID, tuple[str, int, str]]

MONTHLY_VERIFY_SQL = (
    "SELECT transaction_id, price, date_of_transfer FROM {schema}.uk_price "
    "WHERE transaction_id = ANY(%s::uuid[])"
)
# What the apply recorded for this file: ids it could not change or delete (unknown) and A
# records whose id already existed (left as they were) are expected, not failures.
MONTHLY_LOGGED_SQL = (
    "SELECT transaction_id, outcome FROM {schema}.uk_price_monthly_log "
    "WHERE source_fingerprint = %s AND outcome IN ('unknown id', 'exists')"
)
VERIFY_BATCH = 5000  # ids per lookup: one bound array, one round trip per batch
COUNT_KEYS = (
    "adds",
    "changes",
    "deletes",
    "unknown_ids",
    "adds_existing",
    "missing",
    "wrong_values",
    "not_deleted",
)
# The counts that mean the table is not as the file says.
FAILURE_KEYS = ("missing", "wrong_values", "not_deleted")
_STATUS_KEY = {"A": "adds", "C": "changes", "D": "deletes"}
_ACTION_COLUMNS = ("transaction_id", "record_status", "price", "date_of_transfer")


def read_monthly_actions(path: Path) -> MonthlyActions:
    """{transaction id: (status, price, 'YYYY-MM-DD')} — the last record per id wins.

    Records the loader rejects are skipped here too (they are in uk_price_rejects).
    """
    good = read_month_file(resolve(path)[0]).good
    if good is None:
        return {}
    columns = [good[c].to_pylist() for c in _ACTION_COLUMNS]
    return {
        uuid.UUID(tid): (status, int(price), day[:10])
        for tid, status, price, day in zip(*columns, strict=True)
    }


def verify_monthly(
    conn: psycopg.Connection,
    actions: MonthlyActions,
    fingerprint: str,
    schema: str = "public",
) -> dict[str, int]:
    """Compare uk_price with the file: A/C ids present with the file's values, D ids gone;
    ids the apply logged as unknown (or A ids that already existed) are counted, not failed."""
    logged = dict(
        conn.execute(
            sql.SQL(MONTHLY_LOGGED_SQL).format(schema=sql.Identifier(schema)), (fingerprint,)
        ).fetchall()
    )
    found: dict[uuid.UUID, tuple[int, str]] = {}
    ids = list(actions)
    query = sql.SQL(MONTHLY_VERIFY_SQL).format(schema=sql.Identifier(schema))
    for i in range(0, len(ids), VERIFY_BATCH):
        for tid, price, day in conn.execute(query, (ids[i : i + VERIFY_BATCH],)).fetchall():
            found[tid] = (int(price), str(day)[:10])
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for tid, (status, price, day) in actions.items():
        key = _STATUS_KEY.get(status)
        if key is None:
            continue
        counts[key] += 1
        outcome = logged.get(tid)
        if outcome == "unknown id":
            counts["unknown_ids"] += 1
            counts["not_deleted"] += status == "D" and tid in found
        elif status == "D":
            counts["not_deleted"] += tid in found
        elif tid not in found:
            counts["missing"] += 1
        elif outcome != "exists" and found[tid] != (price, day):
            counts["wrong_values"] += 1
        elif outcome == "exists":
            counts["adds_existing"] += 1
    return counts


def verify_monthly_file(conn: psycopg.Connection, path: Path, schema: str = "public") -> dict:
    """`verify_monthly` for the update file at ``path`` (read and fingerprinted here)."""
    return verify_monthly(conn, read_monthly_actions(path), fingerprint(path), schema)


def records_not_as_the_file_says(counts: dict[str, int]) -> int:
    return sum(counts[k] for k in FAILURE_KEYS)


__all__ = [
    "FAILURE_KEYS",
    "MonthlyActions",
    "read_monthly_actions",
    "records_not_as_the_file_says",
    "verify_monthly",
    "verify_monthly_file",
]
