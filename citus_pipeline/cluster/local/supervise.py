"""The supervisor's process: started by `up` (see :mod:`.supervisor` for what it does and
why), it probes every member each :data:`LIVENESS` period and kills and starts again the
ones that stopped answering."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from ...errors import ClusterError
from ..spec import LIVENESS, ClusterSpec, spec_from_mapping
from .cluster import LocalCluster
from .layout import Member
from .processes import member_pid, process_age
from .supervisor import FAILED, Answer, HangCounter, Supervisor, probe


def _say(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {text}", flush=True)


def _probe_all(cluster: LocalCluster, members: list[Member]) -> list[Answer]:
    def one(m: Member) -> Answer:
        try:
            with cluster.network.entered(m):
                return probe(m.api_url, LIVENESS.timeout_s, m.api_verify)
        except (OSError, ClusterError):
            return "refused"  # its namespace is gone: the member with it

    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        return list(pool.map(one, members))


def _intervene(
    cluster: LocalCluster, sup: Supervisor, m: Member, pid: int, hung_s: float, why: str
) -> bool:
    """Kill hung member ``m`` and start it again, unless a command holds the state lock or
    the member was stopped on purpose meanwhile; True if done."""
    try:
        with cluster.state.exclusive("supervisor", wait=0):
            if cluster.state.stopped().get(m.name) or member_pid(m) != pid:
                return False
            killed = cluster.kill_and_start(m)
    except ClusterError as err:
        _say(f"{m.name}: not restarted: {err}")
        return False
    sup.record(
        {
            "at": time.time(),
            "member": m.name,
            "why": why,
            "hung_s": round(hung_s, 1),
            "pids": killed,
        }
    )
    _say(f"{m.name}: {why} for {hung_s:.0f} s: killed {killed}, started again")
    return True


def _round(cluster: LocalCluster, sup: Supervisor, counter: HangCounter) -> None:
    """Probe every member once, and replace those hung for the threshold."""
    stopped = cluster.state.stopped()
    watched = [
        (m, pid) for m in cluster.members() if not stopped.get(m.name) and (pid := member_pid(m))
    ]
    answers = _probe_all(cluster, [m for m, _ in watched])
    now = time.monotonic()
    for (m, pid), answer in zip(watched, answers, strict=True):
        age = process_age(pid)
        if age is not None and counter.observe(pid, age, answer, now):
            why = FAILED[counter.last_failure(pid) or "hung"]
            _intervene(cluster, sup, m, pid, counter.hung_for(pid, now), why)
    counter.forget_except({pid for _, pid in watched})


def run(cluster: LocalCluster, stop: threading.Event) -> None:
    """A round every probe period until ``stop`` is set or the cluster is purged. A round
    that fails is logged and the next one tried: a supervisor that died would leave hung
    members to stall their groups."""
    sup = Supervisor(cluster.layout)
    counter = HangCounter()
    _say(f"supervising {cluster.spec.name} in {cluster.state_dir} (pid {os.getpid()})")
    while not stop.is_set():
        started = time.monotonic()
        if not cluster.layout.state_file.exists():
            _say("the state directory holds no cluster any more")
            break
        try:
            _round(cluster, sup, counter)
        except Exception as err:  # noqa: BLE001 - logged, then the next round
            _say(f"round failed: {err!r}")
        stop.wait(max(0.0, started + LIVENESS.period_s - time.monotonic()))
    _say("stopped")


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("state_dir", type=Path)
    state_dir = args.parse_args(argv).state_dir.resolve()
    layout_dir = state_dir / "supervisor"
    spec: ClusterSpec = spec_from_mapping(
        json.loads((layout_dir / "spec.json").read_text()), str(layout_dir / "spec.json")
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        run(LocalCluster(spec, state_dir), stop)
    except Exception as err:  # said in its log before the traceback
        _say(f"supervisor failed: {err!r}")
        raise
    return 0


__all__ = ["main", "run"]
