"""Threads that watch a cluster while a fault lasts: who is primary, how slow `status` gets."""

from __future__ import annotations

import threading
import time

from ..cluster.topology import ClusterBackend
from .injector import FaultInjector
from .ready import MID_FAULT, primaries


class PrimaryWatch(threading.Thread):
    """Counts, twice a second, the members of a group out of recovery: more than one at a
    time is a split brain."""

    def __init__(self, c: ClusterBackend, group: int, faults: FaultInjector) -> None:
        super().__init__(daemon=True)
        self.c, self.group, self.faults, self.most = c, group, faults, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.most = max(self.most, len(primaries(self.c, self.group, self.faults)))
            self._done.wait(0.5)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.most


class StatusWatch(threading.Thread):
    """`cluster status` (with the shards, as the command prints it) asked again a second
    after each answer, for the whole scenario: the slowest answer. A call still out when
    the scenario ends counts for as long as it has been out."""

    def __init__(self, c: ClusterBackend) -> None:
        super().__init__(daemon=True)
        self.c, self.slowest = c, 0.0
        self._asked: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._asked = asked = time.monotonic()
            try:
                self.c.status()
            except MID_FAULT:
                pass  # an error is an answer too
            self.slowest = max(self.slowest, time.monotonic() - asked)
            self._asked = None
            self._done.wait(1.0)

    def stop(self) -> float:
        self._done.set()
        asked = self._asked
        if asked is not None:
            self.slowest = max(self.slowest, time.monotonic() - asked)
        self.join(timeout=30)
        return self.slowest


__all__ = ["PrimaryWatch", "StatusWatch"]
