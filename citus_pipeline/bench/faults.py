"""`citus-pipeline bench faults`: the fault matrix under writes, as figures, on the local
backend (the dedicated bench cluster) or on Kubernetes (``--backend kubernetes``: the
sandbox's real nodes, the cluster deployed from the sandbox's spec).

The scenarios, the writer and the check that nothing acknowledged is lost are the drills
library's (``citus_pipeline.drills``, where ``drills.runner`` says what each figure means);
the integration and Kubernetes tests run the same scenarios and assert what each must
guarantee. Each backend runs every scenario its fault injector can give, and reports: a
table, the figures as JSON (``bench-results/faults[-kubernetes].json``, and ``--json``) and a
plot of the acknowledged writes around each fault (``faults[-kubernetes].png``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..cluster import failover
from ..cluster.topology import ClusterBackend
from ..drills import (
    NETNS_SCENARIOS,
    SCENARIOS,
    FaultInjector,
    Outcome,
    injector_for,
    run_scenario,
    runnable,
    wait_whole,
)
from ..errors import ClusterError
from .backup import RESULTS

console = Console(width=160)


def print_outcomes(outcomes: list[Outcome], ttl: int, loop_wait: int) -> None:
    t = Table(title=f"Faults under single-row writes (ttl {ttl} s, loop_wait {loop_wait} s)")
    cols = ("scenario", "lost", "max gap", "failing", "failover", "registered", "recovery")
    cols = (*cols, "failed", "status", "what")
    for col in cols:
        t.add_column(col)
    for o in outcomes:
        t.add_row(
            o.name,
            f"{o.lost}/{o.acked}" + (f" (+{o.duplicated} dup)" if o.duplicated else ""),
            f"{o.max_gap_s:.1f} s",
            f"{o.failing_s:.1f} s",
            "-" if o.failover_s is None else f"{o.failover_s:.1f} s",
            "-" if o.registered_s is None else f"{o.registered_s:.1f} s",
            f"{o.recovery_s:.1f} s",
            str(o.failed),
            f"{o.max_status_s:.1f} s",
            o.detail,
        )
    console.print(t)
    for o in outcomes:
        if o.errors:
            console.print(f"{o.name}: first errors: " + " | ".join(o.errors))


def write_plot(outcomes: list[Outcome], path: Path) -> None:
    """Acknowledged writes per second around each fault: the gap a client saw, the fault's
    span shaded, Patroni's new leader and its registration in pg_dist_node marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(outcomes) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.6 * rows), squeeze=False)
    for ax, o in zip(axes.flat, outcomes, strict=False):
        end = max([o.fault_s + o.recovery_s, *o.acked_after_s], default=1.0)
        bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        ax.hist(o.acked_after_s, bins=bins, weights=[2.0] * len(o.acked_after_s), color="C0")
        ax.axvspan(0, o.fault_s, color="C3", alpha=0.12, label="fault")
        for x, label, style in (
            (o.failover_s, "new leader", "--"),
            (o.registered_s, "in pg_dist_node", ":"),
        ):
            if x is not None:
                ax.axvline(x, color="k", linestyle=style, linewidth=1, label=label)
        ax.set_title(f"{o.name}: gap {o.max_gap_s:.1f} s, lost {o.lost}/{o.acked}", fontsize=9)
        ax.set_xlabel("seconds after the fault began", fontsize=8)
        ax.set_ylabel("acked writes/s", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(outcomes) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _local(spec: str | None, quiet: bool) -> tuple[ClusterBackend, FaultInjector, Callable]:
    """The bench cluster, on its own network namespaces where this process is root (the
    partitions need them), and what takes it down."""
    from .rebalance import BENCH_STATE, bench_cluster

    netns = os.geteuid() == 0
    if not netns and not quiet:
        console.print(f"not root: no network namespaces, so not {', '.join(NETNS_SCENARIOS)}")
    cluster = bench_cluster(BENCH_STATE, spec, "netns" if netns else "loopback")
    return cluster, injector_for(cluster), lambda: cluster.down(purge=True)


def _kubernetes(quiet: bool) -> tuple[ClusterBackend, FaultInjector, Callable]:
    """The sandbox (brought up unless it runs) and the cluster of its spec deployed on it;
    what removes the cluster, and the sandbox where this run started it."""
    from ..drills.sandbox import SandboxFaults
    from ..sandbox.product import deploy, undeploy
    from ..sandbox.sandbox import Sandbox

    sandbox = Sandbox()
    started = not sandbox.plane.running()["kube-apiserver"]
    log = (lambda _m: None) if quiet else console.print
    sandbox.up(log)
    cluster = deploy(sandbox.layout)

    def down() -> None:
        undeploy(sandbox.layout, cluster.spec)
        if started:
            sandbox.down(log)

    return cluster, SandboxFaults(cluster, sandbox), down


def run_faults(
    names: list[str] | None = None,
    *,
    json_out: bool = False,
    keep: bool = False,
    spec: str | None = None,
    backend: str = "local",
) -> dict:
    """Run ``names`` (default: every scenario the backend's injector can give) one after
    the other; report them and return the figures. A scenario that does not complete is
    said and kept apart; the others still run, then this raises."""
    if backend == "kubernetes":
        cluster, injector, down = _kubernetes(json_out)
    else:
        cluster, injector, down = _local(spec, json_out)
    names = names or runnable(injector)
    outcomes, broken = [], []
    try:
        for name in names:
            if not json_out:
                console.print(f"[bold]{name}[/]: {SCENARIOS[name].what}")
            try:
                outcomes.append(run_scenario(cluster, name, faults=injector))
            except Exception as err:  # noqa: BLE001 - said, kept with the others' figures
                broken.append(f"{name}: {failover.type_and_first_line(err)}")
                console.print(f"[red]{broken[-1]}[/]")
                wait_whole(cluster, faults=injector)  # the next needs a whole cluster
    finally:
        if not keep:
            down()
    p = cluster.spec.patroni
    figures = {
        "backend": cluster.name,
        "ttl": p.ttl,
        "loop_wait": p.loop_wait,
        "failed_scenarios": broken,
        "scenarios": [
            {k: v for k, v in asdict(o).items() if k != "acked_after_s"} for o in outcomes
        ],
    }
    stem = "faults" if cluster.name == "local" else f"faults-{cluster.name}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(figures, indent=2))
    write_plot(outcomes, RESULTS / f"{stem}.png")
    if json_out:
        print(json.dumps(figures, indent=2))
    else:
        print_outcomes(outcomes, p.ttl, p.loop_wait)
        console.print(f"figures: {RESULTS / f'{stem}.json'}, plot: {RESULTS / f'{stem}.png'}")
    if broken:
        raise ClusterError("scenarios that did not complete: " + "; ".join(broken))
    return figures


__all__ = ["print_outcomes", "run_faults", "write_plot"]
