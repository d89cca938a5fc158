"""The pod network of the test control plane: one Linux bridge on the host, one network
namespace per pod joined to it by a veth pair.

Each pod gets its own address and its own loopback, so the manifests' ``0.0.0.0:5432`` and
``0.0.0.0:8008`` listen as they do in a real pod, and PostgreSQL's Unix socket, ports and
everything else a container keeps to itself stay per pod. Nothing leaves the machine: the
bridge has no uplink and no route out. The host (tests, the apiserver on the gateway address)
reaches every pod directly.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass, field


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class PodNetwork:
    bridge: str = "citus-k8s0"
    cidr: str = "10.203.0.0/16"
    prefix: str = "citus-pod-"
    _next: int = 10
    _pods: dict[str, str] = field(default_factory=dict)  # netns name -> address

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.cidr)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def up(self) -> PodNetwork:
        self.down()
        # a run killed before its teardown leaves its pods' namespaces (and processes) behind
        for line in _ip("netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(self.prefix):
                pids = _ip("netns", "pids", name, check=False).stdout.split()
                for pid in pids:
                    subprocess.run(["kill", "-9", pid], check=False)
                _ip("netns", "del", name, check=False)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def extra_address(self) -> str:
        """A further address on the host side of the bridge (a load balancer's ingress IP)."""
        addr = self._allocate()
        _ip("addr", "add", f"{addr}/32", "dev", self.bridge)
        return addr

    def _allocate(self) -> str:
        addr = str(self.network.network_address + 256 + self._next)
        self._next += 1
        return addr

    def add_pod(self, netns: str) -> str:
        """Create the namespace and its interface; returns the pod IP."""
        self.remove_pod(netns)
        addr = self._allocate()
        host_if = f"v{abs(hash(netns)) % 10**10:010d}"[:15]
        _ip("netns", "add", netns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", host_if, "master", self.bridge, "up")
        _ip("-n", netns, "addr", "add", f"{addr}/{self.network.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        self._pods[netns] = addr
        return addr

    def remove_pod(self, netns: str) -> None:
        # deleting the namespace deletes its end of the veth pair, and with it the host end
        _ip("netns", "del", netns, check=False)
        self._pods.pop(netns, None)

    def down(self) -> None:
        for netns in list(self._pods):
            self.remove_pod(netns)
        _ip("link", "del", self.bridge, check=False)
