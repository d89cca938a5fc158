"""`cluster status --backend kubernetes` within its budget whatever the API server and the
coordinator do: an API that does not answer or is down leaves the members unknown and says so,
and the coordinator is still asked at the address the API gave last; a frozen coordinator
leaves pg_dist_node out, said."""

from __future__ import annotations

import time

import pytest
from kube_fakes import FakeCitus, Forbidden, make, no_dsn_env  # noqa: F401 -- autouse
from urllib3.exceptions import MaxRetryError, NewConnectionError

from citus_pipeline.cluster.budget import STATUS_BUDGET_S
from citus_pipeline.errors import KubernetesClusterError

HANG_S = 8  # longer than the whole budget: an unbounded status would show it


def _timed(c):
    t0 = time.monotonic()
    topo = c.status()
    return topo, time.monotonic() - t0


def _hang(*_a, **_k):
    time.sleep(HANG_S)
    raise AssertionError("a frozen API never answers in a test")


def test_an_answering_api_keeps_the_load_balancers_addresses(tmp_path):
    c, *_ = make()
    topo, _ = _timed(c)
    assert topo.members_unanswered is None and len(topo.members) == 7
    assert c.addresses.load()["coordinator_dsn"] == topo.coordinator_dsn
    assert c.addresses.path.is_relative_to(tmp_path)


def test_a_frozen_api_leaves_the_members_unknown_and_the_coordinator_is_still_asked(
    monkeypatch,
):
    c, _log, core, _apps, db = make()
    known = c.status().coordinator_dsn  # the API answered once: its addresses are kept
    monkeypatch.setattr(type(core), "list_namespaced_pod", _hang)
    monkeypatch.setattr(type(core), "read_namespaced_service", _hang)
    db.dsns.clear()
    topo, took = _timed(c)
    assert took < STATUS_BUDGET_S + 0.5
    assert topo.members == []
    assert "did not answer within" in topo.members_unanswered
    assert db.dsns == [known] and topo.coordinator_dsn == known
    assert [n.groupid for n in topo.dist_nodes] == [1, 2]  # what the coordinator still tells


def test_a_slow_api_and_the_coordinator_share_the_budget_instead_of_splitting_it(monkeypatch):
    """A loaded machine's API taking most of the budget still gives the members, and the
    coordinator (asked at once at the known address) still gives pg_dist_node."""
    c, _log, core, *_ = make()
    c.status()
    answer = type(core).list_namespaced_pod

    def slow(*a, **k):
        time.sleep(STATUS_BUDGET_S - 1.0)
        return answer(*a, **k)

    monkeypatch.setattr(type(core), "list_namespaced_pod", slow)
    topo, took = _timed(c)
    assert took < STATUS_BUDGET_S + 0.5
    assert topo.members_unanswered is None and len(topo.members) == 7
    assert [n.groupid for n in topo.dist_nodes] == [1, 2]


def test_an_api_that_is_down_says_so_at_once(monkeypatch):
    c, _log, core, *_ = make()
    c.status()

    def refused(*_a, **_k):
        raise MaxRetryError(
            None, "/api/v1/namespaces/citus/pods", NewConnectionError(None, "refused")
        )

    monkeypatch.setattr(type(core), "list_namespaced_pod", refused)
    topo, took = _timed(c)
    assert took < 1.0
    assert topo.members == [] and "failed: " in topo.members_unanswered
    assert topo.dist_nodes  # the coordinator still asked


def test_without_a_known_address_only_the_api_is_said_unanswered(monkeypatch):
    c, _log, core, _apps, db = make()
    monkeypatch.setattr(type(core), "list_namespaced_pod", _hang)
    topo, took = _timed(c)
    assert took < STATUS_BUDGET_S + 0.5
    assert topo.members_unanswered and topo.coordinator_dsn is None
    assert db.dsns == [] and topo.dist_nodes == []


def test_a_frozen_coordinator_leaves_pg_dist_node_out_and_says_so(monkeypatch):
    db = FakeCitus([], groups=[1, 2])
    db.connect = _hang
    c, *_ = make(citus=db)
    topo, took = _timed(c)
    assert took < STATUS_BUDGET_S + 0.5
    assert len(topo.members) == 7 and topo.dist_nodes == []
    assert "did not answer" in topo.shards_unanswered


def test_a_refusal_is_still_an_error_not_an_unanswered_api(monkeypatch):
    c, _log, core, *_ = make()

    def refuse(*_a, **_k):
        raise Forbidden()

    monkeypatch.setattr(type(core), "list_namespaced_pod", refuse)
    with pytest.raises(KubernetesClusterError, match="grants this"):
        c.status()


def test_a_killed_coordinator_member_is_awaited_back_like_any_other():
    """Group 0 is the coordinator's: a revive must not take its id for "not back yet"."""
    from citus_pipeline.drills.kubernetes import KubernetesFaults

    c, *_ = make()
    faults = KubernetesFaults(c, revive_timeout=5)
    faults.members_ready = lambda _group: True  # the fakes' pods carry no Ready condition
    t0 = time.monotonic()
    faults.revive("citusdemo-0-0")
    assert time.monotonic() - t0 < 5
