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


# Every rule of a cut carries this comment: healing deletes the rules that carry it.
CUT_COMMENT = "citus-pipeline drill: cut"
_DROP = ["-m", "comment", "--comment", CUT_COMMENT, "-j", "DROP"]


def _iptables(stack: NodeStack, *args: str, check: bool = True) -> str | None:
    """iptables in the node's namespace: its output, None where it failed and ``check`` is
    off."""
    argv = ["nsenter", f"--net={stack.node.netns_path}", "iptables", "-w", *args]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        if check:
            raise SandboxError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
        return None
    return proc.stdout


def _insert(stack: NodeStack, rules: list[list[str]], chains: tuple[str, ...]) -> None:
    """Each rule (its chain first) inserted in the node's mangle table; where one fails,
    the cut's rules in ``chains`` are removed again: no half-made cut left behind."""
    try:
        for rule in rules:
            _iptables(stack, "-t", "mangle", "-I", *rule, *_DROP)
    except SandboxError:
        _remove(stack, chains)
        raise


def _remove(stack: NodeStack, chains: tuple[str, ...]) -> None:
    """Every rule of a cut in the node's mangle ``chains`` deleted, as iptables lists them
    (a rule inserted twice goes twice)."""
    for chain in chains:
        for line in (_iptables(stack, "-t", "mangle", "-S", chain, check=False) or "").splitlines():
            if CUT_COMMENT in line and line.startswith("-A "):
                _iptables(stack, "-t", "mangle", "-D", *shlex.split(line)[1:], check=False)


NODE_CHAINS = ("PREROUTING", "POSTROUTING")
POD_CHAINS = ("FORWARD",)


def _cut_rules(there: NodeStack, pod_cidrs: dict[str, str]) -> list[list[str]]:
    """The rules a node drops the other node's packets by: its address (its kubelet, the
    load balancer addresses it announces, what it masquerades) and its pods' /24, in and
    out through the node's link."""
    cidr = pod_cidrs.get(there.node.name)
    if cidr is None:
        raise SandboxError(f"no pod CIDR recorded for node {there.node.name}: is the sandbox up?")
    return [
        rule
        for net in (there.node.address, cidr)
        for rule in (
            ["PREROUTING", "-i", "eth0", "-s", net],
            ["POSTROUTING", "-o", "eth0", "-d", net],
        )
    ]


def cut_nodes(stacks: list[NodeStack], a: str, b: str, pod_cidrs: dict[str, str]) -> None:
    """Nodes ``a`` and ``b`` stop hearing each other, both ways, until :func:`heal_nodes`;
    each still reaches the control plane, the host and the third node."""
    sa, sb = stack_of(stacks, a), stack_of(stacks, b)
    try:
        for here, there in ((sa, sb), (sb, sa)):
            _insert(here, _cut_rules(there, pod_cidrs), NODE_CHAINS)
    except SandboxError:
        heal_nodes(stacks, a, b)
        raise


def heal_nodes(stacks: list[NodeStack], a: str, b: str) -> None:
    """Every rule of a cut between ``a`` and ``b`` deleted (none there is fine)."""
    for name in (a, b):
        _remove(stack_of(stacks, name), NODE_CHAINS)


def cut_pod(stacks: list[NodeStack], node_name: str, pod: str, peers: list[str] | None) -> None:
    """The pod at address ``pod`` cut off until :func:`heal_pod`: from the API server (the
    DCS of Patroni's Kubernetes mode) and the addresses ``peers``, or (``peers`` None) from
    everything, its own node's pods too (their bridge passes iptables). Dropped in the
    node's FORWARD path, which the pod's traffic takes and its kubelet's probes do not: the
    pod stays alive to its kubelet, as a partitioned machine does to its own supervisor."""
    if peers is None:
        rules = [["FORWARD", "-s", pod], ["FORWARD", "-d", pod]]
    else:
        api = ["-d", GATEWAY, "-p", "tcp", "--dport", str(APISERVER_PORT)]
        rules = [["FORWARD", "-s", pod, *api]]
        for peer in peers:
            rules += [["FORWARD", "-s", pod, "-d", peer], ["FORWARD", "-s", peer, "-d", pod]]
    _insert(stack_of(stacks, node_name), rules, POD_CHAINS)


def heal_pod(stacks: list[NodeStack], node_name: str) -> None:
    """Every rule of a pod cut on the node deleted."""
    _remove(stack_of(stacks, node_name), POD_CHAINS)
