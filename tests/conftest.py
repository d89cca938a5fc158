"""Shared fixtures: real local HA Citus clusters on loopback (no mocks of PostgreSQL/Patroni/etcd).

- ``citus_cluster`` / ``citus_dsn``: one cluster for the whole session (default topology);
  tests that use it only read or work in their own tables/schemas. ``CITUS_PIPELINE_TEST_DSN``
  points the tests at an existing cluster instead.
- ``fresh_cluster``: a factory for tests that break things; each cluster is torn down after
  the test (module-scoped variant: ``fresh_cluster_module``).
- Every cluster gets its own slot of loopback addresses (127.0.40.0, 127.0.60.0, ...), so
  concurrent test runs and a developer's own cluster never collide.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from citus_pipeline import settings
from citus_pipeline.cluster.local import LocalCluster
from citus_pipeline.cluster.spec import ClusterSpec, spec_from_mapping
from citus_pipeline.errors import ClusterError

SLOT_DIR = Path(tempfile.gettempdir()) / "citus-pipeline-test-slots"


def citus_missing_reason() -> str | None:
    """None when the citus extension is installed for the PostgreSQL found, else why not."""
    pg_config = settings.PG_CONFIG.get() or shutil.which("pg_config")
    if not pg_config:
        return "PostgreSQL not found (no pg_config): the Citus tests need postgresql-15 with citus"
    lib = subprocess.run(
        [pg_config, "--pkglibdir"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not (Path(lib) / "citus.so").exists():
        return f"citus extension not installed ({lib}/citus.so missing): see README 'Citus'"
    if not shutil.which("etcd"):
        return "etcd not installed (Debian etcd-server): run scripts/bootstrap.sh"
    return None


@pytest.fixture(scope="session")
def require_citus() -> None:
    reason = citus_missing_reason()
    if reason:
        pytest.skip(reason)


class _Slot:
    """An exclusive block of loopback addresses, held with a file lock for the cluster's life."""

    def __init__(self) -> None:
        SLOT_DIR.mkdir(exist_ok=True)
        for n in range(10):
            f = open(SLOT_DIR / f"slot-{n}.lock", "w")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self.n, self._f = n, f
            return
        raise RuntimeError("no free test cluster slot (10 test clusters already running?)")

    @property
    def base_address(self) -> str:
        return f"127.0.{40 + 20 * self.n}.0"

    @property
    def netns_base_address(self) -> str:
        """The slot's private /16 for a cluster on its own network (local.network: netns)."""
        return f"10.{200 + self.n}.0.0"

    def release(self) -> None:
        self._f.close()


def make_spec(slot: _Slot, **overrides) -> ClusterSpec:
    netns = overrides.get("local", {}).get("network") == "netns"
    base = slot.netns_base_address if netns else slot.base_address
    data: dict = {"local": {"base_address": base, "postgres_port": 6432, "restapi_port": 9008}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return spec_from_mapping(data, "<test spec>")


def _state_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="citus-pipeline-test-"))
    os.chmod(d, 0o755)  # Patroni runs as the unprivileged service user when we are root
    return d


class ClusterFactory:
    def __init__(self) -> None:
        self._made: list[tuple[LocalCluster, _Slot]] = []

    def __call__(self, start: bool = True, **overrides) -> LocalCluster:
        slot = _Slot()
        try:
            cluster = LocalCluster(make_spec(slot, **overrides), _state_dir())
            self._made.append((cluster, slot))
        except BaseException:
            slot.release()
            raise
        if start:
            try:
                cluster.up()
            except ClusterError as err:
                # the state dir is purged at teardown: keep the evidence in the failure
                tail = (
                    err.log.read_text(errors="replace").splitlines()[-25:]
                    if err.log and err.log.exists()
                    else []
                )
                raise ClusterError("\n".join([str(err), *tail])) from err
        return cluster

    def close(self) -> None:
        for cluster, slot in self._made:
            try:
                cluster.down(purge=True)
                # purge deletes only what the cluster wrote; the temporary directory is ours
                shutil.rmtree(cluster.state_dir, ignore_errors=True)
            finally:
                slot.release()
        self._made.clear()


def _cluster_factory() -> Iterator[Callable[..., LocalCluster]]:
    """A factory whose clusters are all torn down when the fixture that yields it ends."""
    factory = ClusterFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def fresh_cluster(require_citus) -> Iterator[Callable[..., LocalCluster]]:
    yield from _cluster_factory()


@pytest.fixture(scope="module")
def fresh_cluster_module(require_citus) -> Iterator[Callable[..., LocalCluster]]:
    yield from _cluster_factory()


@pytest.fixture(scope="session")
def citus_cluster(require_citus) -> Iterator[LocalCluster]:
    if settings.TEST_DSN.get():
        pytest.skip(f"{settings.TEST_DSN.name} is set: tests use that cluster, not a LocalCluster")
    factory = ClusterFactory()
    try:
        yield factory()
    finally:
        factory.close()


@pytest.fixture(scope="session")
def citus_dsn(request, require_citus) -> str:
    dsn = settings.TEST_DSN.get()
    if dsn:
        return dsn
    return request.getfixturevalue("citus_cluster").coordinator_dsn()


# The test command runs two pytest-xdist workers (`-n 2 --dist loadfile`): most of a cluster
# test's time is spent waiting (Patroni's TTL, a leader race, a restore's WAL replay), so two
# run side by side in the wall time of one. A file's tests stay on one worker, so its
# module-scoped clusters start once; every k8s test shares one worker, because the pod network
# and the apiserver use fixed addresses. The longest groups start first, so neither worker is
# left with a long tail alone.
_FIRST = ("tests/k8s", "test_fault_matrix.py", "test_backup.py", "test_dagster_daemon.py")


def _scope(nodeid: str) -> str:
    """The unit of work a worker takes whole: the k8s tests together, else one file."""
    path = nodeid.split("::", 1)[0]
    return "tests/k8s" if path.startswith("tests/k8s/") else path


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist; without it, nothing to schedule
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    # xdist's loadgroup marks would do, but pytest 9 no longer lets xdist rename the node ids
    # it groups by; loadfile's scheduler, one scope wider, is the documented way
    from xdist.scheduler import LoadFileScheduling

    class FileOrK8s(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return FileOrK8s(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):
        return  # only xdist's workers collect for the scheduler; a plain run keeps its order

    def rank(item: pytest.Item) -> int:
        scope = _scope(item.nodeid)
        name = scope if scope == "tests/k8s" else item.path.name
        return _FIRST.index(name) if name in _FIRST else len(_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
