"""The base image: Debian bookworm from Debian's own repository, made by mmdebstrap.

The Dockerfiles start `FROM ${BASE_IMAGE}` (default `debian:bookworm-slim`, which a user's
registry serves). Where no registry is reachable the build makes the same thing here: the
minbase variant with bookworm, bookworm-updates and bookworm-security (the suites Debian's own
image lists, so PostgreSQL is the security suite's minor, as on the machine running the local
backend), trimmed like Debian's -slim images (no manuals, docs or locales), without apt lists.
The tarball is cached for a week: a newer security update is picked up by the next refresh.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from ..errors import ImageBuildError

SUITE = "bookworm"
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
BASE_REFERENCE = f"localhost/citus-pipeline/debian:{SUITE}-slim"
MAX_AGE_S = 7 * 24 * 3600
# What Debian's slim images leave out (dpkg path filters, so later apt-get installs obey them
# too: the filter file stays in the image).
SLIM_EXCLUDES = (
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    "/usr/share/linda/*",
)
SLIM_INCLUDES = ("/usr/share/doc/*/copyright",)  # licences stay with the binaries


def mmdebstrap_args(out: Path) -> list[str]:
    filters = [f"path-exclude={p}" for p in SLIM_EXCLUDES]
    filters += [f"path-include={p}" for p in SLIM_INCLUDES]
    args = ["mmdebstrap", "--variant=minbase", "--format=tar", "--mode=root"]
    args += [f"--dpkgopt={f}" for f in filters]
    # apt's lists are downloaded again by the Dockerfiles' own `apt-get update`
    args += ["--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*"]
    args += [SUITE, str(out), *MIRRORS]
    return args


def base_tarball(cache: Path, *, refresh: bool = False, log=None) -> tuple[Path, bool]:
    """The cached rootfs tarball (made when missing, older than a week, or ``refresh``), and
    whether it was made now."""
    out = cache / f"debian-{SUITE}-slim.tar"
    if out.exists() and not refresh and time.time() - out.stat().st_mtime < MAX_AGE_S:
        return out, False
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.tar")
    proc = subprocess.run(
        mmdebstrap_args(partial), check=False, capture_output=True, text=True, umask=0o022
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ImageBuildError(f"mmdebstrap of Debian {SUITE} failed:\n{tail}")
    partial.replace(out)
    if log:
        log(f"made the Debian {SUITE} base ({out.stat().st_size / 1e6:.0f} MB)")
    return out, True
