"""Errors a user can cause locally end in one clear line and start nothing (no Citus needed)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from citus_pipeline.cluster.local import LocalCluster
from citus_pipeline.cluster.local.cluster import HOLD_ARCHIVE, RestoreStart
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import ClusterError

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"local": {"base_address": "127.0.240.0", "postgres_port": 6432, "restapi_port": 9008}}


def _state(tmp_path: Path) -> Path:
    """A state dir the service user can reach (pytest's own tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="citus-pipeline-unit-"))
    os.chmod(d, 0o755)
    _made.append(d)
    return d / "state"


_made: list[Path] = []


def _skip_without_citus() -> None:
    """Preflight checks the extension before ports and directories: without it, skip."""
    if not (
        Path(
            subprocess.run(
                ["pg_config", "--pkglibdir"], capture_output=True, text=True, check=False
            ).stdout.strip()
        )
        / "citus.so"
    ).exists():
        pytest.skip("citus extension not installed: preflight stops at the extension first")


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


def test_missing_citus_extension_is_named(tmp_path, monkeypatch):
    fake = tmp_path / "pg_config"
    lib = tmp_path / "lib"
    lib.mkdir()
    real_bindir = subprocess.run(
        ["pg_config", "--bindir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    fake.write_text(
        f"#!/bin/sh\ncase $1 in --bindir) echo {real_bindir};; --pkglibdir) echo {lib};; esac\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PG_CONFIG", str(fake))
    # pg_bin_dir() prefers the bindir's own pg_config; point the spec at a bindir without one
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "postgres").symlink_to(Path(real_bindir) / "postgres")
    spec = spec_from_mapping({**SPEC, "local": {**SPEC["local"], "pg_bin_dir": str(bindir)}})
    c = LocalCluster(spec, _state(tmp_path))
    with pytest.raises(ClusterError) as e:
        c.up(timeout=5)
    assert f"{lib}/citus.so not found" in str(e.value)
    assert "PG_CONFIG" in str(e.value)
    assert not c.is_running()


def test_port_in_use_is_named_and_nothing_starts(tmp_path):
    spec = spec_from_mapping(SPEC)
    c = LocalCluster(spec, _state(tmp_path))
    _skip_without_citus()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.241.1", 6432))  # group 1, member 1
        s.listen()
        with pytest.raises(ClusterError) as e:
            c.up(timeout=5)
    assert "127.0.241.1:6432" in str(e.value) and "in use" in str(e.value)
    assert not c.is_running()


def test_status_of_a_cluster_that_is_not_running(tmp_path):
    state = _state(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "citus_pipeline.cli", "cluster", "status"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "CITUS_PIPELINE_STATE_DIR": str(state)},
    )
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "no local cluster" in r.stderr and "cluster up" in r.stderr


def test_patroni_config_has_citus_sync_and_own_address(tmp_path):
    c = LocalCluster(spec_from_mapping(SPEC), _state(tmp_path))
    creds = {"superuser": "a", "replication": "b", "restapi": "c", "etcd": "d", "etcd_root": "e"}
    m = c.member(2, 1)
    cfg = c.patroni_config(m, creds)
    assert cfg["citus"] == {"group": 2, "database": "citus"}
    assert cfg["postgresql"]["listen"] == "127.0.242.1:6432"
    assert cfg["restapi"]["listen"] == "127.0.242.1:9008"
    assert cfg["bootstrap"]["dcs"]["synchronous_mode"] is True
    assert cfg["bootstrap"]["dcs"]["postgresql"]["parameters"]["citus.shard_count"] == 32
    # Patroni authenticates to etcd as its own user (the root password is not in its file)
    assert cfg["etcd3"] == {"hosts": ["127.0.240.254:2379"], "username": "patroni", "password": "d"}
    dsn = c.coordinator_dsn()
    assert "127.0.240.1,127.0.240.2,127.0.240.3" in dsn and "target_session_attrs=read-write" in dsn
    assert "password" not in dsn


def test_patroni_config_archives_through_pgbackrest_and_clones_from_the_repository(tmp_path):
    c = LocalCluster(spec_from_mapping(SPEC), _state(tmp_path))
    creds = {"superuser": "a", "replication": "b", "restapi": "c", "etcd": "d", "etcd_root": "e"}
    m = c.member(1, 2)
    pg = c.patroni_config(m, creds)["postgresql"]
    conf = f"--config={m.pgbackrest_conf}"
    assert pg["parameters"]["archive_mode"] == "on"
    assert pg["parameters"]["archive_command"] == (
        f"pgbackrest {conf} --stanza=citusdemo-g1 archive-push %p"
    )
    assert pg["parameters"]["unix_socket_directories"] == str(m.socket_dir)
    assert pg["recovery_conf"]["restore_command"].endswith("archive-get %f %p")
    assert pg["create_replica_methods"] == ["pgbackrest", "basebackup"]
    assert pg["pgbackrest"]["command"].endswith("--delta --type=standby restore")
    assert pg["use_unix_socket"] is True
    # inside a restore: clone from the restored leader only, and hold the WAL in pg_wal
    during = c.patroni_config(m, creds, RestoreStart())["postgresql"]
    assert "create_replica_methods" not in during
    assert during["parameters"]["archive_command"] == HOLD_ARCHIVE
    boot = c.patroni_config(m, creds, RestoreStart("pgbackrest --x restore"))["bootstrap"]
    assert boot["method"] == "pgbackrest"
    assert boot["pgbackrest"]["keep_existing_recovery_conf"] is True
    off = spec_from_mapping({**SPEC, "backup": {"archiving": False}})
    pg = LocalCluster(off, _state(tmp_path)).patroni_config(m, creds)["postgresql"]
    assert "archive_mode" not in pg["parameters"] and "recovery_conf" not in pg


def test_a_state_dir_too_deep_for_a_unix_socket_is_named(tmp_path):
    deep = _state(tmp_path).parent / ("d" * 90)
    c = LocalCluster(spec_from_mapping(SPEC), deep)
    with pytest.raises(ClusterError, match="longer than the 107 characters a unix socket"):
        c.preflight(c.members([0]), check_ports=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands Patroni to the service user")
def test_state_dir_the_service_user_cannot_reach_is_named(tmp_path):
    locked = Path(tempfile.mkdtemp(prefix="citus-pipeline-locked-"))
    _made.append(locked)
    os.chmod(locked, 0o700)
    _skip_without_citus()
    c = LocalCluster(spec_from_mapping(SPEC), locked / "state")
    with pytest.raises(ClusterError) as e:
        c.up(timeout=5)
    assert f"directory {locked} is not searchable" in str(e.value)
    assert not c.is_running() and not (locked / "state").exists()


def test_purge_deletes_only_what_the_cluster_owns(tmp_path):
    state = _state(tmp_path)
    c = LocalCluster(spec_from_mapping(SPEC), state)
    for d in ("members/x/data", "etcd/data", "bench-cluster/members", "work"):
        (state / d).mkdir(parents=True)
    for f in ("cluster.json", "secrets.json", "pgpass", "work/sample.csv"):
        (state / f).write_text("x")
    c.down(purge=True)
    assert sorted(p.name for p in state.iterdir()) == ["bench-cluster", "work"]
    assert (state / "work" / "sample.csv").exists()
    (state / "bench-cluster" / "members").rmdir()
    (state / "bench-cluster").rmdir()
    (state / "work" / "sample.csv").unlink()
    (state / "work").rmdir()
    LocalCluster(spec_from_mapping(SPEC), state).down(purge=True)
    assert not state.exists()


def test_backup_commands_without_a_cluster_say_so_and_write_nothing(tmp_path):
    from citus_pipeline.cluster.local.recovery import LocalRecovery
    from citus_pipeline.errors import BackupError

    state = _state(tmp_path)
    r = LocalRecovery(LocalCluster(spec_from_mapping(SPEC), state))
    for call in (r.list, r.restore_points, lambda: r.restore_point("x"), lambda: r.plan("x")):
        with pytest.raises(BackupError, match="no local cluster in .*: run `citus-pipeline"):
            call()
    assert not state.exists()
