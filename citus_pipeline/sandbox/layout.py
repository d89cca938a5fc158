"""Every name, address and path of the sandbox, in one place.

Addresses: the node network is a bridge on the host (the control plane listens on its
gateway); each node is a network namespace with one veth on it. Pods get a /24 of the cluster
CIDR per node (the controller-manager allocates it), routed through the node's address, so
this machine reaches every pod and every LoadBalancer address as a client in the cloud would.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..images.build import image_cache

BRIDGE = "cpsbr0"
NODE_NETWORK = ipaddress.ip_network("172.30.0.0/24")
GATEWAY = str(NODE_NETWORK[1])  # the host's address on the bridge: the apiserver's
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# MetalLB's L2 pool: LoadBalancer Services get an address on the node network
LB_RANGE = (str(NODE_NETWORK[200]), str(NODE_NETWORK[239]))
APISERVER_PORT = 6443
# Every process of the sandbox creates what containers read (snapshot roots, volume and
# Secret directories) world-readable, whatever its caller's umask: importing Patroni sets 0077
# in a Python process, and a container's non-root user then could not even stat its own /.
UMASK = 0o022
ZONES = ("ru-central1-a", "ru-central1-b", "ru-central1-d")  # the Yandex node group's zones


@dataclass(frozen=True)
class Node:
    index: int
    root: Path

    @property
    def zone(self) -> str:
        return ZONES[self.index]

    @property
    def name(self) -> str:  # like a Yandex node group's nodes: one per zone
        return f"sandbox-{self.zone}"

    @property
    def address(self) -> str:
        return str(NODE_NETWORK[11 + self.index])

    @property
    def netns(self) -> str:
        return f"cps-{self.zone.rsplit('-', 1)[1]}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def veth(self) -> str:  # the host end (IFNAMSIZ: 15 characters at most)
        return f"cps-{self.zone.rsplit('-', 1)[1]}-h"

    @property
    def dir(self) -> Path:
        return self.root / "nodes" / self.name

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def containerd_socket(self) -> Path:
        return self.path("containerd", "containerd.sock")

    @property
    def cgroup_root(self) -> str:  # each kubelet's own subtree of the one v1 hierarchy
        return f"/{self.name}"

    @property
    def volumes(self) -> Path:  # the local PersistentVolumes' directories
        return self.path("volumes")


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(settings.cache_dir() / "sandbox")

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(Node(i, self.root) for i in range(len(ZONES)))

    @property
    def control_plane(self) -> Path:
        return self.root / "control-plane"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.pki / "admin.kubeconfig"

    @property
    def passfile(self) -> Path:  # PGPASSFILE for the members' superuser
        return self.root / "pgpass"

    @property
    def state_file(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def spec_file(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def images(self) -> Path:
        """The OCI archives imported into every node: kept with the image cache, so a
        `sandbox down` costs no rebuild."""
        return image_cache() / "archives"

    @property
    def api_url(self) -> str:
        return f"https://{GATEWAY}:{APISERVER_PORT}"
