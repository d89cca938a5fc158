"""Dagster as its users run it: a real `dagster-daemon` on the project's code location.

The daemon loads `workspace.yaml` in a process of its own, with the environment a user sets
(`CITUS_PIPELINE_SPEC`, `CITUS_PIPELINE_STATE_DIR`, ...), on a fresh local cluster. Its
`new_workers_sensor` must launch exactly one rebalance run after `add-worker`, and its
declarative automation must materialize `uk_price` after a new `uk_price_raw`. Everything is
read back from the instance on disk, as the webserver would read it.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import InstigatorType
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from citus_pipeline.definitions import build_resources, defs
from citus_pipeline.errors import WaitTimeout
from citus_pipeline.waiting import until

pytestmark = [pytest.mark.citus, pytest.mark.cluster, pytest.mark.destructive]

ROOT = Path(__file__).resolve().parents[2]
ALL = [*defs.assets, *defs.asset_checks]
SAMPLE_ROWS = 20_000
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture(scope="module")
def deployment(fresh_cluster_module, tmp_path_factory):
    """A fresh cluster, a Dagster home on disk, and the environment the daemon gets."""
    tmp_path = tmp_path_factory.mktemp("deployment")
    cluster = fresh_cluster_module()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(cluster.spec.model_dump(mode="json")))
    env = {
        "DAGSTER_HOME": str(home),
        "CITUS_PIPELINE_SPEC": str(spec),
        "CITUS_PIPELINE_STATE_DIR": str(cluster.state_dir),
        "CITUS_PIPELINE_SAMPLE_ROWS": str(SAMPLE_ROWS),
        "CITUS_PIPELINE_WORK_DIR": str(tmp_path / "work"),
        "CITUS_PIPELINE_MONTHLY_DIR": str(tmp_path / "monthly"),
    }
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield cluster, instance, env


@pytest.fixture(scope="module")
def daemon(deployment):
    env = deployment[2]
    log = open(Path(env["DAGSTER_HOME"]) / "daemon.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _resources(cluster, env) -> dict:
    """The same resources the code location builds from ``env``, for runs made in the test."""
    return build_resources(
        spec=env["CITUS_PIPELINE_SPEC"],
        state_dir=env["CITUS_PIPELINE_STATE_DIR"],
        dsn=cluster.coordinator_dsn(),
        sample_rows=SAMPLE_ROWS,
        work_dir=env["CITUS_PIPELINE_WORK_DIR"],
        monthly_dir=env["CITUS_PIPELINE_MONTHLY_DIR"],
        env_by_name=False,
    )


def _wait(what: str, probe, timeout: float, proc: subprocess.Popen, log: Path):
    def read():
        value = probe()
        if not value and proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}): {log.read_text()[-2000:]}")
        return value

    try:
        return until(read, timeout, 2, what)
    except WaitTimeout as err:
        pytest.fail(f"{err}; daemon log: {log.read_text()[-2000:]}")


def _ensure_loaded(cluster, instance, env) -> None:
    """uk_price loaded (the first test does it; a test run alone does it here)."""
    if instance.get_latest_materialization_event(dg.AssetKey("uk_price_raw")) is None:
        selection = dg.AssetSelection.assets("citus_cluster", "uk_price_raw", "uk_price")
        dg.materialize(
            ALL, instance=instance, resources=_resources(cluster, env), selection=selection
        )


def _next_monthly_tick(now: datetime.datetime) -> datetime.datetime:
    """The schedule's next tick: the 25th, 06:00 UTC (see defs/citus/schedules.py)."""
    tick = now.replace(day=25, hour=6, minute=0, second=0, microsecond=0)
    if tick <= now:
        tick = (tick.replace(day=1) + datetime.timedelta(days=32)).replace(day=25)
    return tick


def _sensor_ticks(instance) -> list:
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    state = next((s for s in states if s.name == "new_workers_sensor"), None)
    if state is None:
        return []
    return instance.get_ticks(state.instigator_origin_id, state.selector_id)


def _materialized(instance, run_id: str) -> set:
    return {
        e.dagster_event.asset_key
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
    }


def _finished(instance, run_id: str):
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.status in DONE else None


def test_the_daemon_rebalances_a_new_worker_and_automates_uk_price(deployment, daemon):
    cluster, instance, env = deployment
    log = Path(env["DAGSTER_HOME"]) / "daemon.log"
    resources = _resources(cluster, env)
    first = dg.materialize(
        ALL,
        instance=instance,
        resources=resources,
        selection=dg.AssetSelection.assets("citus_cluster", "uk_price_raw", "uk_price"),
    )
    assert first.success

    # the sensor ticks on its own, and asks for nothing while every group holds shards
    _wait("a first new_workers_sensor tick", lambda: _sensor_ticks(instance), 120, daemon, log)
    by_sensor = RunsFilter(tags={"dagster/sensor_name": "new_workers_sensor"})
    assert instance.get_runs(filters=by_sensor) == []

    assert cluster.add_worker() == 3
    runs = _wait(
        "the sensor's rebalance run",
        lambda: instance.get_runs(filters=by_sensor),
        180,
        daemon,
        log,
    )
    run = _wait(
        "the rebalance run to finish", lambda: _finished(instance, runs[0].run_id), 300, daemon, log
    )
    assert run.status == DagsterRunStatus.SUCCESS, log.read_text()[-2000:]
    assert run.tags["dagster/run_key"] == "workers:1,2,3"
    assert _materialized(instance, run.run_id) == {dg.AssetKey("uk_price_rebalanced")}
    placed = cluster.status().shards
    assert any(s.groupid == 3 and s.shards > 0 for s in placed)

    # more ticks: still exactly one run for this set of workers
    seen = len(_sensor_ticks(instance))
    _wait(
        "two more sensor ticks", lambda: len(_sensor_ticks(instance)) >= seen + 2, 120, daemon, log
    )
    assert len(instance.get_runs(filters=by_sensor)) == 1

    # a new uk_price_raw -> the daemon's declarative automation materializes uk_price + checks
    before = {r.run_id for r in instance.get_runs()}
    again = dg.materialize(ALL, instance=instance, resources=resources, selection=["uk_price_raw"])
    assert again.success
    before.add(again.run_id)

    def automated():
        return [
            r
            for r in instance.get_runs()
            if r.run_id not in before and dg.AssetKey("uk_price") in (r.asset_selection or set())
        ]

    auto = _wait("the automation's uk_price run", automated, 240, daemon, log)
    run = _wait(
        "the automation's run to finish",
        lambda: _finished(instance, auto[0].run_id),
        300,
        daemon,
        log,
    )
    assert run.status == DagsterRunStatus.SUCCESS, log.read_text()[-2000:]
    evaluated = {
        e.dagster_event.event_specific_data.check_name
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert {"counts", "quality"} <= evaluated


def test_a_failed_run_is_recorded_with_its_error(deployment):
    """A month whose file is missing fails its run, and the instance keeps the reason."""
    cluster, instance, env = deployment
    result = dg.materialize(
        ALL,
        instance=instance,
        resources=_resources(cluster, env),
        selection=["uk_price_monthly"],
        partition_key="2025-03-01",
        raise_on_error=False,
    )
    run = instance.get_run_by_id(result.run_id)
    assert run.status == DagsterRunStatus.FAILURE
    failures = [
        e.dagster_event.event_specific_data.error.message
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert len(failures) == 1
    assert "no update file for 2025-03: expected" in failures[0]
    assert "pp-2025-03.csv" in failures[0]


def test_the_monthly_schedule_turned_on_launches_the_partition_run_of_its_tick(deployment, daemon):
    """The scheduler's own tick evaluation, at the schedule's next tick instead of a month's
    wait; the daemon then runs the queued partition run like any other."""
    import dagster._daemon.daemon  # noqa: F401 - dagster._scheduler imports it back
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._scheduler.scheduler import launch_scheduled_runs

    from citus_pipeline.data.generate import generate_monthly
    from citus_pipeline.defs.citus.partitions import partition_month

    cluster, instance, env = deployment
    log = Path(env["DAGSTER_HOME"]) / "daemon.log"
    _ensure_loaded(cluster, instance, env)
    tick = _next_monthly_tick(datetime.datetime.now(datetime.UTC))
    previous = (tick.replace(day=1) - datetime.timedelta(days=1)).replace(day=1)
    partition = previous.strftime("%Y-%m-%d")
    sample = next(Path(env["CITUS_PIPELINE_WORK_DIR"]).glob("pp-sample-*.csv"))
    monthly = Path(env["CITUS_PIPELINE_MONTHLY_DIR"])
    monthly.mkdir(exist_ok=True)
    month = partition_month(partition)
    generate_monthly(
        monthly / f"pp-{month}.csv", sample, 100, seed=3, month=(previous.year, previous.month)
    )
    workspace = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, workspace) as ctx:
        location = ctx.create_request_context().get_code_location("citus_pipeline")
        repo = next(iter(location.get_repositories().values()))
        instance.start_schedule(repo.get_schedule("monthly_update_schedule"))
        end = tick + datetime.timedelta(seconds=30)
        list(launch_scheduled_runs(ctx, logging.getLogger("test"), end, iteration_times={}))
    by_schedule = RunsFilter(tags={"dagster/schedule_name": "monthly_update_schedule"})
    runs = instance.get_runs(filters=by_schedule)
    assert len(runs) == 1 and runs[0].tags["dagster/partition"] == partition
    run = _wait(
        "the scheduled run to finish", lambda: _finished(instance, runs[0].run_id), 300, daemon, log
    )
    assert run.status == DagsterRunStatus.SUCCESS, log.read_text()[-2000:]
    assert dg.AssetKey("uk_price_monthly") in _materialized(instance, run.run_id)


# ---- the UI, on the instance the daemon filled -----------------------------------------
def test_the_ui_shows_the_graph_plots_checks_and_ticks(deployment, tmp_path):
    """The webserver on that instance, pages opened in Chromium through Playwright."""
    from citus_pipeline.cli.ui_tour import CHROMIUM, PAGES, capture, serve

    pytest.importorskip("playwright", reason="playwright not installed (uv sync --dev)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian's chromium: scripts/bootstrap.sh --dev)")
    cluster, instance, env = deployment
    _ensure_loaded(cluster, instance, env)  # run alone: give the pages something to show
    home = Path(env["DAGSTER_HOME"])
    with serve(home, tmp_path / "webserver.log") as url:
        shots = capture(url, tmp_path / "shots")  # raises naming a page that shows nothing
    assert [s.stem for s in shots] == [p.name for p in PAGES]
    assert all(s.stat().st_size > 20_000 for s in shots)
