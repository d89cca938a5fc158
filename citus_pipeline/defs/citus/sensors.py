"""Sensors: react to the cluster's worker set changing.

`new_workers_sensor` asks the coordinator one cheap question per tick (which active worker
groups exist -- `cluster.topology.active_worker_groups` -- and whether each holds shard
placements; catalogs only, no worker asked). Its cursor is the sorted set of those groups.
When a group appears that holds nothing while others hold shards, it asks for one
`uk_price_rebalanced` run whose run_key is the new set: a repeated tick (or one replayed
after a crash with an old cursor) never launches a second run for the same set.
"""

import json
from dataclasses import dataclass

import dagster as dg

from ...cluster.citus_meta import worker_groups_holding_shards
from .assets import uk_price, uk_price_rebalanced
from .resources import CitusResource


@dataclass(frozen=True)
class WorkerSetDecision:
    cursor: str
    run_key: str | None
    new_groups: tuple[int, ...]
    empty_groups: tuple[int, ...]


def encode_cursor(groups: list[int]) -> str:
    return json.dumps(sorted(groups))


def decode_cursor(cursor: str | None) -> list[int] | None:
    if not cursor:
        return None
    try:
        value = json.loads(cursor)
    except ValueError:
        return None
    return sorted(int(g) for g in value) if isinstance(value, list) else None


def decide_rebalance(previous_cursor: str | None, groups: dict[int, bool]) -> WorkerSetDecision:
    """What one tick does, given the last cursor and {group: holds shards} from the coordinator.

    A rebalance is wanted when a group not in the previous set holds no shards while some
    other group does (so there is a distributed table to spread). With no previous cursor
    every group counts as new: a sensor switched on after `add-worker` still sees it.
    """
    previous = decode_cursor(previous_cursor)
    current = sorted(groups)
    new = tuple(g for g in current if previous is None or g not in previous)
    empty = tuple(g for g in new if not groups[g])
    wanted = bool(empty) and any(groups.values())
    run_key = "workers:" + ",".join(str(g) for g in current) if wanted else None
    return WorkerSetDecision(encode_cursor(current), run_key, new, empty)


def read_worker_groups(citus: CitusResource) -> dict[int, bool]:
    """{active worker group: holds shards}, retried across a coordinator failover."""
    return citus.run_idempotent(
        worker_groups_holding_shards, what="new_workers_sensor: read pg_dist_node"
    )


@dg.sensor(
    name="new_workers_sensor",
    target=[uk_price_rebalanced],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one uk_price_rebalanced run when an empty worker group joins pg_dist_node.",
)
def new_workers_sensor(context: dg.SensorEvaluationContext, citus: CitusResource):
    groups = read_worker_groups(citus)
    decision = decide_rebalance(context.cursor, groups)
    context.update_cursor(decision.cursor)
    if decision.run_key is None:
        return dg.SkipReason(f"active worker groups {sorted(groups)}: nothing to rebalance")
    return dg.RunRequest(
        run_key=decision.run_key,
        tags={
            "citus/worker_groups": ",".join(str(g) for g in sorted(groups)),
            "citus/empty_groups": ",".join(str(g) for g in decision.empty_groups),
        },
    )


# Declarative automation, on by default: without a sensor of its own, Dagster's default
# automation sensor only runs once someone turns auto-materialization on for the instance.
uk_price_automation_sensor = dg.AutomationConditionSensorDefinition(
    "uk_price_automation_sensor",
    target=dg.AssetSelection.assets(uk_price),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates uk_price's automation condition: eager on every new uk_price_raw.",
)

sensors = [new_workers_sensor, uk_price_automation_sensor]

__all__ = [
    "WorkerSetDecision",
    "decide_rebalance",
    "decode_cursor",
    "encode_cursor",
    "new_workers_sensor",
    "read_worker_groups",
    "sensors",
    "uk_price_automation_sensor",
]
