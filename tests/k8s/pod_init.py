"""Runs inside a pod's fresh mount namespace (started by the pod runner as
``nsenter --net=<pod netns> unshare --mount --propagation private python pod_init.py SPEC``):
bind-mounts the pod's volumes and the image's files at their container paths, drops to the
container's user and execs the container's command. Mounts made here are the container's
alone; the host never sees them.

SPEC is a JSON file: {"mounts": [[host, container, readonly], ...], "uid": int, "gid": int,
"groups": [int], "cwd": str, "argv": [...], "env": {...}}.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path


def _mountpoint(is_dir: bool, target: Path) -> None:
    if target.exists():
        return
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # a container's processes start with the usual umask, whatever the runner's is: mount
    # points made here (parents included) must be reachable by the container's user
    os.umask(0o022)
    # Parents before children; every source opened before the first mount, because a mount
    # over /tmp would hide sources that live under /tmp (the runner's work directory).
    mounts = sorted(spec["mounts"], key=lambda m: len(Path(m[1]).parts))
    fds = [os.open(host, os.O_PATH) for host, _, _ in mounts]
    for fd, (_host, target, readonly) in zip(fds, mounts, strict=True):
        t = Path(target)
        _mountpoint(stat.S_ISDIR(os.fstat(fd).st_mode), t)
        source = f"/proc/self/fd/{fd}"
        # --no-canonicalize: mount(8) would otherwise resolve the fd's link to a path, which
        # inside this namespace can name something else (the checkout's own mount point)
        subprocess.run(
            ["mount", "--no-canonicalize", "--bind", source, str(t)], check=True, pass_fds=(fd,)
        )
        if readonly:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(t)], check=True)
    for fd in fds:
        os.close(fd)
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
