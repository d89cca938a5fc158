"""The control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler of the
pinned release, as local processes with what a managed cluster runs: x509 client certificates
for the components and the kubelets, Node and RBAC authorization with NodeRestriction, service
account tokens signed by the apiserver, an audit log (who asked what), node CIDRs allocated by
the controller-manager. The apiserver listens on the node network's gateway, where the nodes'
kubelets and kube-proxies, and the pods through the `kubernetes` Service, reach it.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import yaml

from ..cluster.local.processes import Daemon, stop_all
from ..pki import CA, key_pem, new_key, public_pem, write_private
from ..waiting import until
from . import binaries
from .layout import (
    API_SERVICE_IP,
    APISERVER_PORT,
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    GATEWAY,
    SERVICE_CIDR,
    UMASK,
    Layout,
)

ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
CM_PORT = 10257
SCHEDULER_PORT = 10259
NODE_MONITOR_GRACE_S = 20  # how long a silent node stays Ready (the node-lost drill waits it)
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class ControlPlane:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.dir = layout.control_plane
        self.pki = layout.pki

    def daemon(self, name: str) -> Daemon:
        return Daemon(
            name, self.dir / f"{name}.pid", str(binaries.bin_dir() / name), self.dir / f"{name}.log"
        )

    @property
    def daemons(self) -> list[Daemon]:
        return [self.daemon(n) for n in ORDER]

    @property
    def ca(self) -> CA:
        return CA.load_or_create(self.pki, "citus-pipeline-sandbox-ca")

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def client_kubeconfig(self, name: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        """A kubeconfig (and its client certificate) for ``cn`` in groups ``orgs``."""
        path = self.pki / f"{name}.kubeconfig"
        if not path.exists():
            crt, key = self.ca.issue_files(self.pki, name, cn, orgs=orgs)
            write_private(
                path,
                yaml.safe_dump(
                    kubeconfig(self.layout.api_url, self.ca_file, crt, key, cn)
                ).encode(),
            )
        return path

    def _certificates(self) -> None:
        ca = self.ca
        if not (self.pki / "apiserver.crt").exists():
            ca.issue_files(
                self.pki,
                "apiserver",
                "kube-apiserver",
                dns=(
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
                    "localhost",
                ),
                ips=(GATEWAY, API_SERVICE_IP, "127.0.0.1"),
                server=True,
                client=False,
            )
            # the apiserver's client certificate towards the kubelets (exec, logs, port-forward)
            ca.issue_files(
                self.pki, "apiserver-kubelet-client", "kube-apiserver", orgs=("system:masters",)
            )
        if not (self.pki / "sa.key").exists():
            sa = new_key()
            write_private(self.pki / "sa.key", key_pem(sa))
            write_private(self.pki / "sa.pub", public_pem(sa), 0o644)
        self.client_kubeconfig("admin", "sandbox-admin", ("system:masters",))
        self.client_kubeconfig("controller-manager", "system:kube-controller-manager")
        self.client_kubeconfig("scheduler", "system:kube-scheduler")

    def _argv(self, name: str) -> list[str]:
        p, d = self.pki, self.dir
        exe = binaries.exe(name)
        if name == "etcd":
            client, peer = (
                f"http://127.0.0.1:{ETCD_CLIENT_PORT}",
                f"http://127.0.0.1:{ETCD_PEER_PORT}",
            )
            return [
                exe,
                "--name=sandbox",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sandbox={peer}",
                "--unsafe-no-fsync",  # a sandbox: a crash costs a `sandbox down && up`
                "--log-level=warn",
            ]
        if name == "kube-apiserver":
            return [
                exe,
                f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
                f"--bind-address={GATEWAY}",
                f"--advertise-address={GATEWAY}",
                f"--secure-port={APISERVER_PORT}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={self.ca_file}",
                "--kubelet-preferred-address-types=InternalIP",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                # webhooks and aggregated APIs reached at their pods' addresses (routed to this
                # machine), not at Service addresses, which only the nodes' kube-proxies serve
                "--enable-aggregator-routing=true",
                "--profiling=false",
                f"--audit-policy-file={d / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=batch",
                "--audit-log-batch-max-wait=1s",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=2",
                "--v=1",
            ]
        cfg = self.pki / (
            "controller-manager.kubeconfig"
            if name == "kube-controller-manager"
            else "scheduler.kubeconfig"
        )
        common = [
            exe,
            f"--kubeconfig={cfg}",
            f"--authentication-kubeconfig={cfg}",
            f"--authorization-kubeconfig={cfg}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=1",
        ]
        if name == "kube-scheduler":
            return [*common, f"--secure-port={SCHEDULER_PORT}"]
        return [
            *common,
            f"--secure-port={CM_PORT}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--node-cidr-mask-size=24",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_S}s",
            # signs nothing for kubelets (their certificates come from the sandbox's CA), but
            # the CSR API stays usable for a user's own certificates
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
        ]

    def start(self, timeout: float = 120) -> None:
        """Start what is not running (idempotent), and wait for the apiserver."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        (self.dir / "audit-policy.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        for name in ORDER:
            d = self.daemon(name)
            if d.pid() is None:
                proc = d.spawn(self._argv(name), cwd=self.dir, umask=UMASK)
                if name == "kube-apiserver":
                    d.await_ready(
                        proc, self.ready, timeout, "kube-apiserver to be ready", ignore=(OSError,)
                    )
        until(self.ready, timeout, 0.5, "kube-apiserver to be ready", ignore=(OSError,))

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return ctx

    def get(self, path: str, timeout: float = 10) -> str:
        """GET an apiserver path as cluster-admin (``/readyz``, ``/metrics``)."""
        with urllib.request.urlopen(
            self.layout.api_url + path, context=self._ssl(), timeout=timeout
        ) as r:
            return r.read().decode()

    def ready(self) -> bool:
        return self.get("/readyz").strip() == "ok"

    def running(self) -> dict[str, int | None]:
        return {d.name: d.pid() for d in self.daemons}

    def stop(self, timeout: float = 15) -> None:
        # the consumers of the API first, etcd last
        stop_all([self.daemon(n) for n in reversed(ORDER[1:])], timeout)
        stop_all([self.daemon("etcd")], timeout)


def kubeconfig(server: str, ca_file: Path, crt: Path, key: Path, user: str) -> dict:
    """A kubeconfig for one client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": "sandbox",
    }
