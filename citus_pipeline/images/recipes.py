"""The images this project ships, one Dockerfile each, and where each is named.

The references are the ones the rendered manifests and the Dagster values name by default
(`kubernetes.image` of the spec, the user-code image of k8s/dagster/values.yaml), under the
registry the user pushes to; the sandbox imports them into its nodes under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import REPO_ROOT

DEFAULT_REGISTRY = "cr.yandex/citus-pipeline"


@dataclass(frozen=True)
class Recipe:
    key: str  # the archive's stem: <key>.oci.tar
    repository: str  # the name under the registry
    tag: str
    dockerfile: Path
    context: Path  # the build context, as a user passes it to `buildah bud`
    copy_context: bool  # built from a copy (filled with citus-host/), not in place
    site_packages: str  # glob of the image's Python packages, for the record
    user: str  # the non-root user the image runs as (uid:gid)
    has_citus: bool = False  # takes CITUS_SOURCE (and citus-host/ with --citus-from-host)
    binaries: tuple[str, ...] = ()  # copied into the context from the Kubernetes stack's build
    inputs: tuple[str, ...] = ("**/*",)  # globs (under context) of what the build reads

    def dockerfile_in(self, context: Path) -> Path:
        """The Dockerfile within ``context`` (a copy of the recipe's context or itself)."""
        return context / self.dockerfile.relative_to(self.context)

    def reference(self, registry: str = DEFAULT_REGISTRY) -> str:
        return f"{registry.rstrip('/')}/{self.repository}:{self.tag}"


PATRONI_CITUS = Recipe(
    key="patroni-citus",
    repository="patroni-citus",
    tag="15-13.2-4.1",  # PostgreSQL major, Citus major.minor, Patroni major.minor
    dockerfile=REPO_ROOT / "k8s" / "image" / "Dockerfile",
    context=REPO_ROOT / "k8s" / "image",
    copy_context=True,
    site_packages="opt/patroni/lib/python3*/site-packages",
    user="999:999",
    has_citus=True,
)
DAGSTER = Recipe(
    key="citus-pipeline-dagster",
    repository="citus-pipeline-dagster",
    tag="0.1.0",  # the project's version (pyproject.toml)
    dockerfile=REPO_ROOT / "k8s" / "dagster" / "Dockerfile",
    context=REPO_ROOT,
    copy_context=False,
    site_packages="opt/app/.venv/lib/python3*/site-packages",
    inputs=(
        "k8s/dagster/Dockerfile",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "cluster.yaml",
        "citus_pipeline/**/*",
    ),
    user="10001:10001",
)
EXPORTER = Recipe(
    key="postgres-exporter",
    repository="postgres-exporter",
    tag="0.11.1",  # Debian bookworm's prometheus-postgres-exporter
    dockerfile=REPO_ROOT / "k8s" / "exporter" / "Dockerfile",
    context=REPO_ROOT / "k8s" / "exporter",
    copy_context=False,
    site_packages="-",  # no Python
    user="999:999",
)
POOLER = Recipe(
    key="pgbouncer",
    repository="pgbouncer",
    tag="1.18.0-2.1.2",  # Debian bookworm's pgbouncer, the exporter of its sidecar (PyPI)
    dockerfile=REPO_ROOT / "k8s" / "pooler" / "Dockerfile",
    context=REPO_ROOT / "k8s" / "pooler",
    copy_context=False,
    site_packages="opt/pgbouncer-exporter/lib/python3*/site-packages",
    user="999:999",
)
RECIPES = (PATRONI_CITUS, DAGSTER, EXPORTER, POOLER)
