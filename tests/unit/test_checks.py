"""Check evaluation logic (pure functions), the timing check's history from a real instance,
and how the monthly check reads an update file."""

import math
import uuid

import dagster as dg
import pytest

from citus_pipeline.data.monthly_check import read_monthly_actions
from citus_pipeline.data.queries import percentile
from citus_pipeline.defs.citus.checks import (
    MEDIAN_KEY,
    TIMING_CHECK,
    evaluate_balance,
    evaluate_counts,
    evaluate_timing,
    previous_medians,
    quality_sql,
)


def test_balance_passes_within_ratio():
    nodes = {
        1: {"shards": 11, "bytes": 110},
        2: {"shards": 11, "bytes": 105},
        3: {"shards": 10, "bytes": 100},
    }
    v = evaluate_balance(nodes, [1, 2, 3])
    assert v.passed and v.ratio == pytest.approx(1.1)


def test_balance_fails_over_ratio():
    nodes = {1: {"shards": 16, "bytes": 130}, 2: {"shards": 16, "bytes": 100}}
    v = evaluate_balance(nodes, [1, 2])
    assert not v.passed and "1.30 > 1.2" in v.reason


def test_balance_fails_when_an_active_worker_is_empty():
    nodes = {1: {"shards": 16, "bytes": 100}, 2: {"shards": 16, "bytes": 100}}
    v = evaluate_balance(nodes, [1, 2, 3])  # group 3 active but absent from placements
    assert not v.passed and v.empty_groups == (3,) and math.isinf(v.ratio)


def test_balance_ignores_inactive_groups():
    nodes = {
        1: {"shards": 16, "bytes": 100},
        2: {"shards": 16, "bytes": 100},
        3: {"shards": 0, "bytes": 0},
    }
    assert evaluate_balance(nodes, [1, 2]).passed


def test_counts():
    assert evaluate_counts(1000, 1000)[0]
    assert not evaluate_counts(1000, 999)[0]
    ok, md = evaluate_counts(1000, 1010)
    assert not ok and md["good_raw_rows"].value == 1000 and md["difference"].value == 10


def test_timing_slo_and_regression():
    assert evaluate_timing(0.1, 1.0, []).passed
    v = evaluate_timing(1.2, 1.0, [])
    assert not v.passed and "SLO" in v.reasons[0]
    v = evaluate_timing(0.5, 1.0, [0.2, 0.3, 0.3, 0.25, 0.3])
    assert not v.passed and v.baseline == 0.3 and "1.5x" in v.reasons[0]
    assert evaluate_timing(0.44, 1.0, [0.3] * 5).passed


def test_percentile():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert percentile([7], 95) == 7


def test_quality_sql_binds_the_code_sets():
    sql, params = quality_sql()
    assert "%(property_type)s" in sql and params["property_type"] == ["D", "S", "T", "F", "O"]
    assert "price <= 0" in sql and "record_status" not in params


def test_previous_medians_read_from_the_instance(tmp_path):
    # A stand-in asset with the same check key records evaluations in a real instance.
    values = iter([0.2, 0.4, 0.3, 0.5, 0.1, 0.9])

    @dg.asset(name="uk_price")
    def fake_uk_price():
        return None

    @dg.asset_check(asset=fake_uk_price, name=TIMING_CHECK)
    def fake_timing():
        return dg.AssetCheckResult(passed=True, metadata={MEDIAN_KEY: next(values)})

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        key = dg.AssetCheckKey(dg.AssetKey("uk_price"), TIMING_CHECK)
        assert previous_medians(instance, key, 5) == []
        for _ in range(6):
            assert dg.materialize([fake_uk_price, fake_timing], instance=instance).success
        got = previous_medians(instance, key, 5)
    assert got == [0.9, 0.1, 0.5, 0.3, 0.4]  # newest first, at most 5


def test_monthly_actions_are_what_the_apply_uses(tmp_path):
    # the loader's parser: the last record of an id wins, rejected records are skipped
    def rec(i, price, status, day="2024-05-01"):
        return (
            f'"{{00000000-0000-4000-8000-{i:012d}}}","{price}","{day} 00:00","LS1 1AA","F","N",'
            f'"L","{i}","","HIGH STREET","","LEEDS","LEEDS","WEST YORKSHIRE","A","{status}"'
        )

    path = tmp_path / "pp-2024-05.csv"
    lines = [
        rec(1, 100, "A"),
        rec(2, 200, "C"),
        rec(1, 150, "C", "2024-05-02"),  # supersedes line 1
        rec(3, 0, "D"),  # price 0: rejected
        rec(4, 400, "D", "2024-02-30"),  # no such day: rejected
        '"{bad}","1","2024-01-01 00:00"',  # rejected
        rec(5, 500, "D"),
    ]
    path.write_text("\n".join(lines) + "\n")
    key = lambda i: uuid.UUID(f"00000000-0000-4000-8000-{i:012d}")
    assert read_monthly_actions(path) == {
        key(1): ("C", 150, "2024-05-02"),
        key(2): ("C", 200, "2024-05-01"),
        key(5): ("D", 500, "2024-05-01"),
    }
