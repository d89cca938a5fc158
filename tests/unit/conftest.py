"""Fixtures of the manifest tests (test_k8s_*.py): the committed spec and what it renders to,
built once per module."""

from __future__ import annotations

import pytest
from k8s_render import committed_spec

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.spec import ClusterSpec


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return committed_spec()


@pytest.fixture(scope="module")
def objs(spec) -> list[dict]:
    return mf.cluster_manifests(spec)
