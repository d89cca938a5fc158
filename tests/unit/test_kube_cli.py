"""`citus-pipeline cluster ... --backend kubernetes` on a fake cluster, and the server-side apply
of the rendered manifests (fake API classes: kube_fakes).
"""

from __future__ import annotations

import json

import pytest
from kube_fakes import (
    SPEC,
    FakeApiClient,
    FakeCitus,
    make,
    no_dsn_env,  # noqa: F401 -- an autouse fixture: no test here sees the caller's DSN
)

from citus_pipeline.cluster.kubernetes import manifests as mf


# ---- CLI and apply ----------------------------------------------------------------------------
def use_backend(monkeypatch, c) -> list:
    """`citus-pipeline cluster ...` gets ``c`` for its backend; returns the kinds it asked for."""
    from citus_pipeline.cli import cluster as commands

    asked: list = []

    def get_backend(spec=None, kind=None, state_dir=None, context=None):
        asked.append(kind)
        return c

    monkeypatch.setattr(commands, "get_backend", get_backend)
    return asked


def test_cluster_status_on_kubernetes_prints_the_same_tables_as_the_local_backend(monkeypatch):
    from typer.testing import CliRunner

    from citus_pipeline.cli.cluster import app

    c, *_ = make()
    asked = use_backend(monkeypatch, c)
    r = CliRunner().invoke(app, ["status", "--backend", "kubernetes"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert asked == ["kubernetes"]
    assert "Citus cluster citusdemo (kubernetes)" in r.output
    for header in ("Group", "Member", "Role", "Lag in MB", "pg_dist_node", "Shards per node"):
        assert header in r.output
    assert "citusdemo-0-2" in r.output and "sync_standby" in r.output
    r = CliRunner().invoke(app, ["status", "--json", "--backend", "kubernetes"])
    assert json.loads(r.output)["backend"] == "kubernetes"


def test_cluster_remove_worker_on_kubernetes_reports_a_failed_drain_in_one_line(monkeypatch):
    from typer.testing import CliRunner

    from citus_pipeline.cli.cluster import app

    log: list = []
    c, log, *_ = make(citus=FakeCitus(log, drain_fails=True))
    use_backend(monkeypatch, c)
    r = CliRunner().invoke(
        app, ["remove-worker", "2", "--backend", "kubernetes"], env={"COLUMNS": "300"}
    )
    assert r.exit_code == 1
    assert "error:" in r.output and "not enough space" in r.output
    assert not [e for e in log if e[0] == "delete"]


@pytest.mark.parametrize("args", [["down"], ["stop", "citusdemo-1-0"], ["start", "citusdemo-1-0"]])
def test_local_only_commands_on_kubernetes_end_in_one_error_line(monkeypatch, args):
    from typer.testing import CliRunner

    from citus_pipeline.cli.cluster import app

    c, log, *_ = make()
    use_backend(monkeypatch, c)
    r = CliRunner().invoke(app, [*args, "--backend", "kubernetes"], env={"COLUMNS": "300"})
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "local-only" in lines[0]
    assert log == []


def test_apply_is_server_side_and_never_overwrites_patronis_endpoints():
    from citus_pipeline.cluster.kubernetes.apply import apply_manifests

    objs = mf.cluster_manifests(SPEC)
    api = FakeApiClient(existing={"/api/v1/namespaces/citus/endpoints/citusdemo-0"})
    done = dict(apply_manifests(objs, api))
    assert done["Endpoints/citusdemo-0"].startswith("exists")
    assert done["Endpoints/citusdemo-1"] == "created"
    patches = [c for c in api.calls if c[0] == "PATCH"]
    assert len(patches) == len([o for o in objs if o["kind"] != "Endpoints"])
    for _, path, kw in patches:
        assert kw["header_params"]["Content-Type"] == "application/apply-patch+yaml"
        assert ("fieldManager", "citus-pipeline") in kw["query_params"]
        assert "/endpoints/" not in path
    posts = [c for c in api.calls if c[0] == "POST"]
    assert [p[1] for p in posts] == ["/api/v1/namespaces/citus/endpoints"] * SPEC.workers.groups
    assert ("PATCH", "/apis/apps/v1/namespaces/citus/statefulsets/citusdemo-2") in [
        c[:2] for c in patches
    ]
