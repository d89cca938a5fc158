"""What an image contains, read from its files: Debian packages (dpkg's status), Python
packages (dist-info), the config's user and entrypoint. Written beside the archives as
`images.json`, and what the tests compare with the machine the local tests ran on."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def dpkg_packages(root: Path) -> dict[str, str]:
    """Installed packages of the filesystem at ``root``: name -> version."""
    path = root / "var" / "lib" / "dpkg" / "status"
    if not path.exists():  # an image FROM scratch
        return {}
    status = path.read_text()
    out = {}
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.MULTILINE))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(out.items()))


def python_packages(root: Path, site_glob: str) -> dict[str, str]:
    out = {}
    for info in root.glob(f"{site_glob}/*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return dict(sorted(out.items()))


def inputs_digest(context: Path, patterns: tuple[str, ...], extra: tuple[Path, ...] = ()) -> str:
    """sha256 over the build's inputs (paths and contents): an archive whose recorded digest
    still matches was built from these same files and need not be built again."""
    h = hashlib.sha256()
    files = sorted({p for pat in patterns for p in context.glob(pat) if p.is_file()})
    for path in [*files, *extra]:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(context) if path.is_relative_to(context) else path).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def citus_version(root: Path, pg_major: int = 15) -> str | None:
    control = root / f"usr/share/postgresql/{pg_major}/extension/citus.control"
    if not control.exists():
        return None
    m = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text())
    return m[1] if m else None


def image_config(inspect: dict) -> dict:
    """User, entrypoint, command and environment of a `buildah inspect --type=image`."""
    cfg = inspect.get("OCIv1", {}).get("config", {})
    return {
        "user": cfg.get("User", ""),
        "entrypoint": cfg.get("Entrypoint") or [],
        "cmd": cfg.get("Cmd") or [],
        "env": cfg.get("Env") or [],
    }
