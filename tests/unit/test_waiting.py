"""The one polling primitive: returns the first done value, says what and what it last saw."""

from __future__ import annotations

import pytest

from citus_pipeline.errors import ClusterError, WaitTimeout
from citus_pipeline.waiting import until


def test_returns_the_first_truthy_value():
    seen = iter([0, [], "ready"])
    assert until(lambda: next(seen), timeout=5, interval=0) == "ready"


def test_done_judges_the_value_read():
    seen = iter([1, 2, 3, 4])
    assert until(lambda: next(seen), timeout=5, interval=0, done=lambda v: v >= 3) == 3


def test_a_timeout_names_what_was_awaited_and_the_last_state():
    with pytest.raises(WaitTimeout) as caught:
        until(
            lambda: {"leader": None},
            timeout=0.05,
            interval=0.01,
            what="a leader in group 1",
            done=lambda topo: topo["leader"] is not None,
        )
    assert isinstance(caught.value, ClusterError)
    assert "a leader in group 1" in str(caught.value)
    assert "{'leader': None}" in str(caught.value)
    assert caught.value.last == {"leader": None}


def test_ignored_errors_are_retried_and_reported_as_the_last_state():
    calls = []

    def read():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("port 5432")
        return True

    assert until(read, timeout=5, interval=0, ignore=(ConnectionRefusedError,)) is True
    with pytest.raises(WaitTimeout, match="port 5432"):
        until(
            lambda: (_ for _ in ()).throw(ConnectionRefusedError("port 5432")),
            timeout=0.02,
            interval=0.01,
            ignore=(ConnectionRefusedError,),
        )


def test_an_error_not_ignored_propagates_at_once():
    with pytest.raises(KeyError):
        until(lambda: {}["x"], timeout=5)
