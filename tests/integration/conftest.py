"""Fixtures the loader's integration tests share (test_load*.py): they all work in the
session's cluster (``citus_dsn``), each test in a schema of its own."""

from __future__ import annotations

import uuid

import pytest

from citus_pipeline.data import drop_all


@pytest.fixture
def schema(citus_dsn):
    """A fresh schema name for one test, dropped with everything in it afterwards."""
    name = "t_load_" + uuid.uuid4().hex[:8]
    yield name
    drop_all(citus_dsn, schema=name)
