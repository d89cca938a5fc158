"""What the pod runner runs for an image: the project's own images are read from their
Dockerfiles (ENTRYPOINT, ENV, WORKDIR) and their files come from this checkout; third-party
images map to the same program from Debian's packages. No image is pulled or built.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Image:
    entrypoint: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    # (host path, container path): the image's own files, mounted read-only
    files: list[tuple[str, str]] = field(default_factory=list)
    # directories the image creates for its user (writable, empty in a new container)
    owned: list[str] = field(default_factory=list)


# what a base image's PATH is before a Dockerfile's ENV extends it
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _dockerfile(path: Path) -> tuple[list[str], dict[str, str], str]:
    """ENTRYPOINT, ENV (with ARG defaults and earlier variables substituted) and WORKDIR of a
    Dockerfile."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    env: dict[str, str] = {}

    def subst(value: str) -> str:
        known = {"PATH": BASE_PATH, **args, **env}
        return re.sub(r"\$\{?(\w+)\}?", lambda m: known.get(m.group(1), ""), value)

    entry: list[str] = []
    workdir = "/"
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
        elif word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                env[k] = subst(v)
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "WORKDIR":
            workdir = rest.strip()
    return entry, env, workdir


def patroni_citus(bin_dir: Path) -> Image:
    """k8s/image: its entrypoint and citus-backup from this checkout, Patroni and the Python
    packages from the project's environment at /opt/patroni, PostgreSQL 15, Citus and
    pgBackRest from the machine."""
    image_dir = REPO / "k8s" / "image"
    entry, env, workdir = _dockerfile(image_dir / "Dockerfile")
    bin_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.chmod(0o755)
    for name, src in (("citus-entrypoint", "entrypoint.py"), ("citus-backup", "backup.py")):
        link = bin_dir / name
        if not link.is_symlink():
            link.symlink_to(image_dir / src)
    return Image(
        entrypoint=entry,
        env=env,
        workdir=workdir,
        files=[
            (str(REPO / ".venv"), "/opt/patroni"),
            (str(bin_dir), "/usr/local/bin"),
            # the environment's scripts and the links above point into the checkout by its
            # path, which the pod's own /tmp would hide when the checkout lives under /tmp
            (str(REPO), str(REPO)),
        ],
    )


def dagster_user_code() -> Image:
    """k8s/dagster: the checkout is the image's /opt/app (its pyproject, package, cluster.yaml
    and .venv, which the Dockerfile copies and syncs); the directories the Dockerfile makes
    for its user are empty and writable."""
    _, env, workdir = _dockerfile(REPO / "k8s" / "dagster" / "Dockerfile")
    owned = [env[k] for k in ("DAGSTER_HOME", "CITUS_PIPELINE_WORK_DIR") if k in env]
    return Image(
        entrypoint=[],
        env=env,
        workdir=workdir,
        files=[(str(REPO), workdir), (str(REPO), str(REPO))],
        owned=owned,
    )


def postgres_exporter() -> Image:
    exe = shutil.which("prometheus-postgres-exporter") or "/usr/bin/prometheus-postgres-exporter"
    return Image(entrypoint=[exe], env={"PATH": "/usr/local/bin:/usr/bin:/bin"})


def resolve(image: str, bin_dir: Path) -> Image:
    if "patroni-citus" in image:
        return patroni_citus(bin_dir)
    if "citus-pipeline-dagster" in image or "dagster/dagster-celery-k8s" in image:
        # the chart's own daemon image carries the same locked Dagster packages
        return dagster_user_code()
    if "postgres-exporter" in image:
        return postgres_exporter()
    raise KeyError(f"the pod runner has no stand-in for image {image!r}")
