"""The Dagster pipeline against real local Citus clusters and a real Dagster instance.

Shared cluster (`citus_cluster`): each test works in its own PostgreSQL schema. Tests that
add workers or switch leaders get a `fresh_cluster`.
"""

import threading
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from rebalance_runs import ALL, materialize_rebalance, sensor_ticker
from seed_rows import seed_uk_price

from citus_pipeline.defs.citus.checks import QueryTimingSettings
from citus_pipeline.defs.citus.resources import CitusResource, ClusterResource, PricePaidFiles

pytestmark = [pytest.mark.citus, pytest.mark.cluster]

SAMPLE_ROWS = 4000


def _spec_file(cluster, tmp_path: Path) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(cluster.spec.model_dump(mode="json")))
    return str(path)


def _resources(cluster, tmp_path: Path, schema: str = "public", **files_kw) -> dict:
    backend = ClusterResource(
        spec_path=_spec_file(cluster, tmp_path), state_dir=str(cluster.state_dir)
    )
    return {
        "citus": CitusResource(  # no DSN: the default way in, the pooler's session pool
            cluster=backend,
            db_schema=schema,
            retry_base_seconds=0.5,
        ),
        "cluster": backend,
        "files": PricePaidFiles(
            sample_rows=files_kw.pop("sample_rows", SAMPLE_ROWS),
            work_dir=str(tmp_path / "work"),
            monthly_dir=str(tmp_path / "monthly"),
            **files_kw,
        ),
        "timing": QueryTimingSettings(reference_slo_seconds=30.0),
    }


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def schema(citus_cluster):
    name = f"t_dagster_{uuid.uuid4().hex[:8]}"
    yield name
    from citus_pipeline.data.schema import drop_all

    drop_all(citus_cluster.coordinator_dsn(), schema=name)


def _count(dsn: str, schema: str, table: str = "uk_price") -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
            psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
        )
        return conn.execute(q).fetchone()[0]


def _md(result, key: str):
    return result.asset_materializations_for_node(key)[0].metadata


# ---- every asset on the shared cluster --------------------------------------------------
def test_all_assets_materialize_with_numeric_metadata(citus_cluster, schema, tmp_path, instance):
    res = _resources(citus_cluster, tmp_path, schema)
    result = dg.materialize(
        ALL,
        instance=instance,
        resources=res,
        selection=dg.AssetSelection.assets("citus_cluster", "uk_price_raw", "uk_price")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price")),
    )
    assert result.success
    cmd = _md(result, "citus_cluster")
    assert isinstance(cmd["worker_count"], dg.IntMetadataValue) and cmd["worker_count"].value >= 2
    assert (
        "citus_version" in cmd
        and "postgresql_version" in cmd
        and "| group |" in cmd["status"].value
    )
    raw = _md(result, "uk_price_raw")
    for key in ("rows_read", "rows_loaded", "rows_rejected"):
        assert isinstance(raw[key], dg.IntMetadataValue), key
    for key in ("mb_per_s", "seconds"):
        assert isinstance(raw[key], dg.FloatMetadataValue), key
    assert raw["rows_loaded"].value == SAMPLE_ROWS
    up = _md(result, "uk_price")
    assert (
        up["dagster/row_count"].value
        == SAMPLE_ROWS
        == _count(citus_cluster.coordinator_dsn(), schema)
    )
    assert up["shard_count"].value == citus_cluster.spec.shard_count
    columns = up["dagster/column_schema"].schema.columns  # the table as the database has it
    assert [c.name for c in columns][:3] == ["transaction_id", "price", "date_of_transfer"]
    assert not columns[0].constraints.nullable and columns[-1].constraints.nullable
    assert "dagster/column_schema" in raw
    assert any(k.startswith("bytes_group_") for k in up)
    # the publish took a cluster-consistent restore point named after its run, before it
    from citus_pipeline.cluster.local.recovery import LocalRecovery

    point = up["restore_point"].value
    assert point == f"{result.run_id[:8]}.uk_price.0"
    taken = {p.name: p for p in LocalRecovery(citus_cluster).restore_points()}
    assert taken[point].run_id == result.run_id and sorted(taken[point].groups) == [0, 1, 2]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    # citus_cluster brings its health checks along (a cluster just started is healthy)
    from citus_pipeline.defs.citus.health import HEALTH_CHECKS

    assert set(checks) == {"counts", "quality", "rollup", "query_timing", *HEALTH_CHECKS}
    assert all(checks[n].passed for n in HEALTH_CHECKS)
    assert checks["counts"].passed and checks["quality"].passed and checks["rollup"].passed
    timing = checks["query_timing"].metadata
    assert isinstance(timing["reference_semi_detached_count_median_s"], dg.FloatMetadataValue)
    # the reference query scanned on uk_price, the four questions from the rollup
    assert "rollup_top_100_districts_since_2020_p95_s" in timing
    assert "top_100_districts_since_2020_p95_s" not in timing

    # the monthly partition: applied twice gives the same table; a missing month fails clearly
    from citus_pipeline.data.generate import generate_monthly

    sample = next((tmp_path / "work").glob("pp-sample-*.csv"))
    (tmp_path / "monthly").mkdir()
    # with C/D records for ids the table never held: recorded by the apply, not check failures
    generate_monthly(
        tmp_path / "monthly" / "pp-2025-01.csv", sample, 200, seed=7, month=(2025, 1), unknown=5
    )

    def monthly(partition_key: str, **kw):
        return dg.materialize(
            ALL,
            instance=instance,
            resources=res,
            selection=["uk_price_monthly"],
            partition_key=partition_key,
            **kw,
        )

    snapshots = []
    for _ in range(2):
        r = monthly("2025-01-01")
        assert r.success
        (check,) = r.get_asset_check_evaluations()
        assert check.passed and check.metadata["adds"].value > 0
        assert check.metadata["unknown_ids"].value == 5
        with psycopg.connect(citus_cluster.coordinator_dsn(), autocommit=True) as conn:
            snapshots.append(
                conn.execute(
                    psycopg.sql.SQL(
                        "SELECT md5(string_agg(t::text, ',' ORDER BY transaction_id)) FROM {}.uk_price t"
                    ).format(psycopg.sql.Identifier(schema))
                ).fetchone()[0]
            )
    assert snapshots[0] == snapshots[1]
    # the counts check still holds after the month's adds and deletes
    r = dg.materialize(
        ALL,
        instance=instance,
        resources=res,
        selection=dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price")),
    )
    assert {e.check_name: e.passed for e in r.get_asset_check_evaluations()}["counts"]

    missing = monthly("2025-02-01", raise_on_error=False)
    assert not missing.success
    failure = next(e for e in missing.all_events if e.is_step_failure)
    assert "no update file for 2025-02" in failure.event_specific_data.error.message


def test_cluster_backup_backs_up_every_group_then_takes_a_restore_point(
    citus_cluster, tmp_path, instance
):
    from citus_pipeline.cluster.local.recovery import LocalRecovery

    result = dg.materialize(
        ALL,
        instance=instance,
        resources=_resources(citus_cluster, tmp_path),
        selection=dg.AssetSelection.assets("cluster_backup"),
    )
    assert result.success
    md = _md(result, "cluster_backup")
    assert md["restore_point"].value == f"{result.run_id[:8]}.backup.0"
    assert md["backup_mb"].value > 0
    infos = LocalRecovery(citus_cluster).list()
    assert [i.group for i in infos if i.backups] == [0, 1, 2]
    labels = {b.label for i in infos for b in i.backups}
    assert all(f"| {g} | " in md["backups"].value for g in (0, 1, 2)) and labels


def test_failing_quality_check_blocks_downstream(citus_cluster, schema, tmp_path, instance):
    res = _resources(citus_cluster, tmp_path, schema)
    assert dg.materialize(
        ALL,
        instance=instance,
        resources=res,
        selection=["citus_cluster", "uk_price_raw", "uk_price"],
    ).success
    dsn = citus_cluster.coordinator_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.uk_price DROP CONSTRAINT price_positive")
        conn.execute(
            f"INSERT INTO {schema}.uk_price (transaction_id, price, date_of_transfer, property_type, "
            "old_new, duration, ppd_category_type) VALUES (gen_random_uuid(), -5, '2020-01-01', 'S', 'N', 'F', 'A')"
        )
    result = dg.materialize(
        ALL,
        instance=instance,
        resources=res,
        raise_on_error=False,
        selection=dg.AssetSelection.assets("uk_price", "uk_price_rebalanced")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price")),
    )
    quality = {e.check_name: e for e in result.get_asset_check_evaluations()}["quality"]
    assert not quality.passed and quality.metadata["price_not_positive"].value == 1
    assert not result.asset_materializations_for_node("uk_price_rebalanced")
    assert not result.success


# ---- the sensor and the rebalance on a fresh cluster ------------------------------------
@pytest.mark.destructive
def test_sensor_requests_exactly_one_rebalance_per_new_worker(fresh_cluster, tmp_path, instance):
    c = fresh_cluster()
    dsn = c.coordinator_dsn()
    seed_uk_price(dsn, 30000)
    res = _resources(c, tmp_path)
    tick = sensor_ticker(instance, res["citus"])

    requests, cursor = tick(None)
    assert requests == []
    requests, cursor = tick(cursor)
    assert requests == []
    group = c.add_worker()
    requests, cursor = tick(cursor)
    assert len(requests) == 1 and requests[0].run_key == f"workers:1,2,{group}"
    again, cursor = tick(cursor)
    assert again == []

    result = materialize_rebalance(instance, res, requests[0].run_key)
    assert result.success
    (balance,) = result.get_asset_check_evaluations()
    assert balance.passed, balance.description
    md = _md(result, "uk_price_rebalanced")
    assert md["moves"].value > 0 and md["bytes_moved"].value > 0
    assert md[f"after_shards_group_{group}"].value > 0
    assert _count(dsn, "public") == 30000
    # the moved shards were vacuumed and analyzed on their new nodes (fresh copies otherwise)
    assert "uk_price" in md["vacuumed"].value.split(", ")
    with psycopg.connect(dsn) as conn:
        (all_analyzed,) = conn.execute(
            "SELECT bool_and(result::boolean) FROM run_command_on_shards('uk_price', "
            "$$SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relid = '%s'::regclass$$)"
        ).fetchone()
    assert all_analyzed
    # once the new group holds shards, nothing more is asked even from a lost cursor
    assert tick(None)[0] == []


@pytest.mark.destructive
def test_switchover_during_uk_price_then_rerun_is_exact(fresh_cluster, tmp_path, instance):
    c = fresh_cluster()
    dsn = c.coordinator_dsn()
    res = _resources(c, tmp_path, sample_rows=60000)
    assert dg.materialize(
        ALL, instance=instance, resources=res, selection=["citus_cluster", "uk_price_raw"]
    ).success
    outcome = {}

    def publish():
        outcome["result"] = dg.materialize(
            ALL, instance=instance, resources=res, raise_on_error=False, selection=["uk_price"]
        )

    t = threading.Thread(target=publish)
    t.start()
    c.switchover(1)
    t.join(timeout=600)
    first = outcome["result"]
    if not first.success:
        failure = next(e for e in first.all_events if e.is_step_failure)
        # Dagster's own header, then the asset's error as its cause
        error, msg = failure.event_specific_data.error, ""
        while error is not None:
            msg, error = msg + error.message, error.cause
        assert "publish uk_price" in msg or "connection" in msg.lower(), msg
    rerun = dg.materialize(
        ALL,
        instance=instance,
        resources=res,
        selection=dg.AssetSelection.assets("uk_price")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price")),
    )
    assert rerun.success
    checks = {e.check_name: e.passed for e in rerun.get_asset_check_evaluations()}
    assert checks["counts"] and checks["quality"]
    fingerprint = "SELECT count(*), sum(hashtext({id}::text)::numeric) FROM {table}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        raw = conn.execute(
            fingerprint.format(id="transaction_unique_identifier", table="uk_price_raw")
        ).fetchone()
        typed = conn.execute(fingerprint.format(id="transaction_id", table="uk_price")).fetchone()
    assert raw == typed  # the same set of ids, each once
    assert _count(dsn, "public") == 60000


# ---- cluster health ---------------------------------------------------------------------
def test_health_checks_pass_on_a_healthy_cluster(citus_cluster, tmp_path, instance):
    from citus_pipeline.defs.citus.health import HEALTH_CHECKS, cluster_health

    result = dg.materialize(
        ALL,
        instance=instance,
        resources=_resources(citus_cluster, tmp_path),
        selection=dg.AssetSelection.checks(cluster_health),
    )
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(HEALTH_CHECKS)
    failed = {n: e.description for n, e in checks.items() if not e.passed}
    assert failed == {}
    assert checks["leaders"].metadata["groups"].value == 3
    assert checks["no_shard_move_leftovers"].metadata["cleanup_records"].value == 0
