"""The stages section of `bench seed`: the plain `\\copy` of the file into a distributed table
(the yardstick, `copy_baseline_s`), then the main Dagster job (`pipeline run`) on the dedicated
bench cluster from nothing, each stage timed next to the reference deployment's figure; the
reference query timed right after each stage (first call) and settled (autovacuum done, a
checkpoint, one warm-up call, then the median of ``--runs``): what a user sees a minute
later. Memory of the loader (this process) and of every member sampled over the whole job.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from ...cluster.local import LocalCluster
from ...data.queries import REFERENCE_QUERY, UK_PRICE_QUERIES, reference_schema_queries
from ...data.schema import drop_all
from ...pipeline.report import REFERENCE
from ..usage import ClusterUsage, MemorySampler, self_rss_mb
from .context import Seed


def copy_baseline(run: Seed) -> None:
    """(b), psql `\\copy` of the same file into a distributed table on the same cluster (two
    worker groups, as the job's load), timed alone before the job: the yardstick the whole
    experiment is set against on any machine (`copy_baseline_s`)."""
    from ..loaders import SCHEMA, copy_distributed

    run.up()
    drop_all(run.dsn())
    shard_count = int(run.sql("SHOW citus.shard_count")[0][0])
    try:
        r = copy_distributed(run.dsn(), run.path, ClusterUsage(run.cluster), shard_count)
    finally:
        drop_all(run.dsn(), schema=SCHEMA)
        # down by the object that started it: its supervisor thread would restart members
        run.cluster.down(purge=True)
    run.out["copy_baseline_s"] = round(r.seconds, 1)
    run.console.print(
        f"baseline: {r.label}, {r.rows:,} rows in {r.seconds:.1f} s ({r.rows_per_s:,.0f} rows/s)"
    )


def stages(run: Seed) -> None:
    # the section IS the main job, run through Dagster as users run it
    from ...pipeline.run import RunLog, run_pipeline

    copy_baseline(run)
    # from nothing: the job starts the cluster itself
    run.cluster = LocalCluster(run.spec, run.state_dir)
    run.cluster.down(purge=True)
    run.state_dir.mkdir(parents=True, exist_ok=True)
    run.state_dir.chmod(0o755)  # Patroni runs as the service user
    spec_file = run.state_dir.parent / "bench-spec.yaml"
    spec_file.write_text(yaml.safe_dump(run.spec.model_dump(mode="json")))
    home = Path(tempfile.mkdtemp(prefix="citus-pipeline-seed-dagster-"))

    timing_s = [0.0]  # spent waiting for the cluster to settle and timing the query

    def timer(_citus, table: str) -> tuple[float, float]:
        sql = (
            UK_PRICE_QUERIES[REFERENCE_QUERY]
            if table == "uk_price"
            else reference_schema_queries(table)[REFERENCE_QUERY]
        )
        t = time.monotonic()
        try:
            return run.settled_timing(sql)
        finally:
            timing_s[0] += time.monotonic() - t

    usage = ClusterUsage(run.cluster)

    def memory() -> dict[str, float]:
        return {**usage.pss_mb(), "loader (Dagster process)": self_rss_mb()}

    t0 = time.monotonic()
    with MemorySampler(memory, interval=5.0) as trace:
        summary = run_pipeline(
            rows=run.rows,
            source=str(run.path),
            dagster_home=home,
            spec=str(spec_file),
            state_dir=str(run.state_dir),
            log=RunLog(home / "logs" / "seed.log", verbose=False),
            query_timer=timer,
        )
    whole = time.monotonic() - t0
    run.trace = trace
    run.out["memory_peak_mb"] = trace.peaks()
    timed = sum(1 for st in summary.stages if st.query_median is not None)
    for st in summary.stages:
        label, ref_wall, ref_q = REFERENCE.get(st.reference_key or "", ("", None, None))
        if st.reference_key == "plain":  # the load stage: the reference's \COPY time too
            label, ref_wall = REFERENCE["load"][0], REFERENCE["load"][1]
        run.out["stages"].append(
            {
                "name": st.name,
                "seconds": round(st.wall_seconds, 2),
                "query_median_s": st.query_median,
                "query_first_s": st.query_first,
                "reference": label,
                "reference_seconds": ref_wall,
                "reference_query_s": ref_q,
                "note": st.note,
            }
        )
    # the job's own time: the bench's waits for a settled cluster are not the job's
    job = whole - timing_s[0]
    run.out["whole_experiment_s"] = round(job, 1)
    run.out["with_settled_timings_s"] = round(whole, 1)
    run.console.print(
        f"whole experiment: {job:.0f} s ({job / 60:.1f} min; target ≤ 6 min); "
        f"{whole:.0f} s with the {timed} settled query timings ({timing_s[0]:.0f} s)"
    )


__all__ = ["stages"]
