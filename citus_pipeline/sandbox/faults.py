"""What the drills do to the sandbox's nodes below the API: the processes of a pod's
containers (to freeze them: the real kubelet's liveness probe then kills the container), a
node lost at once (its kubelet, kube-proxy, containerd, shims and every container killed,
its network cable pulled), as a cloud VM that dies, the network between two nodes cut
(their packets to each other dropped, as a broken link or a wrong route in a VPC does), and
one pod cut off from the API server and its group's other pods, or from everything.

The cuts are iptables rules in the mangle table of the nodes' network namespaces, each with
a comment of its own: kube-proxy and kube-router keep their rules in the nat and filter
tables and leave these alone, and there a Service's address is already translated to the
pod it leads to."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

from ..errors import SandboxError
from . import network
from .addons import kubectl
from .layout import APISERVER_PORT, GATEWAY, Layout
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


# Every rule of a cut carries this comment: healing deletes exactly these.
CUT_COMMENT = "citus-pipeline drill: nodes cut"


def _iptables(stack: NodeStack, *args: str, check: bool = True) -> bool:
    argv = ["nsenter", f"--net={stack.node.netns_path}", "iptables", "-w", *args]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.returncode == 0


def _cut_rules(there: NodeStack, pod_cidrs: dict[str, str]) -> list[list[str]]:
    """The rules a node drops the other node's packets by: its address (its kubelet, the
    load balancer addresses it announces, what it masquerades) and its pods' /24, in and
    out through the node's link."""
    cidr = pod_cidrs.get(there.node.name)
    if cidr is None:
        raise SandboxError(f"no pod CIDR recorded for node {there.node.name}: is the sandbox up?")
    nets = [there.node.address, cidr]
    tail = ["-m", "comment", "--comment", CUT_COMMENT, "-j", "DROP"]
    return [
        rule
        for net in nets
        for rule in (
            ["PREROUTING", "-i", "eth0", "-s", net, *tail],
            ["POSTROUTING", "-o", "eth0", "-d", net, *tail],
        )
    ]


def cut_nodes(stacks: list[NodeStack], a: str, b: str, pod_cidrs: dict[str, str]) -> None:
    """Nodes ``a`` and ``b`` stop hearing each other, both ways, until :func:`heal_nodes`;
    each still reaches the control plane, the host and the third node."""
    sa, sb = stack_of(stacks, a), stack_of(stacks, b)
    try:
        for here, there in ((sa, sb), (sb, sa)):
            for rule in _cut_rules(there, pod_cidrs):
                _iptables(here, "-t", "mangle", "-I", *rule)
    except SandboxError:
        heal_nodes(stacks, a, b, pod_cidrs)  # no half-made cut left behind
        raise


def heal_nodes(stacks: list[NodeStack], a: str, b: str, pod_cidrs: dict[str, str]) -> None:
    """Every rule of a cut between ``a`` and ``b`` deleted (those not there are fine)."""
    sa, sb = stack_of(stacks, a), stack_of(stacks, b)
    for here, there in ((sa, sb), (sb, sa)):
        for rule in _cut_rules(there, pod_cidrs):
            while _iptables(here, "-t", "mangle", "-D", *rule, check=False):
                pass  # a rule inserted twice goes twice


POD_CUT_COMMENT = "citus-pipeline drill: pod cut"


def cut_pod(stacks: list[NodeStack], node_name: str, pod: str, peers: list[str] | None) -> None:
    """The pod at address ``pod`` cut off until :func:`heal_pod`: from the API server (the
    DCS of Patroni's Kubernetes mode) and the addresses ``peers``, or (``peers`` None) from
    everything, its own node's pods too (their bridge passes iptables). Dropped in the
    node's FORWARD path, which the pod's traffic takes and its kubelet's probes do not: the
    pod stays alive to its kubelet, as a partitioned machine does to its own supervisor."""
    stack = stack_of(stacks, node_name)
    tail = ["-m", "comment", "--comment", POD_CUT_COMMENT, "-j", "DROP"]
    if peers is None:
        rules = [["FORWARD", "-s", pod, *tail], ["FORWARD", "-d", pod, *tail]]
    else:
        api = ["-d", GATEWAY, "-p", "tcp", "--dport", str(APISERVER_PORT)]
        rules = [["FORWARD", "-s", pod, *api, *tail]]
        for peer in peers:
            rules += [["FORWARD", "-s", pod, "-d", peer, *tail]]
            rules += [["FORWARD", "-s", peer, "-d", pod, *tail]]
    try:
        for rule in rules:
            _iptables(stack, "-t", "mangle", "-I", *rule)
    except SandboxError:
        heal_pod(stacks, node_name)  # no half-made cut left behind
        raise


def heal_pod(stacks: list[NodeStack], node_name: str) -> None:
    """Every rule of a pod cut on the node deleted, as iptables lists them."""
    stack = stack_of(stacks, node_name)
    argv = ["nsenter", f"--net={stack.node.netns_path}", "iptables", "-w", "-t", "mangle"]
    listed = subprocess.run([*argv, "-S", "FORWARD"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        if POD_CUT_COMMENT in line and line.startswith("-A "):
            _iptables(stack, "-t", "mangle", "-D", *shlex.split(line)[1:], check=False)
