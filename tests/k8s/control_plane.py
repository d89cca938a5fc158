"""A real Kubernetes control plane on this machine, for the `k8s` tests.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler of the release that
`scripts/k8s-control-plane.sh` built, started as local processes with what a managed cluster
runs: x509 client certificates for the components, RBAC (and Node) authorization, service
account tokens signed by the apiserver (TokenRequest), the default admission plugins plus
NodeRestriction. The apiserver listens on the pod network's gateway address, so the pods of
the pod runner (each in its own network namespace) reach it like in-cluster clients.

No kubelet runs: `tests/k8s/pod_runner.py` stands in for it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from citus_pipeline.waiting import until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "k8s-control-plane.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR = "10.96.0.0/16"
APISERVER_PORT = 6443


class ControlPlaneError(RuntimeError):
    pass


def binaries_dir() -> Path | None:
    """Where the pinned control plane was built, or None when it was not (the tests skip)."""
    env = os.environ.get("CITUS_PIPELINE_K8S_BIN")
    release = os.environ.get("K8S_RELEASE") or _pinned_release()
    base = Path(env) if env else Path.home() / ".cache" / "citus-pipeline" / f"k8s-{release}"
    bin_dir = base / "bin"
    if all((bin_dir / c).is_file() and os.access(bin_dir / c, os.X_OK) for c in COMPONENTS):
        return bin_dir
    return None


def kubectl() -> Path | None:
    """The pinned release's kubectl (kustomize, apply), built by the same script."""
    bin_dir = binaries_dir()
    exe = bin_dir / "kubectl" if bin_dir else None
    return exe if exe and os.access(exe, os.X_OK) else None


def _pinned_release() -> str:
    for line in BUILD_SCRIPT.read_text().splitlines():
        if line.startswith('K8S_RELEASE="${K8S_RELEASE:-'):
            return line.split(":-", 1)[1].split("}", 1)[0]
    raise ControlPlaneError(f"{BUILD_SCRIPT}: no K8S_RELEASE pin")


def missing_reason() -> str | None:
    if binaries_dir() is None:
        return (
            "Kubernetes control plane not built: run scripts/k8s-control-plane.sh "
            "(go build of kube-apiserver/-controller-manager/-scheduler and etcd)"
        )
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        return "the pod runner needs root, iproute2 and util-linux (network and mount namespaces)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- certificates ------------------------------------------------------------------------------
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@dataclass
class CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str) -> CA:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        cn: str,
        *,
        orgs: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a client (CN = user, O = groups) or a server."""
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.UTC)
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        sans = [x509.DNSName(d) for d in dns] + [
            x509.IPAddress(ipaddress.ip_address(i)) for i in ips
        ]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


# ---- the control plane ---------------------------------------------------------------------------
@dataclass
class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is cluster-admin."""

    workdir: Path
    address: str  # where the apiserver listens (the pod network's gateway)
    bin_dir: Path = field(default_factory=lambda: binaries_dir() or Path("/nonexistent"))
    node_monitor_grace: int = 20
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{self.address}:{APISERVER_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def requests_by_pod(self, since: float, until: float, namespace: str) -> dict[str, int]:
        """Requests made with the tokens bound to each pod of ``namespace`` between two
        wall-clock times (seconds since the epoch), from the audit log."""
        counts: dict[str, int] = {}
        prefix = f"system:serviceaccount:{namespace}:"
        with open(self.audit_log) as f:
            for line in f:
                ev = json.loads(line)
                user = ev.get("user") or {}
                if not user.get("username", "").startswith(prefix):
                    continue
                t = dt.datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
                if since <= t < until:
                    pod = (
                        (user.get("extra") or {}).get("authentication.kubernetes.io/pod-name")
                        or ["?"]
                    )[0]
                    counts[pod] = counts.get(pod, 0) + 1
        return counts

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def _write(self, name: str, data: bytes, mode: int = 0o600) -> Path:
        p = self.workdir / name
        p.write_bytes(data)
        p.chmod(mode)
        return p

    def _kubeconfig(self, name: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        crt, key = self.ca.issue(cn, orgs=orgs)
        crt_p, key_p = self._write(f"{name}.crt", crt), self._write(f"{name}.key", key)
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [
                {"name": name, "user": {"client-certificate": str(crt_p), "client-key": str(key_p)}}
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
            "current-context": "local",
        }
        return self._write(f"{name}.kubeconfig", yaml.safe_dump(cfg).encode())

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 120) -> ControlPlane:
        # one control plane at a time (it listens on the pod network's fixed gateway): a run
        # killed before its teardown leaves its components behind
        subprocess.run(["pkill", "-9", "-f", f"^{self.bin_dir}/"], check=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = CA.create("citus-pipeline-test-ca")
        self._write("ca.crt", self.ca.pem, 0o644)
        self._write("ca.key", _pem_key(self.ca.key))
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        crt, key = self.ca.issue(
            "kube-apiserver",
            dns=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ),
            ips=(self.address, service_ip, "127.0.0.1"),
            server=True,
        )
        self._write("apiserver.crt", crt)
        self._write("apiserver.key", key)
        sa = _key()
        self._write("sa.key", _pem_key(sa))
        self._write(
            "sa.pub",
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        self._kubeconfig("admin", "test-admin", ("system:masters",))
        cm_cfg = self._kubeconfig("controller-manager", "system:kube-controller-manager")
        sched_cfg = self._kubeconfig("scheduler", "system:kube-scheduler")
        w = self.workdir
        # every request with who made it (for a pod's ServiceAccount token, which pod): the
        # apiserver's own record of what each Patroni member costs it
        (w / "audit-policy.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=cp",
                f"--data-dir={w / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=cp=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # test data only: a lost write here costs a rerun
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={APISERVER_PORT}",
                f"--tls-cert-file={w / 'apiserver.crt'}",
                f"--tls-private-key-file={w / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={w / 'sa.pub'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--profiling=false",
                f"--audit-policy-file={w / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=batch",
                "--audit-log-batch-max-wait=1s",
                "--v=1",
            ],
        )
        self._wait_ready(timeout)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={cm_cfg}",
                f"--authentication-kubeconfig={cm_cfg}",
                f"--authorization-kubeconfig={cm_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={w / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={self.node_monitor_grace}s",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched_cfg}",
                f"--authentication-kubeconfig={sched_cfg}",
                f"--authorization-kubeconfig={sched_cfg}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        return self

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        return ctx

    def get(self, path: str) -> str:
        """GET an apiserver path as cluster-admin (``/readyz``, ``/metrics``)."""
        with urllib.request.urlopen(self.url + path, context=self._ssl(), timeout=10) as r:
            return r.read().decode()

    def _wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited ({p.returncode}): see {self.workdir / (name + '.log')}"
                    )
            return self.get("/readyz").strip() == "ok"

        # refused or reset until it listens: the last such error is what a timeout reports
        until(ready, timeout, 0.5, "kube-apiserver to be ready", ignore=(OSError,))

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
