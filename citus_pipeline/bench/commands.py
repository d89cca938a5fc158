"""`citus-pipeline bench`: benchmarks that print figures and ratios (never asserted in tests).

Each benchmark lives in its own module and exposes one command function; this app only
registers them.
"""

from __future__ import annotations

import typer

from .backup import backup_command
from .cluster import cluster_command
from .faults import faults_command
from .load import load_command
from .queries import queries_command
from .rebalance import rebalance_command
from .seed import seed_command

app = typer.Typer(
    help="Benchmarks: load, rebalance, queries, cluster, backup, faults, seed (figures and ratios).",
    no_args_is_help=True,
)
app.command("load")(load_command)
app.command("rebalance")(rebalance_command)
app.command("queries")(queries_command)
app.command("cluster")(cluster_command)
app.command("backup")(backup_command)
app.command("faults")(faults_command)
app.command("seed")(seed_command)

__all__ = ["app"]
