"""One node of the sandbox: in its own network namespace, its own containerd (own root, state
and socket: a kubelet removes pods in its runtime that it did not make), runc, a kubelet with
its own root directory and cgroup subtree, and kube-proxy; pods on a CNI bridge with the /24
the controller-manager allocated to the node.

This machine has cgroup v1 only and no CAP_SYS_RESOURCE: the kubelet runs with
`failCgroupV1: false` and the cgroupfs driver, containerd clamps OOM score adjustments to its
own (`restrict_oom_score_adj`), and the kubelet's own adjustment is left at 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import yaml

from ..cluster.local.processes import Daemon, stop_all
from ..errors import SandboxError
from . import binaries
from .control_plane import ControlPlane
from .layout import CLUSTER_CIDR, CLUSTER_DOMAIN, DNS_SERVICE_IP, UMASK, Node

PAUSE_IMAGE = "localhost/citus-pipeline/pause:3.10"

K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
# How Yandex Managed Kubernetes labels a node group's nodes (zone and region are the
# well-known labels the manifests' anti-affinity and zone spreading read)
INSTANCE_TYPE = "standard-v3"
NODE_GROUP = "sandbox"


def labels(node: Node) -> dict[str, str]:
    return {
        "topology.kubernetes.io/zone": node.zone,
        "topology.kubernetes.io/region": "ru-central1",
        "node.kubernetes.io/instance-type": INSTANCE_TYPE,
        "yandex.cloud/node-group-id": NODE_GROUP,
        "yandex.cloud/preemptible": "false",
    }


class NodeStack:
    def __init__(self, node: Node, plane: ControlPlane) -> None:
        self.node = node
        self.plane = plane

    # -- processes -------------------------------------------------------------------------
    def daemon(self, name: str) -> Daemon:
        n = self.node
        needle = {
            "containerd": str(n.path("containerd.toml")),
            "kubelet": str(n.path("kubelet.yaml")),
            "kube-proxy": str(n.path("kube-proxy.yaml")),
        }[name]
        return Daemon(f"{name} of {n.name}", n.path(f"{name}.pid"), needle, n.path(f"{name}.log"))

    @property
    def daemons(self) -> list[Daemon]:
        return [self.daemon(c) for c in ("kube-proxy", "kubelet", "containerd")]

    def running(self) -> dict[str, int | None]:
        return {d.name.split(" of ")[0]: d.pid() for d in self.daemons}

    # -- configuration ---------------------------------------------------------------------
    def _containerd_config(self) -> str:
        n = self.node
        sock = n.containerd_socket
        return "\n".join(
            [
                "version = 4",
                f'root = "{n.path("containerd", "root")}"',
                f'state = "{n.path("containerd", "state")}"',
                "imports = []",
                "[plugins.'io.containerd.server.v1.grpc']",
                f'  address = "{sock}"',
                "[plugins.'io.containerd.server.v1.ttrpc']",
                f'  address = "{sock}.ttrpc"',
                # NRI's socket is one path for the whole machine: three containerds cannot share it
                "[plugins.'io.containerd.nri.v1.nri']",
                "  disable = true",
                "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
                f'  sandbox = "{PAUSE_IMAGE}"',
                "[plugins.'io.containerd.cri.v1.runtime']",
                "  restrict_oom_score_adj = true",
                # the pods' network namespaces under this node's state, not in /run/netns:
                # `sandbox down` unmounts and removes them with the node
                "  netns_mounts_under_state_dir = true",
                "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]",
                f'  BinaryName = "{binaries.exe("runc")}"',
                f'  Root = "{n.path("runc")}"',
                "  SystemdCgroup = false",
                "[plugins.'io.containerd.cri.v1.runtime'.cni]",
                f'  bin_dirs = ["{binaries.CNI_BIN}"]',
                f'  conf_dir = "{n.path("cni", "net.d")}"',
                "",
            ]
        )

    def cni_config(self, pod_cidr: str) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": "sandbox",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # routed, not NATed: peers see the pod's own address
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.node.path("cni", "ipam")),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def write_cni(self, pod_cidr: str) -> None:
        d = self.node.path("cni", "net.d")
        d.mkdir(parents=True, exist_ok=True)
        (d / "10-sandbox.conflist").write_text(json.dumps(self.cni_config(pod_cidr), indent=2))

    def _kubelet_config(self) -> dict:
        n, pki = self.node, self.plane.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": n.address,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / f"kubelet-{n.name}-serving.crt"),
            "tlsPrivateKeyFile": str(pki / f"kubelet-{n.name}-serving.key"),
            "containerRuntimeEndpoint": f"unix://{n.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": n.cgroup_root,
            "failCgroupV1": False,  # this machine has cgroup v1 only
            "failSwapOn": False,
            "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here: a negative adjustment is refused
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(n.path("resolv.conf")),
            "podLogsDir": str(n.path("pod-logs")),
            "serializeImagePulls": False,
            "enforceNodeAllocatable": ["pods"],
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "imageGCHighThresholdPercent": 95,
            "imageGCLowThresholdPercent": 90,
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
            "rotateCertificates": False,
        }

    def _kube_proxy_config(self) -> dict:
        n = self.node
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.pki / "kube-proxy.kubeconfig")},
            "hostnameOverride": n.name,
            "bindAddress": n.address,
            "clusterCIDR": CLUSTER_CIDR,
            "mode": "iptables",
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{n.address}/32"],
            # the conntrack table's limits are the machine's, not this node's: left alone
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }

    def configure(self) -> None:
        n, plane = self.node, self.plane
        for d in ("containerd", "runc", "kubelet", "pod-logs", "cni/net.d", "cni/ipam"):
            n.path(*d.split("/")).mkdir(parents=True, exist_ok=True)
        n.volumes.mkdir(parents=True, exist_ok=True)
        n.path("containerd.toml").write_text(self._containerd_config())
        # Pods resolve cluster names through CoreDNS; there is nothing upstream to forward to
        n.path("resolv.conf").write_text("# the sandbox has no upstream resolver\n")
        if not (plane.pki / f"kubelet-{n.name}-serving.crt").exists():
            plane.ca.issue_files(
                plane.pki,
                f"kubelet-{n.name}-serving",
                n.name,
                dns=(n.name,),
                ips=(n.address,),
                server=True,
                client=False,
            )
        plane.client_kubeconfig(f"kubelet-{n.name}", f"system:node:{n.name}", ("system:nodes",))
        plane.client_kubeconfig("kube-proxy", "system:kube-proxy")
        n.path("kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config()))
        n.path("kube-proxy.yaml").write_text(yaml.safe_dump(self._kube_proxy_config()))

    # -- lifecycle -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        path = f"{binaries.bin_dir()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return {"PATH": path, "HOME": str(self.node.dir), "LANG": "C.UTF-8"}

    def start_containerd(self, timeout: float = 90) -> None:
        d = self.daemon("containerd")
        if d.pid() is not None:
            return
        n = self.node
        argv = [binaries.exe("containerd"), f"--config={n.path('containerd.toml')}"]
        proc = d.spawn(argv, cwd=n.dir, env=self._env(), netns=n.netns_path, umask=UMASK)
        d.await_ready(
            proc,
            lambda: self.ctr("version").returncode == 0,
            timeout,
            f"containerd of {n.name} to answer",
        )

    def ctr(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        argv = [
            binaries.exe("ctr"),
            f"--address={self.node.containerd_socket}",
            f"--namespace={K8S_NAMESPACE}",
            *args,
        ]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True)
        if check and proc.returncode != 0:
            # every ctr call warns that cgroup v1 is deprecated: not the reason it failed
            why = [x for x in proc.stderr.splitlines() if "DEPRECATION" not in x]
            raise SandboxError(f"ctr {' '.join(args)} on {self.node.name}: {' '.join(why)}")
        return proc

    def images(self) -> dict[str, str]:
        """reference -> manifest digest of every image this node's containerd holds."""
        out = self.ctr("images", "ls", check=True).stdout.splitlines()[1:]
        return {line.split()[0]: line.split()[2] for line in out if line.strip()}

    def import_images(self, archives: list[Path]) -> list[str]:
        """Import what the node lacks (same name and digest is kept); returns what was imported."""
        have = self.images()
        done = []
        for archive in archives:
            ref, digest = archive_reference(archive)
            if have.get(ref) == digest:
                continue
            self.ctr("images", "import", "--all-platforms", str(archive), check=True)
            done.append(ref)
        return done

    def start_kubelet(self) -> None:
        d, n = self.daemon("kubelet"), self.node
        if d.pid() is not None:
            return
        label_arg = ",".join(f"{k}={v}" for k, v in labels(n).items())
        argv = [
            binaries.exe("kubelet"),
            f"--config={n.path('kubelet.yaml')}",
            f"--kubeconfig={self.plane.pki / f'kubelet-{n.name}.kubeconfig'}",
            f"--root-dir={n.path('kubelet')}",
            f"--cert-dir={n.path('kubelet', 'pki')}",
            f"--hostname-override={n.name}",
            f"--node-ip={n.address}",
            f"--node-labels={label_arg}",
            "--v=1",
        ]
        d.spawn(argv, cwd=n.dir, env=self._env(), netns=n.netns_path, umask=UMASK)

    def start_kube_proxy(self) -> None:
        d, n = self.daemon("kube-proxy"), self.node
        if d.pid() is not None:
            return
        argv = [binaries.exe("kube-proxy"), f"--config={n.path('kube-proxy.yaml')}", "--v=1"]
        d.spawn(argv, cwd=n.dir, env=self._env(), netns=n.netns_path, umask=UMASK)

    def stop(self, timeout: float = 20) -> None:
        """kube-proxy and the kubelet, then every container (through containerd's shims) and
        containerd itself, then the mounts the kubelet and containerd left under the node."""
        stop_all([self.daemon("kube-proxy"), self.daemon("kubelet")], timeout)
        self._kill_containers()
        stop_all([self.daemon("containerd")], timeout)
        unmount_under(self.node.dir)

    def _kill_containers(self) -> None:
        if self.daemon("containerd").pid() is None:
            return
        for task in self.ctr("tasks", "ls", "-q").stdout.split():
            self.ctr("tasks", "kill", "--signal=SIGKILL", "--all", task)
        # the shims outlive containerd; each one names this node's containerd socket
        kill_matching(str(self.node.containerd_socket))


def archive_reference(archive: Path) -> tuple[str, str]:
    """(image name, manifest digest) recorded in an OCI archive's index.json."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise SandboxError(f"{archive}: no index.json (not an OCI archive)")
        index = json.load(member)
    m = index["manifests"][0]
    return m.get("annotations", {}).get("org.opencontainers.image.ref.name", ""), m["digest"]


def kill_matching(needle: str) -> None:
    """SIGKILL every process whose command line contains ``needle``."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                os.kill(int(d.name), 9)
        except (OSError, ValueError):
            continue


def unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted below ``root`` (deepest first): secret tmpfs of
    the kubelet, overlay roots and netns bind mounts of containerd."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == str(root) or target.startswith(str(root) + "/"):
            mounts.append(target)
    for target in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def remove_tree(path: Path) -> None:
    if path.exists():
        unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)
