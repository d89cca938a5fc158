"""What a state directory records about its cluster (cluster.json), and who may change it.

cluster.json holds the worker groups (the spec's plus those added since), the members stopped
on purpose, the groups `down` left in maintenance mode, whether the metrics stack follows the
cluster, and the part of the spec the cluster was made from. One state-changing command runs at a time per directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from typing import IO

from ...errors import ClusterError, WaitTimeout
from ...settings import STATE_DIR
from ...waiting import until
from ..spec import ClusterSpec
from .layout import Layout

STATE_ENV = STATE_DIR.name

# the spec fields a cluster's processes and data are made from; the rest may change freely
TOPOLOGY_FIELDS = {"name", "database", "coordinator", "workers", "local"}
# ... but not these of `local`: `up` starts or stops the supervisor as the spec now says
NOT_TOPOLOGY = {"local": {"supervisor"}}


def _topology(spec: ClusterSpec) -> dict:
    dumped = spec.model_dump(mode="json", include=TOPOLOGY_FIELDS)
    for section, keys in NOT_TOPOLOGY.items():
        for key in keys:
            dumped[section].pop(key, None)
    return dumped


# what `down --purge` deletes: only what this cluster wrote (other tools keep their own
# files, even other clusters' state directories, under the same directory); "backup" holds
# the default pgBackRest repository: a purged cluster's backups cannot serve a new one
OWNED = (
    "members",
    "etcd",
    "metrics",
    "backup",
    "supervisor",
    "pooler",
    "tls",
    "cluster.json",
    "secrets.json",
    "pgpass",
    ".lock",
)


def _known_part(recorded: object, current: object) -> object:
    """``current`` limited to the fields ``recorded`` has: a field added to the spec since the
    cluster was made (with its default) is not a change of topology."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return {k: _known_part(recorded[k], current.get(k)) for k in recorded}
    return current


def _try_lock(f: IO) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another process holds it
        return False
    return True


class ClusterState:
    """cluster.json of one state directory, written atomically, and its advisory lock."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def read(self) -> dict:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, state: dict) -> None:
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.layout.state_file)

    def worker_groups(self) -> list[int]:
        """The spec's worker groups, plus any added with add-worker."""
        return list(self.read().get("worker_groups") or self.layout.spec.worker_groups)

    def stopped(self) -> dict[str, bool]:
        """Members stopped on purpose (fault drills), whose exit is no failure."""
        return self.read().get("stopped", {})

    @contextlib.contextmanager
    def exclusive(self, what: str, wait: float = 300) -> Iterator[None]:
        """One state-changing command at a time per state directory (up, down, add, remove)."""
        lock = self.layout.lock_file
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as f:
            try:
                until(lambda: _try_lock(f), wait, 0.2, f"the lock {lock}")
            except WaitTimeout:
                raise ClusterError(
                    f"another command holds {lock} for longer than {wait:.0f} s; "
                    f"`{what}` did not run"
                ) from None
            yield

    def record_spec(self, state: dict) -> None:
        """Put the spec this directory's cluster is made from into ``state`` (not yet saved)."""
        state["spec"] = _topology(self.layout.spec)

    def check_same_topology(self) -> None:
        recorded = self.read().get("spec")
        if not recorded:
            return
        current = _topology(self.layout.spec)
        for key in current:
            if _known_part(recorded.get(key), current[key]) != recorded.get(key):
                raise ClusterError(
                    f"{self.layout.state_dir} holds a cluster made from a different spec (field "
                    f"{key!r} changed); run `citus-pipeline cluster down --purge` first or set "
                    f"{STATE_ENV}"
                )

    def purge(self) -> None:
        state_dir = self.layout.state_dir
        for name in OWNED:
            path = state_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if state_dir.exists() and not any(state_dir.iterdir()):
            state_dir.rmdir()


__all__ = ["OWNED", "STATE_ENV", "TOPOLOGY_FIELDS", "ClusterState"]
