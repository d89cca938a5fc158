"""`--citus-from-host`: the machine's installed Citus, copied into the Patroni image's context.

For a machine that cannot reach the Citus package repository (this project's own test VM among
them). What Citus installs into PostgreSQL's directories is copied as it is: every `citus*.so`,
`citus_decoders/`, and the `citus*.control` / `citus*.sql` extension files; the shared
libraries they link are named as the Debian packages that ship them, which the image installs
from Debian like any other package (libcurl, liblz4, libzstd). Nothing is compiled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ..errors import ImageBuildError
from .record import citus_version

PG_MAJOR = 15
LIB_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/lib")
EXTENSION_DIR = Path(f"/usr/share/postgresql/{PG_MAJOR}/extension")
# Installed with PostgreSQL itself in the image: never named twice.
_PROVIDED = re.compile(r"^(postgresql-|libc6$|libgcc-s1$|libpq5$)")


def citus_files(lib_dir: Path = LIB_DIR, extension_dir: Path = EXTENSION_DIR) -> dict:
    libs = sorted(lib_dir.glob("citus*.so"))
    if not (lib_dir / "citus.so").exists():
        raise ImageBuildError(f"--citus-from-host: no Citus installed here ({lib_dir}/citus.so)")
    ext = sorted(extension_dir.glob("citus*.control")) + sorted(extension_dir.glob("citus*.sql"))
    if not ext:
        raise ImageBuildError(f"--citus-from-host: no citus*.control in {extension_dir}")
    return {"libs": libs, "decoders": lib_dir / "citus_decoders", "extension": ext}


def _linked(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for so in paths:
        out = subprocess.run(["ldd", str(so)], check=False, capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s+(/\S+)", line)
            if m:
                found.add(m[1])
            elif "not found" in line:
                raise ImageBuildError(f"--citus-from-host: {so} links {line.split()[0]}, absent")
    return found


def _package_of(path: str) -> str:
    """The Debian package that ships ``path`` (dpkg knows merged-/usr files under one of the
    two spellings)."""
    candidates = {path, str(Path(path).resolve())}
    candidates |= {c.removeprefix("/usr") for c in list(candidates)}
    candidates |= {"/usr" + c for c in list(candidates) if not c.startswith("/usr")}
    for c in sorted(candidates):
        proc = subprocess.run(["dpkg", "-S", c], check=False, capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.split(":", 1)[0].strip()
    raise ImageBuildError(f"--citus-from-host: no Debian package ships {path}, which Citus links")


def linked_packages(files: dict) -> list[str]:
    sos = list(files["libs"]) + sorted(Path(files["decoders"]).glob("*.so"))
    pkgs = {_package_of(p) for p in _linked(sos)}
    return sorted(p for p in pkgs if not _PROVIDED.match(p))


def copy_into(context: Path, files: dict | None = None) -> dict:
    """Fill ``context``/citus-host; returns what was copied (for the image's record)."""
    files = files or citus_files()
    dest = context / "citus-host"
    (dest / "lib").mkdir(parents=True, exist_ok=True)
    (dest / "extension").mkdir(parents=True, exist_ok=True)
    for so in files["libs"]:
        shutil.copy2(so, dest / "lib" / so.name)
    if Path(files["decoders"]).is_dir():
        shutil.copytree(files["decoders"], dest / "lib" / "citus_decoders", dirs_exist_ok=True)
    for f in files["extension"]:
        shutil.copy2(f, dest / "extension" / f.name)
    packages = linked_packages(files)
    (dest / "packages").write_text("".join(p + "\n" for p in packages))
    return {
        "version": citus_version(Path("/"), PG_MAJOR),
        "libraries": [so.name for so in files["libs"]],
        "packages": packages,
    }
