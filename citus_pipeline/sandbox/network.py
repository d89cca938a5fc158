"""The sandbox's networks, made with iproute2: the node network (a bridge on the host whose
gateway is the host's, the apiserver's address), a network namespace per node with one veth
on that bridge, and routes for the pods.

Pod networking is plain routing, like a cloud's VPC routes: each node's pods live on the CNI
bridge inside its namespace with the /24 the controller-manager gave the node, and every other
node and the host route that /24 through the node's address. Nothing is NATed between nodes,
so a pod's address is what Patroni and Citus see.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import SandboxError
from .layout import BRIDGE, GATEWAY, NODE_NETWORK, Node


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return Path(f"/run/netns/{name}").exists()
    return Path(f"/sys/class/net/{name}").exists()


def _ns_sysctl(node: Node, key: str, value: str) -> None:
    # per network namespace (forwarding, the bridge's netfilter hook): entered, not global
    subprocess.run(
        ["nsenter", f"--net={node.netns_path}", "sysctl", "-qw", f"{key}={value}"],
        check=True,
        capture_output=True,
    )


def up_bridge() -> None:
    if not _exists("link", BRIDGE):
        ip("link", "add", BRIDGE, "type", "bridge")
    if GATEWAY not in ip("-4", "addr", "show", "dev", BRIDGE).stdout:
        ip("addr", "add", f"{GATEWAY}/{NODE_NETWORK.prefixlen}", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")


def up_node(node: Node) -> None:
    if not _exists("netns", node.netns):
        ip("netns", "add", node.netns)
    if not _exists("link", node.veth):
        ip("link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    ip("link", "set", node.veth, "master", BRIDGE, "up")
    ip("link", "set", "lo", "up", netns=node.netns)
    if node.address not in ip("-4", "addr", "show", "dev", "eth0", netns=node.netns).stdout:
        ip(
            "addr",
            "add",
            f"{node.address}/{NODE_NETWORK.prefixlen}",
            "dev",
            "eth0",
            netns=node.netns,
        )
    ip("link", "set", "eth0", "up", netns=node.netns)
    ip("route", "replace", "default", "via", GATEWAY, netns=node.netns)
    _ns_sysctl(node, "net.ipv4.ip_forward", "1")
    # Service traffic between two pods of one node's bridge passes kube-proxy's rules only
    # with the bridge's netfilter hook
    _ns_sysctl(node, "net.bridge.bridge-nf-call-iptables", "1")


def route_pods(nodes: list[Node], pod_cidrs: dict[str, str]) -> None:
    """Each node's pod CIDR through its address, on the host and in every other node."""
    for node in nodes:
        cidr = pod_cidrs.get(node.name)
        if not cidr:
            continue
        ip("route", "replace", cidr, "via", node.address)
        for other in nodes:
            if other is not node:
                ip("route", "replace", cidr, "via", node.address, netns=other.netns)


def down(nodes: list[Node], pod_cidrs: dict[str, str]) -> None:
    """Remove every route, namespace, veth and the bridge made here (what is gone is fine)."""
    for cidr in pod_cidrs.values():
        ip("route", "del", cidr, check=False)
    for node in nodes:
        ip("netns", "delete", node.netns, check=False)  # takes eth0 and so the veth pair
        if _exists("link", node.veth):
            ip("link", "delete", node.veth, check=False)
    if _exists("link", BRIDGE):
        ip("link", "delete", BRIDGE, check=False)
