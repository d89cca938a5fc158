"""Every setting the project reads from the environment, each under one documented name.

The CLI, the Dagster definitions, the benchmarks and the backends read a setting through its
:class:`Setting` here, never ``os.environ`` directly, so one variable means one thing
everywhere. Names used by earlier versions still work and warn once per process.

Dagster resolves its resources' environment variables by *name* (``dg.EnvVar``), so the UI
shows the variable, never its value; :meth:`Setting.env_name` says which name is set.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC_PATH = REPO_ROOT / "cluster.yaml"
DEFAULT_WORK_DIR = REPO_ROOT / ".citus-pipeline" / "work"
DEFAULT_DAGSTER_HOME = REPO_ROOT / ".dagster_home"

_warned: set[str] = set()


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: str = ""
    deprecated: tuple[str, ...] = ()

    def env_name(self) -> str | None:
        """The variable that holds this setting (its name, or an old one, warned), if any."""
        if os.environ.get(self.name):
            return self.name
        for old in self.deprecated:
            if os.environ.get(old):
                if old not in _warned:
                    _warned.add(old)
                    warnings.warn(
                        f"{old} is deprecated: set {self.name} instead", FutureWarning, stacklevel=3
                    )
                return old
        return None

    def get(self) -> str:
        """The value from the environment, else the default ('' when there is none)."""
        name = self.env_name()
        return os.environ[name] if name else self.default

    def path(self) -> Path | None:
        value = self.get()
        return Path(value) if value else None


DSN = Setting(
    "CITUS_PIPELINE_DSN",
    "libpq conninfo of the coordinator, no password (a passfile or a Secret supplies it); "
    "default: the cluster backend's own",
    deprecated=("CITUS_COORDINATOR_DSN", "CITUS_DSN"),
)
BACKEND = Setting("CITUS_PIPELINE_BACKEND", "cluster backend: local | kubernetes", "local")
SPEC = Setting("CITUS_PIPELINE_SPEC", "cluster spec file (default: cluster.yaml of the checkout)")
STATE_DIR = Setting(
    "CITUS_PIPELINE_STATE_DIR",
    "local backend state directory (default: .citus-pipeline in the working directory)",
    deprecated=("CITUS_PIPELINE_STATE",),
)
SOURCE = Setting(
    "CITUS_PIPELINE_SOURCE", "Price Paid file, directory or URL (default: a generated sample)"
)
SAMPLE_ROWS = Setting("CITUS_PIPELINE_SAMPLE_ROWS", "rows of the generated sample", "1000000")
WORK_DIR = Setting("CITUS_PIPELINE_WORK_DIR", "where the sample is generated")
MONTHLY_DIR = Setting(
    "CITUS_PIPELINE_MONTHLY_DIR", "where the monthly update files pp-YYYY-MM.csv live"
)
QUERY_SLO = Setting("CITUS_PIPELINE_QUERY_SLO", "SLO (seconds) of the reference query", "1.0")
MONTHLY_DAY = Setting("CITUS_PIPELINE_MONTHLY_DAY", "day of month of the monthly schedule", "25")
MONTHLY_HOUR = Setting("CITUS_PIPELINE_MONTHLY_HOUR", "hour of the monthly schedule", "6")
CACHE_DIR = Setting(
    "CITUS_PIPELINE_CACHE", "download cache for URL sources (default: ~/.cache/citus-pipeline)"
)
BENCH_DIR = Setting(
    "CITUS_PIPELINE_BENCH_DIR", "scratch directory of bench load", "/tmp/citus-pipeline-bench"
)
PG_CONFIG = Setting(
    "PG_CONFIG", "pg_config of the PostgreSQL to run (default: the one on PATH, else Debian's)"
)
TEST_DSN = Setting("CITUS_PIPELINE_TEST_DSN", "tests: run the read-only tests on this cluster")

ALL = (
    DSN,
    BACKEND,
    SPEC,
    STATE_DIR,
    SOURCE,
    SAMPLE_ROWS,
    WORK_DIR,
    MONTHLY_DIR,
    QUERY_SLO,
    MONTHLY_DAY,
    MONTHLY_HOUR,
    CACHE_DIR,
    BENCH_DIR,
    PG_CONFIG,
    TEST_DSN,
)


def cache_dir() -> Path:
    """The user's cache: downloads, built images, the sandbox, the API's last answers."""
    return CACHE_DIR.path() or Path.home() / ".cache" / "citus-pipeline"


def default_state_dir() -> Path:
    return (STATE_DIR.path() or Path.cwd() / ".citus-pipeline").resolve()


__all__ = [
    "ALL",
    "BACKEND",
    "BENCH_DIR",
    "CACHE_DIR",
    "DEFAULT_DAGSTER_HOME",
    "DEFAULT_SPEC_PATH",
    "DEFAULT_WORK_DIR",
    "DSN",
    "MONTHLY_DAY",
    "MONTHLY_DIR",
    "MONTHLY_HOUR",
    "PG_CONFIG",
    "QUERY_SLO",
    "REPO_ROOT",
    "SAMPLE_ROWS",
    "SOURCE",
    "SPEC",
    "STATE_DIR",
    "TEST_DSN",
    "WORK_DIR",
    "Setting",
    "cache_dir",
    "default_state_dir",
]
