"""The code location loads, and Dagster's own validators accept it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from citus_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def _keys():
    graph = defs.get_repository_def().asset_graph
    return graph, {k.to_user_string() for k in graph.get_all_asset_keys()}


def test_assets_checks_and_automation_are_defined():
    graph, keys = _keys()
    assert keys == {
        "citus_cluster",
        "uk_price_raw",
        "uk_price",
        "uk_price_rebalanced",
        "uk_price_monthly",
        "cluster_backup",
    }
    checks = {c.to_user_string() for c in graph.asset_check_keys}
    assert checks == {
        "uk_price:counts",
        "uk_price:quality",
        "uk_price:rollup",
        "uk_price:query_timing",
        "uk_price_rebalanced:balance",
        "uk_price_monthly:monthly_counts",
        "citus_cluster:leaders",
        "citus_cluster:sync_standbys",
        "citus_cluster:replication_lag",
        "citus_cluster:pg_dist_node_follows_leaders",
        "citus_cluster:no_shard_move_leftovers",
    }
    repo = defs.get_repository_def()
    assert repo.get_sensor_def("new_workers_sensor")
    assert repo.get_schedule_def("monthly_update_schedule")
    health = repo.get_schedule_def("cluster_health_schedule")
    assert health.cron_schedule == "*/5 * * * *"
    assert health.default_status == dg.DefaultScheduleStatus.RUNNING
    backup = repo.get_schedule_def("cluster_backup_schedule")
    assert backup.cron_schedule == "0 3 * * *"  # backup.schedule of the default spec
    assert backup.default_status == dg.DefaultScheduleStatus.RUNNING
    assert graph.get(dg.AssetKey("cluster_backup")).group_name == "operations"
    for key in keys - {"cluster_backup"}:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "uk_price"
        assert {"postgres", "citus"} <= set(node.kinds)
    # a new raw load re-materializes uk_price (declarative automation)
    assert graph.get(dg.AssetKey("uk_price")).automation_condition is not None
    assert graph.get(dg.AssetKey("uk_price_monthly")).partitions_def.start.year == 1995


def test_the_backup_schedule_follows_the_spec_it_is_given():
    from citus_pipeline.cluster.spec import spec_from_mapping
    from citus_pipeline.defs.citus.backups import backup_schedule

    off = backup_schedule(
        spec_from_mapping({"backup": {"archiving": False, "schedule": "0 4 * * *"}})
    )
    assert off.cron_schedule == "0 4 * * *"
    assert off.default_status == dg.DefaultScheduleStatus.STOPPED


def test_importing_the_dagster_modules_reads_no_spec(tmp_path):
    """Only the code location, as it builds its definitions, reads the spec (as the cluster
    resource does at run time): importing an asset module with no spec file is fine."""
    env = {**os.environ, "CITUS_PIPELINE_SPEC": str(tmp_path / "absent.yaml")}
    code = "import citus_pipeline.defs.citus.assets, citus_pipeline.defs.citus.backups"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_blocking_and_severity():
    by_key = {}
    for assets_def in defs.assets + defs.asset_checks:
        for spec in assets_def.check_specs:
            by_key[spec.key.to_user_string()] = spec
    assert by_key["uk_price:counts"].blocking
    assert by_key["uk_price:quality"].blocking
    assert not by_key["uk_price:query_timing"].blocking
    assert by_key["uk_price_monthly:monthly_counts"].blocking


def test_heavy_assets_share_the_coordinator_pool():
    for a in defs.assets:
        key = a.key.to_user_string()
        if key in ("citus_cluster", "cluster_backup"):  # backups copy from a standby
            continue
        assert a.op.pool == "citus_coordinator", key


def test_resources_keep_the_dsn_out_of_config(monkeypatch):
    monkeypatch.setenv("CITUS_PIPELINE_DSN", "host=127.0.10.1 passfile=/x/y")
    from citus_pipeline.definitions import build_resources

    res = build_resources()
    assert isinstance(res["citus"].dsn, dg.EnvVar)  # shown by name in the UI, resolved at run time


def test_one_builder_configures_the_cluster_once(monkeypatch):
    from citus_pipeline.definitions import build_resources

    monkeypatch.delenv("CITUS_PIPELINE_DSN", raising=False)
    monkeypatch.delenv("CITUS_COORDINATOR_DSN", raising=False)
    monkeypatch.delenv("CITUS_DSN", raising=False)
    monkeypatch.setenv("CITUS_PIPELINE_SPEC", "/x/spec.yaml")
    by_name = build_resources()
    assert isinstance(by_name["cluster"].spec_path, dg.EnvVar)
    assert by_name["citus"].cluster is by_name["cluster"]  # nested: one config, not two
    now = build_resources(env_by_name=False, state_dir="/x/state", sample_rows=10)
    assert now["cluster"].spec_path == "/x/spec.yaml" and now["cluster"].state_dir == "/x/state"
    assert now["citus"].dsn == "" and now["citus"].cluster.spec_path == "/x/spec.yaml"
    assert now["files"].sample_rows == 10


def test_docstring_lists_the_settings_the_code_location_reads():
    import re

    from citus_pipeline import definitions

    listed = re.findall(r"^- (CITUS_PIPELINE_\w+)", definitions.__doc__, re.MULTILINE)
    assert listed == [s.name for s in definitions.SETTINGS]


@pytest.mark.parametrize(
    "cmd",
    [
        ["dg", "check", "defs"],
        ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
    ],
)
def test_dagster_validators_accept_the_code_location(cmd, tmp_path):
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent))
    assert exe, f"{cmd[0]} not installed in the environment"
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [exe, *cmd[1:]], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_dagster_yaml_declares_the_coordinator_pool(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # validates against Dagster's schema
    assert config["concurrency"]["pools"]["default_limit"] == 1
    # storage is Dagster's default: SQLite under the instance directory, no variable named
    assert "storage" not in config
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path)))
    try:
        assert Path(instance.root_directory) == tmp_path
        assert instance.run_storage.__class__.__name__ == "SqliteRunStorage"
    finally:
        instance.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ["dg", "check", "defs"],
        ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
    ],
)
def test_a_fresh_checkout_validates_with_nothing_exported(command):
    """No DAGSTER_HOME, no project variable: Dagster's own commands load the code location."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and "CITUS" not in k}
    exe = Path(sys.executable).parent / command[0]
    r = subprocess.run(
        [str(exe), *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]


def test_assets_carry_owners_tags_code_references_and_the_monthly_freshness():
    from datetime import timedelta

    graph, keys = _keys()
    for key in keys - {"cluster_backup"}:
        node = graph.get(dg.AssetKey(key))
        assert node.owners == ["team:data-platform"], key
        assert node.tags["dataset"] == "price-paid", key
        refs = node.metadata["dagster/code_references"].code_references
        assert refs and refs[0].file_path.endswith("defs/citus/assets.py"), key
    backup = graph.get(dg.AssetKey("cluster_backup"))
    assert backup.owners == ["team:data-platform"]
    refs = backup.metadata["dagster/code_references"].code_references
    assert refs[0].file_path.endswith("defs/citus/backups.py")
    policy = graph.get(dg.AssetKey("uk_price_monthly")).freshness_policy
    assert policy.fail_window.to_timedelta() == timedelta(days=45)
    assert policy.warn_window.to_timedelta() == timedelta(days=35)


def test_work_dir_from_the_environment_when_run_config_left_it_empty(tmp_path, monkeypatch):
    # run config for `files` replaces its whole configuration; the Dagster image's work
    # directory (its variable) must still win over the checkout's default
    from citus_pipeline.defs.citus.resources import PricePaidFiles

    monkeypatch.setenv("CITUS_PIPELINE_WORK_DIR", str(tmp_path / "w"))
    assert PricePaidFiles(sample_rows=10).work_path() == tmp_path / "w"
    assert (tmp_path / "w").is_dir()
    assert PricePaidFiles(work_dir=str(tmp_path / "x")).work_path() == tmp_path / "x"
