"""The machine-wide kernel settings the sandbox changes, recorded before and put back by
`down`: the kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops to what it
expects (its protectKernelDefaults would refuse to start instead), and routing between the
node network and the pods needs IPv4 forwarding."""

from __future__ import annotations

from pathlib import Path

# What a kubelet writes (pkg/kubelet/cm: the kernel tunables it requires), and forwarding.
MACHINE_WIDE = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
)


def _path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read(keys=MACHINE_WIDE) -> dict[str, str]:
    return {k: _path(k).read_text().strip() for k in keys if _path(k).exists()}


def write(values: dict[str, str]) -> None:
    for key, value in values.items():
        _path(key).write_text(f"{value}\n")


def changed(saved: dict[str, str]) -> dict[str, tuple[str, str]]:
    """key -> (saved, now) for every setting that differs from what was recorded."""
    now = read(tuple(saved))
    return {k: (v, now[k]) for k, v in saved.items() if now.get(k) != v}
