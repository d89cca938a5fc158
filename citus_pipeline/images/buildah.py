"""buildah, driven as a user would drive it, with a storage of the project's own.

The storage lives in the image cache (not /var/lib/containers), so the project never touches a
machine's other containers and a cached layer survives between builds. RUN steps use chroot
isolation: they need no OCI runtime or cgroup, which a build machine (or a CI runner, or this
VM with cgroup v1 only) may lack, and a Dockerfile's RUN means the same under it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ImageBuildError

BUILD_CA_PATH = "/run/build-ca-bundle.crt"
# What a build creates (layers, the base's files) is world-readable whatever the caller's
# umask: importing Patroni sets 0077 in a Python process, and images built under it would
# give their non-root users directories they cannot enter.
UMASK = 0o022


@contextmanager
def world_readable() -> Iterator[None]:
    """The process's umask 022 for a while (and what it was after): the files and directories
    this process makes for an image or a node stay readable for a container's non-root user.
    Also a decorator (``@world_readable()``), as every generator context manager is."""
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's Python clients trust (SSL_CERT_FILE, else Debian's)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def missing_reason() -> str | None:
    """Why images cannot be built here, or None."""
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap.sh --dev installs it)"
    if os.geteuid() != 0:
        return "building images needs root (buildah's storage and mmdebstrap's root mode)"
    return None


class Buildah:
    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self._global = [
            f"--root={storage / 'root'}",
            f"--runroot={storage / 'run'}",
            "--storage-driver=overlay",
        ]

    def _run(self, *args: str, what: str, echo: Callable[[str], None] | None = None) -> str:
        argv = ["buildah", *self._global, *args]
        if echo is None:
            proc = subprocess.run(argv, check=False, capture_output=True, text=True, umask=UMASK)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
                raise ImageBuildError(f"{what} failed (buildah {args[0]}):\n{tail}")
            return proc.stdout
        # A long build: every line to the caller (progress), the last ones kept for the error.
        lines: list[str] = []
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=UMASK
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                echo(line.rstrip())
        if proc.returncode != 0:
            tail = "\n".join(lines[-12:])
            raise ImageBuildError(f"{what} failed (buildah {args[0]}):\n{tail}")
        return "\n".join(lines)

    def has_image(self, reference: str) -> bool:
        proc = subprocess.run(
            ["buildah", *self._global, "inspect", "--type=image", reference],
            check=False,
            capture_output=True,
        )
        return proc.returncode == 0

    def import_rootfs(self, tarball: Path, reference: str) -> None:
        """A single-layer image from a root filesystem tarball (like `podman import`)."""
        ctr = self._run("from", "scratch", what="a scratch container").strip()
        try:
            self._run("add", ctr, str(tarball), "/", what=f"unpacking {tarball.name}")
            self._run("config", "--cmd=/bin/bash", "--env=LANG=C.UTF-8", ctr, what="config")
            self._run("commit", "--quiet", ctr, reference, what=f"commit of {reference}")
        finally:
            self._run("rm", ctr, what="removing the scratch container")

    def bud(
        self,
        context: Path,
        dockerfile: Path,
        reference: str,
        build_args: dict[str, str],
        echo: Callable[[str], None],
    ) -> None:
        args = ["bud", "--isolation=chroot", "--pull-never", "--layers", "--format=oci"]
        # PyPI is trusted in the build as on this machine (a proxy's CA included): the bundle
        # is mounted for the RUN steps and named by build arguments, so no layer keeps it.
        bundle = host_ca_bundle()
        if bundle is not None:
            args += [f"--volume={bundle}:{BUILD_CA_PATH}:ro"]
            build_args = {**build_args, "PIP_CERT": BUILD_CA_PATH, "SSL_CERT_FILE": BUILD_CA_PATH}
        args += [f"--build-arg={k}={v}" for k, v in build_args.items()]
        args += [f"--file={dockerfile}", f"--tag={reference}", str(context)]
        self._run(*args, what=f"the build of {reference}", echo=echo)

    def push_archive(self, reference: str, archive: Path) -> None:
        """The image as an OCI image layout in a tar, named ``reference`` inside (what
        `ctr images import` and `skopeo copy oci-archive:...` read)."""
        archive.unlink(missing_ok=True)
        self._run(
            "push",
            "--quiet",
            reference,
            f"oci-archive:{archive}:{reference}",
            what=f"writing {archive.name}",
        )

    def inspect(self, reference: str) -> dict:
        out = self._run("inspect", "--type=image", reference, what=f"inspect of {reference}")
        return json.loads(out)

    @contextmanager
    def mounted(self, reference: str) -> Iterator[Path]:
        """The image's root filesystem, read-only in spirit: what it contains is read from
        files (dpkg's status, Python's dist-info), never by running it."""
        ctr = self._run(
            "from", "--pull-never", reference, what=f"a container of {reference}"
        ).strip()
        try:
            yield Path(self._run("mount", ctr, what="mount").strip())
        finally:
            self._run("umount", ctr, what="umount")
            self._run("rm", ctr, what="rm")
