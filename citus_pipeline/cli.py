"""`citus-pipeline`: the command line. Each group of commands lives beside the code it drives."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="citus-pipeline",
    help="UK Price Paid data on a highly-available Citus cluster (Patroni + etcd), run by Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from .cluster.commands import app as cluster_app

    app.add_typer(cluster_app, name="cluster")
    for module, name in (
        ("citus_pipeline.data.commands", "data"),
        ("citus_pipeline.cluster.k8s_commands", "k8s"),
        ("citus_pipeline.bench.commands", "bench"),
        ("citus_pipeline.pipeline_commands", "pipeline"),
    ):
        try:
            mod = __import__(module, fromlist=["app"])
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue
        app.add_typer(mod.app, name=name)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
