"""ClusterSpec validation: every bad spec is refused up front, naming the field and the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from citus_pipeline.cluster.spec import (
    DEFAULT_SPEC_PATH,
    ClusterSpec,
    load_spec,
    spec_from_mapping,
)
from citus_pipeline.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_default_file_is_the_reference_topology():
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.name == "citusdemo" and spec.database == "citus" and spec.shard_count == 32
    assert spec.coordinator.members == 3
    assert (spec.workers.groups, spec.workers.members) == (2, 2)
    assert spec.patroni.synchronous_mode is True
    assert str(spec.member_address(0, 1)) == "127.0.10.1"
    assert str(spec.member_address(2, 2)) == "127.0.12.2"
    assert str(spec.etcd_address) == "127.0.10.254"
    assert str(spec.prometheus_address) == "127.0.10.253"
    # off the ports Debian's own prometheus and postgres-exporter services take
    assert (spec.local.prometheus_port, spec.local.exporter_port) == (19090, 19187)
    assert spec.local.pooler_exporter_port == 19127


@pytest.mark.parametrize(
    "text, field, reason",
    [
        ("name: [unclosed", "line 1", "invalid YAML"),
        ("workers:\n  groups: 2\n  replicas: 3\n", "workers.replicas", "unknown field"),
        ("workers:\n  groups: 0\n", "workers.groups", "greater than or equal to 1"),
        ("local:\n  base_address: 10.0.0.0\n", "local.base_address", "not a loopback"),
        (
            "local:\n  etcd_address: 127.0.10.1\n  etcd_client_port: 5432\n",
            "(top level)",
            "address clash",
        ),
        ("local:\n  restapi_port: 5432\n", "(top level)", "address clash"),
        ("local:\n  exporter_port: 8008\n", "(top level)", "address clash"),
        ("local:\n  pooler_exporter_port: 6432\n", "(top level)", "address clash"),
        (
            "local:\n  prometheus_address: 127.0.10.254\n  prometheus_port: 2379\n",
            "(top level)",
            "address clash",
        ),
        ("local:\n  prometheus_retention: forever\n", "local.prometheus_retention", "match"),
        ("metrics:\n  scrape_interval: 0\n", "metrics.scrape_interval", "greater than"),
        (
            "patroni:\n  ttl: 10\n  loop_wait: 5\n  retry_timeout: 5\n",
            "patroni",
            "must not exceed ttl",
        ),
        (
            "postgresql:\n  parameters:\n    port: 5433\n",
            "postgresql.parameters",
            "set by the backend",
        ),
        ("- just\n- a list\n", "", "must be a mapping"),
        (
            "local:\n  network: netns\n  base_address: 127.0.10.0\n",
            "local",
            "a private /16 that ends in .0.0",
        ),
        (
            "local:\n  network: netns\n  etcd_address: 127.0.10.254\n",
            "local",
            "it is the bridge's",
        ),
    ],
)
def test_bad_specs_name_field_and_reason(tmp_path, text, field, reason):
    p = tmp_path / "cluster.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    assert field in msg and reason in msg, msg
    assert "\n" not in msg


def test_clash_message_names_both_sides():
    with pytest.raises(
        SpecError, match=r"etcd client and member 0-1 postgres|member 0-1 postgres and etcd"
    ):
        spec_from_mapping({"local": {"etcd_address": "127.0.10.1", "etcd_client_port": 5432}})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_is_immutable():
    spec = ClusterSpec()
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


def test_cli_refuses_bad_spec_before_starting_anything(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers:\n  groups: 0\n")
    state = tmp_path / "state"
    r = subprocess.run(
        [sys.executable, "-m", "citus_pipeline.cli", "cluster", "up", "--spec", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={"CITUS_PIPELINE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "workers.groups" in lines[0], r.stderr
    assert not state.exists()


def test_netns_puts_the_cluster_on_a_private_16_with_etcd_on_the_bridge():
    spec = spec_from_mapping({"local": {"network": "netns"}})
    assert str(spec.member_address(0, 1)) == "10.213.0.1"
    assert str(spec.member_address(2, 2)) == "10.213.2.2"
    assert (str(spec.etcd_address), str(spec.prometheus_address)) == (
        "10.213.0.254",
        "10.213.0.253",
    )
    assert str(ClusterSpec().local.base_address) == "127.0.10.0"  # loopback stays the default


def test_every_node_connection_gets_tcp_timeouts_unless_the_spec_sets_its_own():
    from citus_pipeline.cluster.local.layout import Layout
    from citus_pipeline.cluster.local.patroni import patroni_config
    from citus_pipeline.cluster.spec import TCP_TIMEOUTS

    def conninfo(spec):
        m = Layout(spec, Path("/x")).member(1, 1)
        creds = dict.fromkeys(("superuser", "replication", "restapi", "etcd"), "pw")
        cfg = patroni_config(spec, m, creds, Path("/usr/lib/postgresql/15/bin"))
        assert "citus.node_conninfo" not in cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]
        return cfg["postgresql"]["parameters"]["citus.node_conninfo"]

    tls = "sslmode=verify-full sslrootcert=/x/tls/ca.crt"
    assert conninfo(load_spec(DEFAULT_SPEC_PATH)) == f"{tls} {TCP_TIMEOUTS}"
    plain = spec_from_mapping({"tls": {"enabled": False}})
    assert conninfo(plain) == f"sslmode=disable {TCP_TIMEOUTS}"
    own = "sslmode=disable keepalives=0"
    params = {**ClusterSpec().postgresql.parameters, "citus.node_conninfo": own}
    assert conninfo(spec_from_mapping({"postgresql": {"parameters": params}})) == own
