"""What the drills do to the sandbox's nodes below the API: the processes of a pod's
containers (to freeze them: the real kubelet's liveness probe then kills the container), and
a node lost at once (its kubelet, kube-proxy, containerd, shims and every container killed,
its network cable pulled), as a cloud VM that dies."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from ..errors import SandboxError
from . import network
from .addons import kubectl
from .layout import Layout
from .network import ip
from .node import NodeStack, kill_matching

CGROUP_PIDS = Path("/sys/fs/cgroup/pids")


def _pod(layout: Layout, namespace: str, name: str) -> dict:
    return json.loads(kubectl(layout, "-n", namespace, "get", "pod", name, "-o", "json"))


def stack_of(stacks: list[NodeStack], node_name: str) -> NodeStack:
    for s in stacks:
        if s.node.name == node_name:
            return s
    raise SandboxError(f"no sandbox node named {node_name}")


def pod_processes(layout: Layout, stacks: list[NodeStack], namespace: str, name: str) -> list[int]:
    """Every pid of the pod's running containers, as its node's containerd lists them."""
    pod = _pod(layout, namespace, name)
    stack = stack_of(stacks, pod["spec"]["nodeName"])
    pids: list[int] = []
    for status in pod["status"].get("containerStatuses", []):
        cid = status.get("containerID", "").removeprefix("containerd://")
        if not cid or "running" not in status.get("state", {}):
            continue
        out = stack.ctr("tasks", "ps", cid).stdout.splitlines()[1:]
        pids += [int(line.split()[0]) for line in out if line.strip()]
    return pids


def node_cgroup_pids(stack: NodeStack) -> list[int]:
    """Every process in the node's cgroup subtree: its pods' containers."""
    top = CGROUP_PIDS / stack.node.cgroup_root.lstrip("/")
    pids: set[int] = set()
    for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
        try:
            pids |= {int(p) for p in procs.read_text().split()}
        except OSError:
            continue
    return sorted(pids)


def lose_node(stacks: list[NodeStack], node_name: str) -> list[int]:
    """Kill the node whole, at once; returns the container pids killed. `sandbox up` (or
    :func:`revive_node`) brings it back as a rebooted VM."""
    stack = stack_of(stacks, node_name)
    # the cable first: from now on nothing of the node answers (a crashed VM sends no RST)
    ip("link", "set", "eth0", "down", netns=stack.node.netns)
    for d in stack.daemons:
        d.send_signal(signal.SIGKILL)
    kill_matching(str(stack.node.containerd_socket))  # the shims
    pids = node_cgroup_pids(stack)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def revive_node(stack: NodeStack) -> None:
    """The node booted again: its network as `up` makes it, then its daemons."""
    network.up_node(stack.node)
    stack.start_containerd()
    stack.start_kubelet()
    stack.start_kube_proxy()
