"""The fault injector of a cluster on the `k8s sandbox`: what the Kubernetes injector gives
through the API, and what the sandbox's machine gives below it, as a cloud's console would:
a pod's processes frozen (its node's containerd lists them), the API server stopped (the DCS
of Patroni's Kubernetes mode; killed and started again, as a control plane that crashed: a
frozen one would answer its queued requests late, which no real outage does), a node lost
whole and booted again, the network between two nodes cut and healed, a pod cut off from
the API server and its group's other pods (or from everything) and healed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from ..cluster.kubernetes import KubernetesCluster
from ..cluster.kubernetes import manifests as mf
from ..errors import ClusterError
from ..sandbox.sandbox import Sandbox
from ..waiting import until
from .injector import DCS, FREEZE, KILL, LINK, MEMBER_SQL, NODE, PARTITION
from .kubernetes import KubernetesFaults


class SandboxFaults(KubernetesFaults):
    dcs_fault = "kube-apiserver stopped"

    def __init__(self, cluster: KubernetesCluster, sandbox: Sandbox, **kw) -> None:
        super().__init__(cluster, pod_processes=sandbox.pod_processes, **kw)
        self.sandbox = sandbox
        self.faults = frozenset({KILL, FREEZE, DCS, NODE, LINK, PARTITION, MEMBER_SQL})

    @contextmanager
    def dcs_frozen(self) -> Iterator[None]:
        api = self.sandbox.plane.daemon("kube-apiserver")
        if not api.pid():
            raise ClusterError("the sandbox's kube-apiserver is not running")
        api.send_signal(signal.SIGKILL)
        until(lambda: api.pid() is None, 10, 0.1, "kube-apiserver to be gone")
        try:
            yield
        finally:
            self.sandbox.plane.start()  # starts what does not run: the API server

    @contextmanager
    def node_lost(self, name: str) -> Iterator[str]:
        node = self.machine_of(name)
        self.sandbox.lose_node(node)
        try:
            yield node
        finally:
            self.sandbox.revive_node(node)
            groups = sorted(self.kube.statefulset_groups())
            until(
                lambda: all(self.members_ready(g) for g in groups),
                self.revive_timeout,
                2,
                f"every member ready again after node {node} booted",
            )

    @contextmanager
    def machines_cut(self, a: str, b: str) -> Iterator[str]:
        na, nb = self.machine_of(a), self.machine_of(b)
        if na == nb:
            raise ClusterError(f"{a} and {b} both run on node {na}: no network between them")
        self.sandbox.cut_nodes(na, nb)
        try:
            yield f"nodes {na} and {nb}"
        finally:
            self.sandbox.heal_nodes(na, nb)

    @contextmanager
    def cut_off(self, name: str, whole: bool) -> Iterator[None]:
        """The pod cut off as the local partitions cut a member off: from the DCS (here the
        API server) and its group's other members, the coordinator still reaching it, or
        from everything."""
        pod = self.kube.core.read_namespaced_pod(name, self.namespace)
        node, address = pod.spec.node_name, pod.status.pod_ip
        if not address:
            raise ClusterError(f"pod {name} has no address to cut off")
        peers = None
        if not whole:
            group = int(pod.metadata.labels[mf.GROUP_LABEL])
            peers = [
                p.status.pod_ip
                for p in self.group_pods(group)
                if p.metadata.name != name and p.status.pod_ip
            ]
        self.sandbox.cut_pod(node, address, peers)
        try:
            yield
        finally:
            self.sandbox.heal_pod(node)


__all__ = ["SandboxFaults"]
