"""`citus-pipeline k8s sandbox ...`: a real three-node Kubernetes on this machine (root)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .terminal import err, out, user_errors

app = typer.Typer(
    help="A real three-node Kubernetes on this machine (kubelet, containerd, runc), like kind.",
    no_args_is_help=True,
)


def _sandbox():
    from ..sandbox.sandbox import Sandbox

    return Sandbox()


def _log(message: str) -> None:
    err.print(f"[bold]sandbox[/] {message}", highlight=False)


@app.command()
def up():
    """Start (or complete) the sandbox: control plane, three nodes, DNS, volumes, load balancers."""
    s = _sandbox()
    with user_errors("sandbox up"):
        timings = s.up(_log)
    out.print(f"sandbox up in {timings['total']} s", highlight=False)
    out.print(f"KUBECONFIG={s.layout.kubeconfig}", highlight=False)


@app.command()
def down():
    """Stop everything the sandbox started and remove what it made; kernel settings put back."""
    with user_errors("sandbox down"):
        _sandbox().down(_log)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False):
    """Processes of the control plane and of each node, and whether each node is Ready."""
    with user_errors("sandbox status"):
        st = _sandbox().status()
    if as_json:
        out.print_json(json.dumps(st))
        return
    for name, pid in st["control_plane"].items():
        out.print(f"{name:<24} {'pid ' + str(pid) if pid else 'not running'}", highlight=False)
    for node, procs in st["nodes"].items():
        ready = st.get("ready", {}).get(node)
        word = "Ready" if ready else "not Ready" if ready is False else "unknown"
        running = ", ".join(f"{k} {'up' if v else 'down'}" for k, v in procs.items())
        out.print(f"{node:<24} {word:<10} {running}", highlight=False)
    if "api" in st:
        out.print(f"API: {st['api']}", highlight=False)


@app.command()
def kubeconfig():
    """Print the path of the sandbox's cluster-admin kubeconfig."""
    out.print(str(_sandbox().layout.kubeconfig), highlight=False)


@app.command()
def spec():
    """Print the path of the cluster spec sized for the sandbox."""
    out.print(str(_sandbox().layout.spec_file), highlight=False)


__all__ = ["app"]
