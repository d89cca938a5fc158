"""new_workers_sensor's decision: cursor = sorted active worker groups, run_key = the new set."""

from citus_pipeline.cluster.topology import DistNode, active_worker_groups
from citus_pipeline.defs.citus.sensors import decide_rebalance, decode_cursor, encode_cursor


def test_no_request_while_every_group_holds_shards():
    d = decide_rebalance(None, {1: True, 2: True})
    assert d.run_key is None
    assert decode_cursor(d.cursor) == [1, 2]


def test_one_request_when_an_empty_group_appears_then_none():
    first = decide_rebalance(None, {1: True, 2: True})
    second = decide_rebalance(first.cursor, {1: True, 2: True, 3: False})
    assert second.run_key == "workers:1,2,3"
    assert second.new_groups == (3,) and second.empty_groups == (3,)
    third = decide_rebalance(second.cursor, {1: True, 2: True, 3: False})  # rebalance not done yet
    assert third.run_key is None
    fourth = decide_rebalance(third.cursor, {1: True, 2: True, 3: True})
    assert fourth.run_key is None


def test_a_replayed_tick_asks_with_the_same_run_key():
    # a crash after the request but before the cursor was saved: same run_key, so Dagster
    # launches nothing twice
    base = encode_cursor([1, 2])
    a = decide_rebalance(base, {1: True, 2: True, 3: False})
    b = decide_rebalance(base, {1: True, 2: True, 3: False})
    assert a.run_key == b.run_key is not None


def test_no_request_on_an_empty_cluster():
    # nothing distributed yet: a new worker needs no rebalance
    assert decide_rebalance(encode_cursor([1, 2]), {1: False, 2: False, 3: False}).run_key is None


def test_sensor_started_after_add_worker_still_asks():
    d = decide_rebalance(None, {1: True, 2: True, 3: False})
    assert d.run_key == "workers:1,2,3"


def test_a_group_that_arrives_with_shards_needs_nothing():
    d = decide_rebalance(encode_cursor([1, 2]), {1: True, 2: True, 3: True})
    assert d.run_key is None and d.new_groups == (3,)


def test_removed_group_updates_the_cursor():
    d = decide_rebalance(encode_cursor([1, 2, 3]), {1: True, 2: True})
    assert d.run_key is None and decode_cursor(d.cursor) == [1, 2]


def test_bad_cursor_is_treated_as_none():
    assert decode_cursor("not json") is None
    assert decode_cursor('{"a": 1}') is None
    assert decode_cursor("") is None


def test_active_worker_groups_are_active_primaries_that_take_shards():
    def node(nodeid, group, role="primary", active=True, should_have_shards=True):
        return DistNode(
            nodeid=nodeid,
            groupid=group,
            host="127.0.0.1",
            port=5432 + nodeid,
            role=role,
            active=active,
            should_have_shards=should_have_shards,
        )

    nodes = [
        node(1, 0, should_have_shards=False),  # the coordinator
        node(2, 1),
        node(3, 1, role="secondary"),
        node(4, 2),
        node(5, 3, active=False),  # being added
        node(6, 4, should_have_shards=False),  # being drained
    ]
    assert active_worker_groups(nodes) == [1, 2]
