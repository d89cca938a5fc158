"""Asset checks: one question each, answered from the coordinator.

- counts: every good raw row is in `uk_price` (blocking).
- quality: codes in their domains, no null id/price/date, no price <= 0 (blocking).
- rollup: uk_price_rollup equals a GROUP BY over uk_price (its answers are exact).
- balance: after a rebalance, bytes per worker within 1.2x and no active worker empty.
- query timing: the reference query on uk_price and the four questions as the rollup
  answers them, 5 runs each; WARN over the SLO or when slower than 1.5x the median of
  the previous 5 evaluations.
"""

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import psycopg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)

from ...cluster.citus_meta import fetch_active_worker_groups, node_bytes
from ...data import rollup
from ...data.queries import REFERENCE_QUERY, UK_PRICE_QUERIES, time_queries
from .assets import uk_price, uk_price_rebalanced
from .resources import CitusResource

# What a check asked of the coordinator found: passed, metadata, the description if it failed.
Answer = tuple[bool, dict[str, dg.MetadataValue], str | None]


def coordinator_check(
    asset: dg.AssetsDefinition, name: str, *, blocking: bool = False
) -> Callable[[Callable[[CitusResource, psycopg.Connection], Answer]], dg.AssetChecksDefinition]:
    """An ERROR-severity asset check on ``asset`` whose decorated ``answer(citus, conn)`` asks
    the coordinator its one question (its docstring is the check's description); the seconds
    the connection took join its metadata as ``sql_seconds``."""

    def decorate(
        answer: Callable[[CitusResource, psycopg.Connection], Answer],
    ) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=asset, name=name, blocking=blocking, description=inspect.getdoc(answer)
        )
        def check(citus: CitusResource) -> dg.AssetCheckResult:
            t0 = time.perf_counter()
            with citus.connection() as conn:
                passed, metadata, failure = answer(citus, conn)
            metadata["sql_seconds"] = dg.MetadataValue.float(round(time.perf_counter() - t0, 4))
            return dg.AssetCheckResult(
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=metadata,
                description=failure,
            )

        return check

    return decorate


# ---- counts ---------------------------------------------------------------------------
# Good raw rows: uk_price_raw rows (validated by the loader, one per id: its primary key)
# that no applied monthly update deleted; every one of them must be in uk_price. Both
# tables hold one row per id, so equal counts mean nothing lost and nothing doubled.
ROW_COUNTS_SQL = """
SELECT (SELECT count(*) FROM uk_price_raw) AS raw_rows,
       (SELECT count(*) FROM uk_price) AS table_rows
"""


def evaluate_counts(raw_rows: int, table_rows: int) -> tuple[bool, dict]:
    return table_rows == raw_rows, {
        "good_raw_rows": dg.MetadataValue.int(raw_rows),
        "uk_price_rows": dg.MetadataValue.int(table_rows),
        "difference": dg.MetadataValue.int(table_rows - raw_rows),
    }


@coordinator_check(uk_price, "counts", blocking=True)
def uk_price_counts(citus: CitusResource, conn: psycopg.Connection) -> Answer:
    """Every good raw row is in uk_price (no loss, no duplicates)."""
    raw_rows, table_rows = conn.execute(ROW_COUNTS_SQL).fetchone()
    # apply_monthly applies each month's A/C/D to uk_price_raw as well while it is in use,
    # so raw and uk_price stay equal without a monthly correction.
    passed, metadata = evaluate_counts(int(raw_rows), int(table_rows))
    return (
        passed,
        metadata,
        (None if passed else f"uk_price has {table_rows:,} rows, expected {raw_rows:,}"),
    )


# ---- quality --------------------------------------------------------------------------
def quality_sql() -> tuple[str, dict[str, list[str]]]:
    """One pass over uk_price counting every kind of bad value; code sets bound as params."""
    from ...data.format import CODE_SETS

    parts = [
        "count(*) FILTER (WHERE transaction_id IS NULL) AS null_id",
        "count(*) FILTER (WHERE price IS NULL) AS null_price",
        "count(*) FILTER (WHERE date_of_transfer IS NULL) AS null_date",
        "count(*) FILTER (WHERE price <= 0) AS price_not_positive",
    ]
    params: dict[str, list[str]] = {}
    for col, codes in CODE_SETS.items():
        if col == "record_status":
            continue  # uk_price holds the current state; the status lives in the update files
        parts.append(
            f"count(*) FILTER (WHERE {col}::text IS NULL OR NOT ({col}::text = ANY(%({col})s))) "
            f"AS bad_{col}"
        )
        params[col] = list(codes)
    return "SELECT " + ",\n       ".join(parts) + "\nFROM uk_price", params


@coordinator_check(uk_price, "quality", blocking=True)
def uk_price_quality(citus: CitusResource, conn: psycopg.Connection) -> Answer:
    """Codes in their domains, no null id/price/date, no price <= 0."""
    cur = conn.execute(*quality_sql())
    row = cur.fetchone()
    faults = {d.name: int(v) for d, v in zip(cur.description, row)}
    bad = {n: v for n, v in faults.items() if v}
    return (
        not bad,
        {n: dg.MetadataValue.int(v) for n, v in faults.items()},
        "bad values: " + ", ".join(f"{n}={v}" for n, v in bad.items()) if bad else None,
    )


# ---- rollup ---------------------------------------------------------------------------
@coordinator_check(uk_price, "rollup")
def uk_price_rollup_in_step(citus: CitusResource, conn: psycopg.Connection) -> Answer:
    """uk_price_rollup holds uk_price's sales and price sums per key (exact answers)."""
    bad = rollup.mismatches(conn, citus.checked_schema())
    (keys,) = conn.execute("SELECT count(*) FROM uk_price_rollup").fetchone()
    return (
        bad == 0,
        {
            "rollup_keys": dg.MetadataValue.int(int(keys)),
            "keys_not_in_step": dg.MetadataValue.int(int(bad)),
        },
        None if bad == 0 else f"{bad} rollup keys differ from uk_price: run data.rollup.rebuild",
    )


# ---- balance --------------------------------------------------------------------------
@dataclass(frozen=True)
class BalanceVerdict:
    passed: bool
    ratio: float
    empty_groups: tuple[int, ...]
    reason: str | None


def evaluate_balance(
    nodes: dict[int, dict[str, int]], active_groups: list[int], max_ratio: float = 1.2
) -> BalanceVerdict:
    """max/min bytes over the active worker groups must be <= max_ratio, none may be empty."""
    held = {g: nodes.get(g, {"shards": 0, "bytes": 0}) for g in active_groups}
    empty = tuple(sorted(g for g, v in held.items() if v["shards"] == 0))
    sizes = [v["bytes"] for v in held.values()]
    if not sizes:
        return BalanceVerdict(False, float("inf"), (), "no active worker groups")
    ratio = max(sizes) / min(sizes) if min(sizes) > 0 else float("inf")
    reasons = []
    if empty:
        reasons.append(f"worker groups {list(empty)} hold no shards")
    if ratio > max_ratio:
        reasons.append(f"max/min bytes per worker {ratio:.2f} > {max_ratio}")
    return BalanceVerdict(not reasons, ratio, empty, "; ".join(reasons) or None)


@coordinator_check(uk_price_rebalanced, "balance", blocking=True)
def uk_price_balance(citus: CitusResource, conn: psycopg.Connection) -> Answer:
    """Bytes per worker within 1.2x (max/min) and every active worker holds shards."""
    nodes = node_bytes(conn)
    active = fetch_active_worker_groups(conn)
    verdict = evaluate_balance(nodes, active)
    metadata: dict[str, dg.MetadataValue] = {
        "max_min_ratio": dg.MetadataValue.float(
            round(verdict.ratio, 4) if verdict.ratio != float("inf") else -1.0
        ),
        "active_workers": dg.MetadataValue.int(len(active)),
        "empty_workers": dg.MetadataValue.int(len(verdict.empty_groups)),
    }
    for g, v in sorted(nodes.items()):
        metadata[f"bytes_group_{g}"] = dg.MetadataValue.int(v["bytes"])
    return verdict.passed, metadata, verdict.reason


# ---- query timing ---------------------------------------------------------------------
class QueryTimingSettings(dg.ConfigurableResource):
    """SLO for the reference query and how the timing check judges a regression."""

    reference_slo_seconds: float = 1.0
    runs: int = 5
    regression_factor: float = 1.5
    history: int = 5


@dataclass(frozen=True)
class TimingVerdict:
    passed: bool
    reasons: tuple[str, ...]
    baseline: float | None


def evaluate_timing(
    median: float, slo_seconds: float, previous_medians: list[float], factor: float = 1.5
) -> TimingVerdict:
    """WARN when over the SLO, or slower than ``factor`` x the median of previous evaluations."""
    reasons = []
    if median > slo_seconds:
        reasons.append(f"reference query median {median:.3f}s over the SLO {slo_seconds:.3f}s")
    baseline = statistics.median(previous_medians) if previous_medians else None
    if baseline is not None and median > factor * baseline:
        reasons.append(
            f"reference query median {median:.3f}s > {factor}x the previous median {baseline:.3f}s"
        )
    return TimingVerdict(not reasons, tuple(reasons), baseline)


TIMING_CHECK = "query_timing"
# What the check times: the reference query as the reference experiment ran it, a scan of
# uk_price (the SLO and the regression baseline are on it), and the four questions as the
# product answers them, from uk_price_rollup. Scans of the three analytic questions are
# `bench queries`' business: five runs of each read the whole table fifteen times, 73-84 s
# per evaluation at 28 M rows -- more than the rebalance -- after every publish and rebalance.
TIMED_QUERIES: dict[str, str] = {
    REFERENCE_QUERY: UK_PRICE_QUERIES[REFERENCE_QUERY],
    **{f"rollup_{name}": q for name, q in rollup.QUERIES.items()},
}
MEDIAN_KEY = f"{REFERENCE_QUERY}_median_s"


def previous_medians(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, limit: int
) -> list[float]:
    """The reference median of the last ``limit`` completed evaluations of this check."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key,
        limit=limit,
        status={AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED},
    )
    out = []
    for rec in records:
        evaluation = (
            rec.event.dagster_event.event_specific_data
            if rec.event and rec.event.dagster_event
            else None
        )
        value = getattr(evaluation, "metadata", {}).get(MEDIAN_KEY) if evaluation else None
        if value is not None:
            out.append(float(value.value))
    return out


@dg.asset_check(
    asset=uk_price,
    name=TIMING_CHECK,
    blocking=False,
    description=(
        "The reference query (count of semi-detached sales) on uk_price and the four questions "
        "answered from uk_price_rollup, 5 runs each: median and p95; WARN over the SLO or 1.5x "
        "slower than the previous 5 evaluations."
    ),
)
def uk_price_query_timing(
    context: dg.AssetCheckExecutionContext, citus: CitusResource, timing: QueryTimingSettings
) -> dg.AssetCheckResult:
    previous = previous_medians(context.instance, context.check_specs[0].key, timing.history)
    t0 = time.perf_counter()
    with citus.connection() as conn:
        results = time_queries(conn, TIMED_QUERIES, runs=timing.runs)
    sql_seconds = time.perf_counter() - t0
    ref = results[REFERENCE_QUERY]
    verdict = evaluate_timing(
        ref.median, timing.reference_slo_seconds, previous, timing.regression_factor
    )
    metadata: dict[str, dg.MetadataValue] = {}
    for name, r in results.items():
        metadata[f"{name}_median_s"] = dg.MetadataValue.float(round(r.median, 5))
        metadata[f"{name}_p95_s"] = dg.MetadataValue.float(round(r.p95, 5))
    metadata["slo_seconds"] = dg.MetadataValue.float(timing.reference_slo_seconds)
    metadata["sql_seconds"] = dg.MetadataValue.float(round(sql_seconds, 4))
    if verdict.baseline is not None:
        metadata["previous_median_s"] = dg.MetadataValue.float(round(verdict.baseline, 5))
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description="; ".join(verdict.reasons) or None,
    )


asset_checks = [
    uk_price_counts,
    uk_price_quality,
    uk_price_rollup_in_step,
    uk_price_balance,
    uk_price_query_timing,
]

__all__ = [
    "TIMED_QUERIES",
    "BalanceVerdict",
    "QueryTimingSettings",
    "TimingVerdict",
    "asset_checks",
    "evaluate_balance",
    "evaluate_counts",
    "evaluate_timing",
    "previous_medians",
    "quality_sql",
    "uk_price_balance",
    "uk_price_counts",
    "uk_price_quality",
    "uk_price_query_timing",
    "uk_price_rollup_in_step",
]
