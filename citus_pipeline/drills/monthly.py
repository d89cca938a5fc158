"""A leader killed while a monthly file is applied, then the same file applied again: the
table must hold none of the file after the kill (never a part), and exactly the next
complete file after the rerun (the apply is one transaction per file, logged once)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import psycopg

from ..cluster import failover
from ..cluster.citus_meta import recover_prepared_transactions
from ..cluster.topology import ClusterBackend
from ..data import apply_monthly, drop_all, load_price_paid
from ..data import schema as sch
from ..data.generate import generate_complete, generate_monthly
from ..waiting import until
from .injector import KILL, FaultInjector
from .kill import kill_leader
from .ready import MID_FAULT
from .scenario import FaultRun, Scenario

MONTHLY_SCHEMA = "fault_monthly"
MONTHLY_BASE_ROWS = 200_000
MONTHLY_ROWS = 60_000  # A/C/D records: the apply's statements run for a few seconds
# The apply's first A/C/D statement, waiting for the lock the scenario holds on uk_price.
APPLYING_SQL = """
SELECT left(query, 60) FROM pg_catalog.pg_stat_activity
WHERE state = 'active' AND wait_event_type = 'Lock' AND query ~ %s
"""


def _seed_monthly(dsn: str, work: Path) -> tuple[Path, tuple[int, int], tuple[int, int]]:
    """A base table and a monthly file, and the checksums of ``uk_price`` before and after
    the file (the latter from the next complete file, loaded into a schema of its own)."""
    base, month, nxt = work / "base.csv", work / "pp-2025-01.csv", work / "next.csv"
    generate_complete(base, MONTHLY_BASE_ROWS, seed=41)
    generate_monthly(month, base, MONTHLY_ROWS, seed=42, unknown=5, expected_out=nxt)
    sums = []
    for schema, source in ((MONTHLY_SCHEMA + "_next", nxt), (MONTHLY_SCHEMA, base)):
        drop_all(dsn, schema=schema)
        load_price_paid(source, dsn, schema=schema, target="uk_price")
        with psycopg.connect(dsn) as conn:
            sums.append(sch.checksum(conn, schema))
    drop_all(dsn, schema=MONTHLY_SCHEMA + "_next")
    return month, sums[1], sums[0]


def monthly_interrupted(c: ClusterBackend, f: FaultInjector, group: int) -> FaultRun:
    """A monthly file applied while kill -9 takes ``group``'s leader in the middle of the
    apply: its stage copied and its outcomes read, its first A/C/D statement under way
    (held there by a SHARE lock on uk_price, so the kill always lands at that point); then
    what an operator does: the same file applied again."""
    dsn = c.coordinator_dsn()
    with tempfile.TemporaryDirectory(prefix="citus-pipeline-faults-") as tmp:
        month, before, after = _seed_monthly(dsn, Path(tmp))
        first: dict[str, object] = {}

        def apply() -> None:
            try:
                first["report"] = apply_monthly(month, dsn, schema=MONTHLY_SCHEMA)
            except Exception as err:  # noqa: BLE001 - reported, then the file is applied again
                first["error"] = err

        holder = psycopg.connect(dsn)
        holder.execute(sch.q("LOCK TABLE {schema}.uk_price IN SHARE MODE", MONTHLY_SCHEMA))
        applier = threading.Thread(target=apply, daemon=True)
        applier.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            pattern = rf'^\s*(DELETE FROM|UPDATE|INSERT INTO) "{MONTHLY_SCHEMA}"\.uk_price\M'
            statement = until(
                lambda: conn.execute(APPLYING_SQL, (pattern,)).fetchone(),
                120,
                what="the monthly apply's first A/C/D statement",
                ignore=MID_FAULT,
            )[0]
        try:
            killed = kill_leader(c, f, group)
        finally:
            try:
                holder.close()  # the lock goes with the session (or went with the coordinator)
            except psycopg.Error:
                pass
        applier.join(300)
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            recover_prepared_transactions(conn)
            between = sch.checksum(conn, MONTHLY_SCHEMA)
        rerun = failover.retry(
            lambda: apply_monthly(month, c.coordinator_dsn(), schema=MONTHLY_SCHEMA),
            what="the monthly apply's rerun",
            attempts=10,
            base_seconds=2.0,
        )
        with psycopg.connect(c.coordinator_dsn(), autocommit=True) as conn:
            final = sch.checksum(conn, MONTHLY_SCHEMA)
            logged = conn.execute(
                sch.q("SELECT count(*) FROM {schema}.uk_price_monthly_log", MONTHLY_SCHEMA)
            ).fetchone()[0]
    state = {before: "none", after: "all"}.get(between, "a part")
    outcome = (
        (
            failover.type_and_first_line(first["error"])
            if "error" in first
            else f"finished in {first['report'].seconds:.1f} s"
        )
        if first
        else "still running"
    )
    detail = (
        f"{killed.detail} during `{' '.join(statement.split())}`...; first apply: {outcome}; "
        f"then {state} of the file applied; rerun applied {rerun.applied} "
        f"({rerun.files_already_applied} file already logged), {logged} records logged; "
        f"uk_price {'equals' if final == after else 'DIFFERS FROM'} the next complete file"
    )
    return FaultRun(killed.started, killed.ended, detail, killed.failover_s, killed.registered_s)


SCENARIOS = (
    Scenario(
        "kill-coordinator-mid-monthly",
        "a monthly file applied, kill -9 of the coordinator's leader mid-apply, applied again",
        lambda c, f: monthly_interrupted(c, f, 0),
        (KILL,),
    ),
    Scenario(
        "kill-worker-mid-monthly",
        "a monthly file applied, kill -9 of group 1's leader mid-apply, applied again",
        lambda c, f: monthly_interrupted(c, f, 1),
        (KILL,),
    ),
)

__all__ = ["MONTHLY_SCHEMA", "SCENARIOS", "monthly_interrupted"]
