"""`citus-pipeline cluster ...`: the HA Citus cluster from the command line, on either backend.

``--backend local`` (etcd + Patroni + PostgreSQL + Citus as local processes) or
``--backend kubernetes`` (StatefulSets, through the kubeconfig's ``--context``); the default
is ``$CITUS_PIPELINE_BACKEND``, else local. Both backends keep the ClusterBackend contract and
print the same tables. down, stop and start act on local processes and exist there only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from ..cluster.backend import BackendKind, get_backend
from ..cluster.local import LocalCluster
from ..cluster.spec import load_spec
from ..cluster.topology import ClusterBackend
from .render import print_targets, print_topology
from .terminal import ContextOpt, SpecOpt, err, fail, out, run, step_bar, user_errors

app = typer.Typer(
    help="The HA Citus cluster (etcd + Patroni + PostgreSQL + Citus): local or on Kubernetes.",
    no_args_is_help=True,
)

BackendOpt = Annotated[
    BackendKind | None,
    typer.Option(
        "--backend", help="cluster backend (default: $CITUS_PIPELINE_BACKEND, else local)"
    ),
]
CandidateOpt = Annotated[str | None, typer.Option(help="member to take over (default: a standby)")]


def _backend(spec: Path | None, kind: BackendKind | None, context: str | None) -> ClusterBackend:
    with user_errors():
        return get_backend(load_spec(spec), kind, context=context)


def _local(command: str, spec: Path | None, kind: BackendKind | None, hint: str) -> LocalCluster:
    """The local backend, or one error line: ``command`` acts on local processes only (what
    only one backend can do is a method of its class, not of the contract)."""
    c = _backend(spec, kind, None)
    if not isinstance(c, LocalCluster):
        fail(f"`cluster {command}` is local-only; on {c.name}: {hint}")
    return c


@app.command()
def up(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="seconds to wait for readiness (default: local 240, kubernetes 900)"),
    ] = None,
    with_metrics: Annotated[
        bool,
        typer.Option(
            "--with-metrics",
            help="also start an exporter per member and Prometheus (local; on Kubernetes "
            "the exporter is a sidecar of every member)",
        ),
    ] = False,
):
    """Start (or confirm) the cluster; returns when every group is ready.

    Local: every group HA and registered in Citus. Kubernetes: apply, then a leader per group.
    """
    c = _backend(spec, backend, context)
    wait: dict = {} if timeout is None else {"timeout": timeout}
    if with_metrics:
        if not isinstance(c, LocalCluster):
            fail(
                "--with-metrics is local-only; on kubernetes every member's pod has the exporter "
                "sidecar, scraped through its prometheus.io annotations or the PodMonitor"
            )
        wait["with_metrics"] = True
    t0 = time.monotonic()
    with step_bar() as progress:
        topo = run(c.up, progress=progress, **wait)
    out.print(f"cluster ready in {time.monotonic() - t0:.1f} s")
    out.print(
        f"coordinator DSN: [bold]{run(c.coordinator_dsn)}[/]", highlight=False, soft_wrap=True
    )
    for what, dsn in (("pooler DSN", topo.pooler_dsn), ("read DSN", topo.read_dsn)):
        if dsn:
            out.print(f"{what}: [bold]{dsn}[/]", highlight=False, soft_wrap=True)
    print_topology(topo, out)
    if isinstance(c, LocalCluster) and c.metrics_on():
        out.print(f"prometheus: [bold]{c.monitoring.prometheus_url}[/]")


@app.command()
def metrics(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    off: Annotated[
        bool, typer.Option("--off", help="stop the exporters and Prometheus (data stays)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Prometheus's scrape targets (every member's Patroni and exporter, etcd) and their health.

    Local only: `cluster up --with-metrics` starts the metrics stack."""
    c = _local("metrics", spec, backend, "query the Prometheus that scrapes the pods")
    if off:
        run(c.metrics_off)
        out.print("metrics stopped")
        return
    if not c.metrics_on():
        fail("metrics are off for this cluster: run `citus-pipeline cluster up --with-metrics`")
    targets = run(c.monitoring.targets)
    if as_json:
        print(json.dumps({"prometheus": c.monitoring.prometheus_url, "targets": targets}, indent=2))
        return
    out.print(f"prometheus: [bold]{c.monitoring.prometheus_url}[/]", highlight=False)
    print_targets(targets, out)


@app.command()
def status(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Members of every group (like patronictl list), pg_dist_node, and shards per node."""
    c = _backend(spec, backend, context)
    topo = run(c.status)
    if as_json:
        print(json.dumps(topo.model_dump(mode="json"), indent=2))
    else:
        print_topology(topo, out)


@app.command()
def restart(
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    rolling: Annotated[
        bool,
        typer.Option(
            "--rolling/--all-at-once",
            help="one member at a time, each group led throughout; or every member at "
            "once (each group without a primary for the restart's seconds)",
        ),
    ] = True,
    pending: Annotated[
        bool,
        typer.Option("--pending", help="only the members Patroni flags pending_restart"),
    ] = False,
    group: Annotated[
        list[int] | None, typer.Option(help="only this group (repeatable); default every group")
    ] = None,
    context: ContextOpt = None,
):
    """Restart the members' PostgreSQL, by default one at a time: in each group the
    standbys, then a switchover to the synchronous standby, then the former leader; workers
    before the coordinator. For a parameter that takes effect only at a restart. Locally
    through Patroni's REST API; on Kubernetes by deleting each member's pod, which its
    StatefulSet recreates."""
    from ..cluster.rolling import restart_all_at_once, rolling_restart

    c = _backend(spec, backend, context)
    if rolling:
        with step_bar() as progress:
            done = run(rolling_restart, c, group, pending, progress)
    else:
        with err.status("restarting every member at once"):
            done = run(restart_all_at_once, c, group, pending)
    out.print(f"restarted {len(done)} member(s): {', '.join(done) or 'none pending'}")
    print_topology(run(c.status), out)


@app.command("add-worker")
def add_worker(spec: SpecOpt = None, backend: BackendOpt = None, context: ContextOpt = None):
    """Add the next worker group (members per the spec) and wait until Citus lists it."""
    c = _backend(spec, backend, context)
    with step_bar() as progress:
        group = run(c.add_worker, progress=progress)
    out.print(f"worker group {group} added")
    print_topology(run(c.status), out)


@app.command("remove-worker")
def remove_worker(
    group: int,
    spec: SpecOpt = None,
    backend: BackendOpt = None,
    context: ContextOpt = None,
    transfer_mode: Annotated[
        str, typer.Option(help="citus shard_transfer_mode for the drain")
    ] = "block_writes",
):
    """Drain GROUP's shards (citus_drain_node), then stop and remove it; refuses if the drain fails."""
    c = _backend(spec, backend, context)
    with err.status(f"draining group {group}"):
        moved = run(c.remove_worker, group, transfer_mode)
    out.print(f"worker group {group} removed after moving {moved} shard placements")


def _leader_change_command(action: str, help_text: str) -> None:
    """``cluster switchover`` and ``cluster failover``: one command each, the same but for the
    backend method they call (named like the command) and their help."""

    def command(
        group: int,
        candidate: CandidateOpt = None,
        spec: SpecOpt = None,
        backend: BackendOpt = None,
        context: ContextOpt = None,
    ):
        c = _backend(spec, backend, context)
        with err.status(f"{action} of group {group}"):
            new = run(getattr(c, action), group, candidate)
        out.print(f"group {group}: new leader {new}")

    app.command(action, help=help_text)(command)


_leader_change_command(
    "switchover", "Planned leader change in GROUP (to its synchronous standby unless --candidate)."
)
_leader_change_command("failover", "Forced leader change in GROUP.")


@app.command()
def stop(
    member: str,
    kill: Annotated[bool, typer.Option("--kill", help="SIGKILL Patroni and PostgreSQL")] = False,
    spec: SpecOpt = None,
    backend: BackendOpt = None,
):
    """Stop one MEMBER (fault drill); Patroni fails over if it was a leader. Local only."""
    c = _local(
        "stop", spec, backend, f"`kubectl delete pod {member}` (its StatefulSet restarts it)"
    )
    run(c.stop_member, member, kill)
    out.print(f"member {member} {'killed' if kill else 'stopped'}")


@app.command()
def start(member: str, spec: SpecOpt = None, backend: BackendOpt = None):
    """Start one MEMBER again and wait until it streams. Local only."""
    c = _local("start", spec, backend, "a member's StatefulSet restarts its pod")
    with err.status(f"starting {member}"):
        run(c.start_member, member)
    out.print(f"member {member} running")


@app.command()
def down(
    purge: Annotated[
        bool, typer.Option("--purge", help="also delete data, logs and secrets")
    ] = False,
    spec: SpecOpt = None,
    backend: BackendOpt = None,
):
    """Stop every process of the cluster (etcd, Patroni, PostgreSQL). Local only."""
    c = _local("down", spec, backend, "scale or delete the StatefulSets with kubectl")
    t0 = time.monotonic()
    run(c.down, purge)
    out.print(
        f"cluster stopped in {time.monotonic() - t0:.1f} s" + ("; data deleted" if purge else "")
    )


__all__ = ["app"]
