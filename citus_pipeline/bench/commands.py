"""`citus-pipeline bench`: benchmarks that print figures and ratios (never asserted in tests).

Each benchmark lives in its own module and exposes one command function; this app only
registers them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="Benchmarks: load, rebalance, queries (figures and ratios).", no_args_is_help=True
)

for _module, _func, _name in (
    ("citus_pipeline.bench.load", "load_command", "load"),
    ("citus_pipeline.bench.rebalance", "rebalance_command", "rebalance"),
    ("citus_pipeline.bench.queries", "queries_command", "queries"),
    ("citus_pipeline.bench.cluster", "cluster_command", "cluster"),
):
    try:
        _mod = importlib.import_module(_module)
    except ModuleNotFoundError as _err:
        if _err.name != _module:
            raise
        continue
    app.command(_name)(getattr(_mod, _func))

__all__ = ["app"]
