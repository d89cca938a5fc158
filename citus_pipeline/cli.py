"""`citus-pipeline`: the command line. Each group of commands lives beside the code it drives.

Shared pieces (consoles, the one error line, progress bars) are in ``citus_pipeline.terminal``.
"""

from __future__ import annotations

import typer

from .bench.commands import app as bench_app
from .cluster.backup_commands import app as backup_app
from .cluster.commands import app as cluster_app
from .cluster.k8s_commands import app as k8s_app
from .data.commands import app as data_app
from .pipeline_commands import app as pipeline_app

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

if __name__ == "__main__":
    main()
