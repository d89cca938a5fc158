"""The Python packages an image installs with pip, pinned to the versions of uv.lock.

`k8s/image/requirements.txt` is this module's output for the Patroni image's roots: the closure
of those requirements in the lock, markers evaluated for the image's interpreter (Debian
bookworm's CPython 3.11 on Linux), so the image runs exactly what the tests ran. Regenerate it
after `uv lock` with ``python -m citus_pipeline.images.python_pins > k8s/image/requirements.txt``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import Marker

from ..settings import REPO_ROOT

LOCK = REPO_ROOT / "uv.lock"
# What the Patroni image imports: Patroni with its psycopg 3 driver, and the Kubernetes client
# that `citus-backup schedule` execs pgBackRest with.
PATRONI_IMAGE_ROOTS = ("patroni[psycopg3]", "psycopg[binary]", "kubernetes")
# Debian bookworm's python3 on amd64, for the markers of the lock's dependency edges.
IMAGE_PYTHON = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
}
_ROOT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate({**IMAGE_PYTHON, "extra": ""})


def locked_closure(roots=PATRONI_IMAGE_ROOTS, lock: Path = LOCK) -> dict[str, str]:
    """name -> locked version of every package ``roots`` need on the image's interpreter."""
    packages = {_norm(p["name"]): p for p in tomllib.loads(lock.read_text())["package"]}
    found: dict[str, str] = {}
    todo = []
    for root in roots:
        m = _ROOT.match(root)
        if not m:
            raise ValueError(f"not a requirement name: {root!r}")
        todo.append((_norm(m[1]), [e.strip() for e in (m[2] or "").split(",") if e.strip()]))
    seen_extras: set[tuple[str, str]] = set()
    while todo:
        name, extras = todo.pop()
        if name not in packages:
            raise KeyError(f"{name} is not in {lock.name}")
        pkg = packages[name]
        found[name] = pkg["version"]
        edges = list(pkg.get("dependencies", []))
        for extra in extras:
            if (name, extra) in seen_extras:
                continue
            seen_extras.add((name, extra))
            edges += pkg.get("optional-dependencies", {}).get(extra, [])
        for dep in edges:
            dep_name = _norm(dep["name"])
            if not _applies(dep.get("marker")):
                continue
            if dep_name in found and not dep.get("extra"):
                continue
            todo.append((dep_name, list(dep.get("extra", []))))
    return dict(sorted(found.items()))


def requirements_text(roots=PATRONI_IMAGE_ROOTS, lock: Path = LOCK) -> str:
    head = "# Generated from uv.lock by citus_pipeline/images/python_pins.py; do not edit.\n"
    return head + "".join(f"{n}=={v}\n" for n, v in locked_closure(roots, lock).items())


if __name__ == "__main__":
    print(requirements_text(), end="")
