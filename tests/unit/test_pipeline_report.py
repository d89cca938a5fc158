"""The main job's summary table (`pipeline run`) fits SUMMARY_WIDTH (120) and cuts no word."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from citus_pipeline.pipeline import run as pipeline_run
from citus_pipeline.pipeline.report import (
    SUMMARY_WIDTH,
    PipelineSummary,
    Stage,
    monthly_note,
    print_summary,
)

# The counts of a month's update the summary shows, each as `name value`.
MONTHLY_COUNTS = (
    "rows_read",
    "rows_rejected",
    "adds",
    "changes",
    "deletes",
    "adds_existing",
    "applied",
)


def _monthly(month_rows: int) -> dict[str, object]:
    """The uk_price_monthly asset's metadata, in its order."""
    adds, changes, deletes = int(month_rows * 0.8), int(month_rows * 0.15), month_rows // 20
    return {
        "source": "pp-2025-06.csv",
        "rows_read": month_rows,
        "rows_rejected": 3,
        "adds": adds,
        "changes": changes,
        "deletes": deletes,
        "adds_existing": 12,
        "unknown_changes": 0,
        "seconds": 4.2,
        "applied": adds + changes + deletes,
    }


def _summary(rows: int, scale: float, monthly: dict[str, object]) -> PipelineSummary:
    """The stages `run_pipeline` records, with figures like a run's at ``rows`` rows."""
    s = PipelineSummary(rows=rows)
    s.stages = [
        Stage("cluster up", 31.2, note="2 worker groups", run_wall=31.2),
        Stage(
            "load → uk_price_raw",
            14.8 * scale,
            0.213 * scale,
            f"{rows:,} rows, 85.3 MB/s, 0 rejected",
            "plain",
            run_wall=14.8 * scale,
            work_seconds=12.1 * scale,
            query_first=0.512 * scale,
        ),
        Stage(
            "distributed over 2 workers",
            9.4 * scale,
            0.052 * scale,
            reference_key="distributed_2",
            query_first=0.101 * scale,
        ),
        Stage("add worker group 3", 21.5, note="Patroni members + pg_dist_node"),
        Stage(
            "rebalance",
            16.3 * scale,
            note=f"10 moves, {60.2 * scale:,.1f} MB, 12.1 MB/s",
            reference_key="rebalance",
        ),
        Stage(
            "rebalanced over 3 workers",
            0.0,
            0.041 * scale,
            reference_key="rebalanced_3",
            query_first=0.090 * scale,
        ),
        Stage("monthly update 2025-06", 5.2, note=monthly_note(monthly), run_wall=5.2),
        Stage("all checks", 11.0, note="14 checks", run_wall=11.0, work_seconds=6.5),
    ]
    s.failed_checks.append("uk_price:query_timing median 2.5 s over the SLO of 2.0 s")
    return s


@pytest.mark.parametrize(
    ("rows", "scale", "month_rows"),
    [(1_000_000, 1.0, 1_000), (28_276_228, 28.0, 123_456)],
    ids=["1M-sample", "reference-size"],
)
def test_the_summary_fits_120_columns_and_cuts_no_word_of_the_notes(rows, scale, month_rows):
    monthly = _monthly(month_rows)
    summary = _summary(rows, scale, monthly)
    assert SUMMARY_WIDTH == 120
    assert pipeline_run.console.width == SUMMARY_WIDTH  # what `pipeline run` prints into
    console = Console(width=SUMMARY_WIDTH, file=io.StringIO(), record=True)
    print_summary(summary, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120, text
    assert "…" not in text, text  # rich's mark of a cut cell
    cells = re.split(r"[│┃\s]+", text)  # every word the table shows, borders dropped
    for stage in summary.stages:
        for word in stage.note.split():
            assert word in cells, f"{word!r} of {stage.name!r} cut:\n{text}"
    # and the notes themselves dropped no figure: every count of the month, name and value
    note = next(st.note for st in summary.stages if st.name.startswith("monthly update"))
    assert [n for n in MONTHLY_COUNTS if f"{n} {monthly[n]}" not in note.split(", ")] == []


def test_the_monthly_note_keeps_every_count_whole():
    note = monthly_note(
        {"source": "pp-2025-06.csv", "rows_read": 1000, "adds": 800, "adds_existing": 0}
    )
    assert note == "rows_read 1000, adds 800, adds_existing 0"
