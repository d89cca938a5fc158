"""`citus-pipeline`: the command line, one module per group of commands.

Shared pieces (consoles, the one error line, progress bars) are in ``citus_pipeline.cli.terminal``.
The CLI is the top layer: it drives cluster/, data/, the Dagster job (``citus_pipeline.pipeline``)
and the benchmarks; nothing below it imports typer or this package (tests/unit/test_layering.py).
"""

from __future__ import annotations

import typer

from .backup import app as backup_app
from .bench import app as bench_app
from .cluster import app as cluster_app
from .data import app as data_app
from .k8s import app as k8s_app
from .pipeline import app as pipeline_app

app = typer.Typer(
    name="citus-pipeline",
    help="UK Price Paid data on a highly-available Citus cluster (Patroni + etcd), run by Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# backups and restores are `cluster` commands too, kept in their own module
cluster_app.registered_commands += backup_app.registered_commands
app.add_typer(cluster_app, name="cluster")
app.add_typer(data_app, name="data")
app.add_typer(k8s_app, name="k8s")
app.add_typer(bench_app, name="bench")
app.add_typer(pipeline_app, name="pipeline")


def main() -> None:
    app()


__all__ = ["app", "main"]
