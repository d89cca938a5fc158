"""The one `dg.Definitions` Dagster loads (`dg check defs`, `dagster dev -w workspace.yaml`).

Resources are configured from the environment where a variable is set, else the local
defaults (the embedded cluster in this checkout, a generated 1 M-row sample):

- CITUS_COORDINATOR_DSN      coordinator DSN (no password; Kubernetes maps it from a Secret)
- CITUS_PIPELINE_BACKEND     local | kubernetes
- CITUS_PIPELINE_SPEC        cluster spec file (default: cluster.yaml)
- CITUS_PIPELINE_STATE       local backend state directory
- CITUS_PIPELINE_SOURCE      Price Paid file, directory or URL (default: generated sample)
- CITUS_PIPELINE_SAMPLE_ROWS rows of the generated sample (default 1,000,000)
- CITUS_PIPELINE_WORK_DIR    where the sample is generated
- CITUS_PIPELINE_MONTHLY_DIR where the monthly update files pp-YYYY-MM.csv live
- CITUS_PIPELINE_QUERY_SLO   SLO (seconds) of the reference query's median
"""

from __future__ import annotations

import os

import dagster as dg

from .defs.citus.assets import assets
from .defs.citus.checks import QueryTimingSettings, asset_checks
from .defs.citus.resources import (
    CitusResource,
    ClusterResource,
    PricePaidFiles,
    env_int_or,
    env_or,
)
from .defs.citus.schedules import jobs, schedules
from .defs.citus.sensors import sensors


def build_resources() -> dict[str, dg.ConfigurableResource]:
    backend = os.environ.get("CITUS_PIPELINE_BACKEND", "local")
    spec = env_or("CITUS_PIPELINE_SPEC", "")
    state = env_or("CITUS_PIPELINE_STATE", "")
    return {
        "citus": CitusResource(
            dsn=env_or("CITUS_COORDINATOR_DSN", ""),
            cluster_backend=backend,
            spec_path=spec,
            state_dir=state,
        ),
        "cluster": ClusterResource(backend=backend, spec_path=spec, state_dir=state),
        "files": PricePaidFiles(
            source=env_or("CITUS_PIPELINE_SOURCE", ""),
            sample_rows=env_int_or("CITUS_PIPELINE_SAMPLE_ROWS", 1_000_000),
            work_dir=env_or("CITUS_PIPELINE_WORK_DIR", ""),
            monthly_dir=env_or("CITUS_PIPELINE_MONTHLY_DIR", ""),
        ),
        "timing": QueryTimingSettings(
            reference_slo_seconds=float(os.environ.get("CITUS_PIPELINE_QUERY_SLO", "1.0")),
        ),
    }


defs = dg.Definitions(
    assets=assets,
    asset_checks=asset_checks,
    jobs=jobs,
    schedules=schedules,
    sensors=sensors,
    resources=build_resources(),
)

__all__ = ["build_resources", "defs"]
