"""What a scenario is and reports, and the step several families share: a leader lost for a
while (frozen, cut off) with its successor awaited meanwhile.

A scenario breaks one thing and ends the fault (a killed member started again, a frozen one
thawed, the DCS back); the runner (``drills.runner``) writes meanwhile and checks afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ..cluster.topology import ClusterBackend
from ..errors import ClusterError
from .injector import FaultInjector
from .ready import wait_new_leader, wait_registered


@dataclass
class FaultRun:
    """What a scenario did, in the probe's clock (monotonic seconds)."""

    started: float  # the fault began
    ended: float  # the fault was over (member back, thawed, DCS back)
    detail: str  # one line: what happened to whom
    failover_s: float | None = None  # Patroni's new leader running
    registered_s: float | None = None  # ... and named by pg_dist_node
    # undoes the scenario's setup once the writer has stopped (not part of the fault)
    cleanup: Callable[[], None] | None = None
    # the most members of the broken group seen out of recovery at once (2: split brain)
    max_primaries: int | None = None


@dataclass(frozen=True)
class Scenario:
    """One drill: what it does (a line for the report), the function that does it and ends
    it, and the faults it needs of the backend's injector."""

    name: str
    what: str
    run: Callable[[ClusterBackend, FaultInjector], FaultRun]
    needs: tuple[str, ...] = ()


def leader_lost_for(
    c: ClusterBackend,
    f: FaultInjector,
    group: int,
    old: str,
    hold: float,
    fault: AbstractContextManager,
    what: str,
    end: str,
    old_incarnation: object | None = None,
) -> FaultRun:
    """``fault`` (entered now, left after ``hold`` s) takes ``old``, the leader of ``group``;
    meanwhile Patroni's new leader and its registration in pg_dist_node are awaited (with
    ``old_incarnation``, ``old`` leading again in a new process counts too). Where the
    registration comes only once the fault is over, the detail says so, in the fault's own
    words: ``what`` it is (``"frozen 40 s"``) and its ``end`` (``"thaw"``)."""
    new, failover, registered = None, None, None
    t0 = time.monotonic()
    with fault:
        try:
            new = wait_new_leader(c, group, old, hold, old_incarnation, f)
            failover = time.monotonic() - t0
            wait_registered(c, group, new, timeout=max(1.0, t0 + hold - time.monotonic()))
            registered = time.monotonic() - t0
        except ClusterError:
            pass  # said in the detail: no leader change, or not registered, meanwhile
        time.sleep(max(0.0, t0 + hold - time.monotonic()))
    ended = time.monotonic()
    detail = f"{old} {what}"
    if new is None:
        detail += ", no new leader meanwhile"
    else:
        detail += f", {new} leads" + (" again" if new == old else "")
        if registered is None:
            wait_registered(c, group, new)
            detail += f"; in pg_dist_node only after the {end}"
            registered = time.monotonic() - t0
    return FaultRun(t0, ended, detail, failover, registered)


__all__ = ["FaultRun", "Scenario", "leader_lost_for"]
