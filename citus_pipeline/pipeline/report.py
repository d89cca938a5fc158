"""What `pipeline run` reports: each stage's time and the reference query's median, next to the
reference deployment's figures, as a table and as a plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

# Columns of the terminal `pipeline run` prints into: the summary table fits without cutting
# a word (tests/unit/test_pipeline_report.py holds it at realistic figures).
SUMMARY_WIDTH = 120

# The reference deployment (28,276,228 rows; 3 nodes of 4 vCPU / 16 GB).
REFERENCE_ROWS = 28_276_228
REFERENCE = {
    "load": ("\\COPY into a plain table", 59 * 60 + 49, None),
    "plain": ("count(*) where property_type='S' on its plain table", None, 2.40),
    "distributed_2": ("distributed over 2 workers", None, 1.53),
    "rebalance": ("rebalance onto the 3rd worker (10 shards, 1.66 GB)", 4 * 60 + 43, None),
    "rebalanced_3": ("over 3 workers", None, 1.25),
}


@dataclass
class Stage:
    name: str
    wall_seconds: float
    query_median: float | None = None
    note: str = ""
    reference_key: str | None = None
    run_wall: float = 0.0
    work_seconds: float = 0.0
    query_first: float | None = None  # the first call right after the stage (cold caches)


@dataclass
class PipelineSummary:
    rows: int = 0
    stages: list[Stage] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def dagster_overhead(self) -> tuple[float, float]:
        run = sum(s.run_wall for s in self.stages)
        work = sum(s.work_seconds for s in self.stages)
        return run, work


def monthly_note(figures: dict[str, object]) -> str:
    """The monthly stage's note: its counts (rows read and rejected, adds, changes, deletes,
    adds of ids already there, applied), every one whole -- the table wraps between them."""
    counts = ("applied", "rows_", "adds", "changes", "deletes")
    return ", ".join(f"{k} {v}" for k, v in figures.items() if k.startswith(counts))


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def print_summary(s: PipelineSummary, console: Console) -> None:
    """The table at the console's width (``SUMMARY_WIDTH`` for `pipeline run`): long cells
    wrap between words, never inside one (the figures are in the log and bench JSON whole)."""
    t = Table(title=f"Pipeline on {s.rows:,} rows (reference: {REFERENCE_ROWS:,} rows, 3×4 vCPU)")
    # Two-line headers over the figures: those columns stay as narrow as their numbers, which
    # leaves the text columns room enough to fit SUMMARY_WIDTH.
    # A stage's name (at most ~27 characters) keeps its line: the reference and the notes
    # share the rest of the width and wrap between words.
    t.add_column("stage", no_wrap=True)
    for col in (
        "wall s",
        "ref query\nfirst s",
        "ref query\nmedian s",
        "reference",
        "ref s",
        "notes",
    ):
        t.add_column(col, justify="right" if col.endswith(" s") else "left")
    for st in s.stages:
        label, ref_wall, ref_q = REFERENCE.get(st.reference_key or "", ("", None, None))
        ref_s = ref_q if ref_q is not None else ref_wall
        t.add_row(
            st.name,
            _fmt(st.wall_seconds),
            _fmt(st.query_first),
            _fmt(st.query_median),
            label,
            _fmt(ref_s),
            st.note,
        )
    console.print(t)
    run, work = s.dagster_overhead
    if run:
        pct = 100 * (run - work) / run
        console.print(
            f"Dagster overhead: runs {run:.1f}s, SQL/loading inside them {work:.1f}s → "
            f"{run - work:.1f}s ({pct:.1f}% of the runs)"
        )
    if s.failed_checks:
        console.print("[yellow]checks not passing:[/yellow] " + "; ".join(s.failed_checks))


def write_plot(s: PipelineSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [st for st in s.stages if st.query_median is not None]
    labels = [st.name for st in stages]
    ours = [st.query_median for st in stages]
    ref = [REFERENCE.get(st.reference_key or "", (None, None, None))[2] for st in stages]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(stages))
    ax.bar([i - 0.2 for i in x], ours, width=0.4, label=f"this run ({s.rows:,} rows)")
    ax.bar(
        [i + 0.2 for i in x],
        [r or 0 for r in ref],
        width=0.4,
        label=f"reference ({REFERENCE_ROWS:,} rows)",
    )
    ax.set_xticks(list(x), labels, rotation=10)
    ax.set_title("The reference query, count(*) where property_type = 'S', at each stage")
    ax.set_ylabel("median seconds (log scale)")
    ax.set_yscale("log")
    # outside the bars: the reference's bars reach the top of the axes
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "REFERENCE",
    "REFERENCE_ROWS",
    "SUMMARY_WIDTH",
    "PipelineSummary",
    "Stage",
    "monthly_note",
    "print_summary",
    "write_plot",
]
