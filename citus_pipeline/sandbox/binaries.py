"""Where the pinned Kubernetes stack was built (scripts/k8s-control-plane.sh), and whether this
machine can run the sandbox at all."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import SandboxError
from ..settings import REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "scripts" / "k8s-control-plane.sh"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "coredns",
    "metallb-controller",
    "metallb-speaker",
    "local-path-provisioner",
    "kube-router",
    "pause",
)
MANIFESTS = ("metallb-native.yaml", "local-path-storage.yaml")  # upstream's, beside the binaries
# Debian's, used as they are: the CNI plugins and the tools that make namespaces and rules
HOST_TOOLS = ("ip", "nsenter", "iptables", "mount")
CNI_BIN = Path("/usr/lib/cni")


def pinned_release() -> str:
    for line in BUILD_SCRIPT.read_text().splitlines():
        if line.startswith('K8S_RELEASE="${K8S_RELEASE:-'):
            return line.split(":-", 1)[1].split("}", 1)[0]
    raise SandboxError(f"{BUILD_SCRIPT}: no K8S_RELEASE pin")


def bin_dir() -> Path:
    env = os.environ.get("CITUS_PIPELINE_K8S_BIN")
    release = os.environ.get("K8S_RELEASE") or pinned_release()
    base = Path(env) if env else Path.home() / ".cache" / "citus-pipeline" / f"k8s-{release}"
    return base / "bin"


def missing(components=CONTROL_PLANE + NODE) -> list[str]:
    d = bin_dir()
    absent = [c for c in components if not os.access(d / c, os.X_OK)]
    return absent + [m for m in MANIFESTS if not (d / m).exists()]


def missing_reason() -> str | None:
    """Why the sandbox cannot start on this machine, or None."""
    if os.geteuid() != 0:
        return "the k8s sandbox needs root (network namespaces, mounts, cgroups)"
    absent = missing()
    if absent:
        return f"the Kubernetes stack is not built ({', '.join(absent)}): run {BUILD_SCRIPT}"
    tools = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if tools or not (CNI_BIN / "bridge").exists():
        return (
            f"missing {', '.join(tools) or 'the CNI plugins'}: "
            "scripts/bootstrap.sh --dev installs them"
        )
    return None


def build() -> Path:
    """Run the build script (a no-op when the pinned binaries are there)."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, text=True, stdout=subprocess.PIPE
    )
    if proc.returncode != 0:
        raise SandboxError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode})")
    return Path(proc.stdout.strip().splitlines()[-1])


def exe(name: str) -> str:
    return str(bin_dir() / name)
