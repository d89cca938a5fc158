"""What the tests of growing a cluster share, locally and on Kubernetes: ticking
`new_workers_sensor` and the rebalance run it asks for."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from citus_pipeline.definitions import defs
from citus_pipeline.defs.citus.sensors import new_workers_sensor

ALL = [*defs.assets, *defs.asset_checks]

Tick = Callable[[str | None], tuple[list[dg.RunRequest], str | None]]


def sensor_ticker(instance: dg.DagsterInstance, citus) -> Tick:
    """`tick(cursor) -> (requests, cursor)`: one evaluation of the sensor from `cursor`."""

    def tick(cursor):
        with dg.build_sensor_context(
            cursor=cursor, instance=instance, resources={"citus": citus}, definitions=defs
        ) as ctx:
            out = new_workers_sensor(ctx)
            return ([out] if isinstance(out, dg.RunRequest) else []), ctx.cursor

    return tick


def materialize_rebalance(instance: dg.DagsterInstance, resources: dict, run_key: str):
    """The run a sensor request starts: `uk_price_rebalanced` and its checks, under its key."""
    return dg.materialize(
        ALL,
        instance=instance,
        resources=resources,
        selection=dg.AssetSelection.assets("uk_price_rebalanced")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("uk_price_rebalanced")),
        tags={"dagster/run_key": run_key},
    )
