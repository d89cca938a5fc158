"""The one `dg.Definitions` Dagster loads (`dg check defs`, `dagster dev -w workspace.yaml`).

Resources are configured from the environment where a variable is set, else the local
defaults (the embedded cluster in this checkout, a generated 1 M-row sample). The variables
(`citus_pipeline.settings`, which also accepts the older names and warns):

- CITUS_PIPELINE_DSN          coordinator DSN, no password (Kubernetes maps it from a Secret)
- CITUS_PIPELINE_BACKEND      local | kubernetes
- CITUS_PIPELINE_SPEC         cluster spec file (default: cluster.yaml)
- CITUS_PIPELINE_STATE_DIR    local backend state directory
- CITUS_PIPELINE_SOURCE       Price Paid file, directory or URL (default: generated sample)
- CITUS_PIPELINE_SAMPLE_ROWS  rows of the generated sample (default 1,000,000)
- CITUS_PIPELINE_WORK_DIR     where the sample is generated
- CITUS_PIPELINE_MONTHLY_DIR  where the monthly update files pp-YYYY-MM.csv live
- CITUS_PIPELINE_QUERY_SLO    SLO (seconds) of the reference query's median
- CITUS_PIPELINE_MONTHLY_DAY  day of month of the monthly schedule (default 25)
- CITUS_PIPELINE_MONTHLY_HOUR hour of the monthly schedule (default 6)
"""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

from . import settings
from .cluster.spec import load_spec
from .defs.citus import backups, health
from .defs.citus.assets import assets
from .defs.citus.checks import QueryTimingSettings, asset_checks
from .defs.citus.resources import CitusResource, ClusterResource, PricePaidFiles
from .defs.citus.schedules import jobs, schedules
from .defs.citus.sensors import sensors

# What the code location reads, in the order of the list above (a unit test holds them equal).
SETTINGS = (
    settings.DSN,
    settings.BACKEND,
    settings.SPEC,
    settings.STATE_DIR,
    settings.SOURCE,
    settings.SAMPLE_ROWS,
    settings.WORK_DIR,
    settings.MONTHLY_DIR,
    settings.QUERY_SLO,
    settings.MONTHLY_DAY,
    settings.MONTHLY_HOUR,
)


def _setting(given: Any, setting: settings.Setting, *, by_name: bool, as_int: bool = False):
    """``given`` if not None; else the variable, as ``dg.EnvVar`` (``by_name``: the UI shows
    its name, Dagster reads it at run time) or its value now; else the setting's default."""
    if given is not None:
        return given
    name = setting.env_name()
    if name and by_name:
        return dg.EnvVar.int(name) if as_int else dg.EnvVar(name)
    value = setting.get()
    return int(value) if as_int else value


def build_resources(
    *,
    dsn: str | None = None,
    backend: str | None = None,
    spec: str | None = None,
    state_dir: str | None = None,
    source: str | None = None,
    sample_rows: int | None = None,
    sample_seed: int | None = None,
    work_dir: str | None = None,
    monthly_dir: str | None = None,
    query_slo: float | None = None,
    env_by_name: bool = True,
) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources: each value given here, else from the environment, else
    the default.

    ``env_by_name=False`` reads the environment now instead of through ``dg.EnvVar``: for
    resources also used outside a run (`pipeline run` adds a worker and times queries with
    them), since an EnvVar can only be read by Dagster.
    """

    def env(given, setting, as_int=False):
        return _setting(given, setting, by_name=env_by_name, as_int=as_int)

    # Backend is a choice Dagster validates at definition time: always a plain value.
    cluster = ClusterResource(
        backend=backend or settings.BACKEND.get(),
        spec_path=env(spec, settings.SPEC),
        state_dir=env(state_dir, settings.STATE_DIR),
    )
    files_kw = {} if sample_seed is None else {"sample_seed": sample_seed}
    return {
        "citus": CitusResource(dsn=env(dsn, settings.DSN), cluster=cluster),
        "cluster": cluster,
        "files": PricePaidFiles(
            source=env(source, settings.SOURCE),
            sample_rows=env(sample_rows, settings.SAMPLE_ROWS, as_int=True),
            work_dir=env(work_dir, settings.WORK_DIR),
            monthly_dir=env(monthly_dir, settings.MONTHLY_DIR),
            **files_kw,
        ),
        "timing": QueryTimingSettings(
            reference_slo_seconds=query_slo
            if query_slo is not None
            else float(settings.QUERY_SLO.get()),
        ),
    }


with warnings.catch_warnings():  # source code references are beta in Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    linked_assets = dg.with_source_code_references(
        [*assets, *backups.assets]
    )  # the UI links each to its code

defs = dg.Definitions(
    assets=linked_assets,
    asset_checks=[*asset_checks, *health.health_checks],
    jobs=[*jobs, *health.jobs, *backups.jobs],
    # The spec file the cluster resource reads at run time (CITUS_PIPELINE_SPEC, else
    # cluster.yaml), read here, when the code location is built, not when a module is imported.
    schedules=[*schedules, *health.schedules, backups.backup_schedule(load_spec())],
    sensors=sensors,
    resources=build_resources(),
)

__all__ = ["SETTINGS", "build_resources", "defs"]
