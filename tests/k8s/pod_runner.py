"""The pod runner: a stand-in for the kubelet (and for the cloud's disks and load balancers)
on the test control plane. Test infrastructure, not product.

* Nodes: registers Node objects named and labelled like the Yandex node group and keeps their
  Leases and Ready condition fresh; ``lose_node`` stops that and SIGKILLs everything on it.
* Pods: for every pod the scheduler bound to one of its nodes, each container runs as local
  processes in the pod's own network namespace (its own IP on the pod bridge) and its own
  mount and PID namespaces, as the container's user, with the pod's environment (downward API,
  Secret and ConfigMap references, ``$(VAR)`` expansion), its ConfigMap/Secret/emptyDir/PVC/
  projected volumes at their mount paths and the ServiceAccount token from the TokenRequest API.
  Readiness probes run and the pod's phase, podIP and conditions go through the status API;
  deleting a pod sends SIGTERM and, after the grace period, SIGKILL to its processes.
* DNS: every pod's /etc/hosts names the StatefulSet pods (``pod.headless.ns.svc``) and the
  services' cluster IPs, kept current.
* Disks: PVCs of the test StorageClass get a hostPath PersistentVolume (a directory here).
* Services: a userspace proxy on each service's cluster IP, and for ``LoadBalancer`` services
  an ingress address of its own, forwarding to the service's ready Endpoints.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from citus_pipeline.cluster.local.processes import children

from . import images
from .network import PodNetwork
from .service_proxy import ServiceProxy

log = logging.getLogger("pod-runner")
ZONES = ("ru-central1-a", "ru-central1-b", "ru-central1-d")
PROVISIONER = "citus-pipeline.test/hostpath"
# The yandex-cloud overlay's StorageClass names Yandex's disk CSI driver: the runner answers
# for it too, as the stand-in it is.
YANDEX_DISK_CSI = "disk-csi-driver.mks.ycloud.io"
PROVISIONERS = {PROVISIONER, YANDEX_DISK_CSI}
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_INIT = Path(__file__).with_name("pod_init.py")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    name: str
    proc: subprocess.Popen
    ready: bool = False
    restarts: int = 0
    started: dt.datetime = field(default_factory=now)
    probe: dict | None = None
    next_probe: float = 0.0
    failures: int = 0
    exit_code: int | None = None
    exited_at: float = 0.0
    spec: dict = field(default_factory=dict)  # what pod_init ran: mounts, user, env
    probing: bool = False  # an exec probe is running
    liveness: dict | None = None
    next_live: float = 0.0
    live_failures: int = 0
    probing_live: bool = False
    killing: bool = False  # failed its liveness probe: being stopped, then started again


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    dir: Path
    containers: dict[str, Container] = field(default_factory=dict)
    stopping: bool = False
    reported: str = ""
    finished: bool = False


class PodRunner:
    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        network: PodNetwork,
        nodes: int = 3,
        node_cpu: str = "4",
        node_memory: str = "16Gi",
        run_as: str = "postgres",
    ) -> None:
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.workdir = workdir
        self.network = network
        self.node_names = [f"cl-citus-node-{i + 1}" for i in range(nodes)]
        self.node_cpu, self.node_memory = node_cpu, node_memory
        self.user = pwd.getpwnam(run_as)
        self.lost: set[str] = set()
        self.pods: dict[str, RunningPod] = {}
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.proxy = ServiceProxy(self.core, network)
        self.image_bin = workdir / "image-bin"

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> PodRunner:
        # explicit modes: under a restrictive umask the pods' user could not reach the image's
        # files; what is private per pod gets its own mode below
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        for i, name in enumerate(self.node_names):
            self._register_node(name, ZONES[i % len(ZONES)])
        self.proxy.start()
        for target, period in (
            (self._heartbeat_loop, 5.0),
            (self._pod_loop, 0.5),
            (self._volume_loop, 1.0),
        ):
            t = threading.Thread(target=self._loop, args=(target, period), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _loop(self, fn, period: float) -> None:
        while not self.stop_event.is_set():
            try:
                fn()
            except Exception:  # the runner keeps going, as a kubelet does
                log.exception("%s failed", fn.__name__)
            self.stop_event.wait(period)

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        with self.lock:
            for pod in list(self.pods.values()):
                self._kill_pod(pod, grace=15)
        self.proxy.stop()

    # ---- nodes ------------------------------------------------------------------------------
    def _register_node(self, name: str, zone: str) -> None:
        body = {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": zone,
                    "topology.kubernetes.io/region": "ru-central1",
                    "failure-domain.beta.kubernetes.io/zone": zone,
                },
            },
            "spec": {},
        }
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self._node_status(name)

    def _node_status(self, name: str) -> None:
        cap = {"cpu": self.node_cpu, "memory": self.node_memory, "pods": "110"}
        t = rfc3339()
        cond = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "pod runner is posting ready status",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }
        self.core.patch_node_status(
            name,
            {
                "status": {
                    "capacity": cap,
                    "allocatable": cap,
                    "conditions": [cond],
                    "addresses": [
                        {"type": "Hostname", "address": name},
                        {"type": "InternalIP", "address": self.network.gateway},
                    ],
                }
            },
        )

    def _heartbeat_loop(self) -> None:
        for name in self.node_names:
            if name in self.lost:
                continue
            self._renew_lease(name)
            self._node_status(name)

    def _renew_lease(self, name: str) -> None:
        body = {
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": 40,
                "renewTime": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", body)
        except ApiException as e:
            if e.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def lose_node(self, name: str) -> list[str]:
        """Power the node off: every process on it dies at once and it stops reporting.
        Returns the names of the pods that were on it."""
        self.lost.add(name)
        with self.lock:
            gone = [p for p in self.pods.values() if p.node == name]
            for pod in gone:
                self._kill_pod(pod, grace=0)
        return [f"{p.namespace}/{p.name}" for p in gone]

    # ---- pods -------------------------------------------------------------------------------
    def _pod_loop(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=").items
        seen = set()
        for pod in pods:
            if pod.spec.node_name not in self.node_names or pod.spec.node_name in self.lost:
                continue
            uid = pod.metadata.uid
            seen.add(uid)
            with self.lock:
                running = self.pods.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                if running is not None and not running.stopping:
                    running.stopping = True
                    grace = pod.metadata.deletion_grace_period_seconds or 30
                    threading.Thread(
                        target=self._terminate, args=(running, grace), daemon=True
                    ).start()
                elif running is None:
                    self._force_delete(pod)
                continue
            if running is None:
                if pod.status.phase in ("Succeeded", "Failed"):
                    continue
                try:
                    self._start_pod(pod)
                except Exception as e:
                    log.exception(
                        "pod %s/%s failed to start", pod.metadata.namespace, pod.metadata.name
                    )
                    self._report_failure(pod, str(e))
                continue
            self._tend(pod, running)
        with self.lock:
            for uid in [u for u in self.pods if u not in seen]:
                pod = self.pods[uid]
                if pod.node not in self.lost:
                    self._kill_pod(pod, grace=0)

    def _report_failure(self, pod: Any, message: str) -> None:
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            pod.metadata.namespace,
            {"status": {"phase": "Pending", "message": message[:1000], "reason": "RunnerError"}},
        )

    def _start_pod(self, pod: Any) -> None:
        ns, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        pod_dir = self.workdir / "pods" / f"{ns}_{name}_{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        netns = f"{self.network.prefix}{uid[:12]}"
        ip = self.network.add_pod(netns)
        running = RunningPod(uid, ns, name, pod.spec.node_name, ip, netns, pod_dir)
        try:
            volumes = self._volumes(pod, pod_dir, ip)
        except Exception:
            self.network.remove_pod(netns)
            raise
        with self.lock:
            self.pods[uid] = running
        self.proxy.write_hosts(pod_dir / "hosts", pod, ip)
        for c in pod.spec.containers:
            running.containers[c.name] = self._start_container(pod, running, c, volumes)
        self._report(pod, running)
        log.info("started %s/%s on %s at %s", ns, name, running.node, ip)

    def _start_container(
        self, pod: Any, running: RunningPod, c: Any, volumes: dict[str, Path]
    ) -> Container:
        image = images.resolve(c.image, self.image_bin)
        env = dict(image.env)
        env["HOSTNAME"] = pod.spec.hostname or pod.metadata.name
        env["KUBERNETES_SERVICE_HOST"] = self.network.gateway
        env["KUBERNETES_SERVICE_PORT"] = "6443"
        env["KUBERNETES_SERVICE_PORT_HTTPS"] = "6443"
        env.update(self._env(pod, running, c, env))
        mounts: list[list[Any]] = [[h, t, True] for h, t in image.files]
        private = running.dir / "containers" / c.name
        for i, path in enumerate(image.owned):  # kept across restarts, like a writable layer
            own = private / f"owned-{i}"
            own.mkdir(parents=True, exist_ok=True)
            os.chown(own, self.user.pw_uid, self.user.pw_gid)
            mounts.append([str(own), path, False])
        mounts.append([str(running.dir / "hosts"), "/etc/hosts", True])
        for vm in c.volume_mounts or []:
            host = volumes[vm.name]
            if vm.sub_path:
                host = host / vm.sub_path
            mounts.append([str(host), vm.mount_path, bool(vm.read_only)])
        private.mkdir(parents=True, exist_ok=True)
        argv = list(c.command or image.entrypoint) + list(c.args or [])
        argv = [self._expand(a, env) for a in argv]
        sc = c.security_context
        uid = self.user.pw_uid  # the image's numeric user maps to the machine's service user
        spec = {
            "mounts": mounts,
            "uid": uid,
            "gid": self.user.pw_gid,
            "groups": [self.user.pw_gid],
            "cwd": c.working_dir or image.workdir,
            "argv": argv,
            "env": env,
            "read_only_root": bool(sc and sc.read_only_root_filesystem),
        }
        spec_file = private / "spec.json"
        spec_file.write_text(json.dumps(spec))
        spec_file.chmod(0o600)
        log_file = open(private / "log", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            self._in_pod(running, spec_file),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        probe = c.readiness_probe.to_dict() if c.readiness_probe else None
        cont = Container(c.name, proc, ready=probe is None, probe=probe, spec=spec)
        if probe:
            cont.next_probe = time.monotonic() + (probe.get("initial_delay_seconds") or 0)
        if c.liveness_probe:
            cont.liveness = c.liveness_probe.to_dict()
            cont.next_live = time.monotonic() + (cont.liveness.get("initial_delay_seconds") or 0)
        return cont

    @staticmethod
    def _in_pod(running: RunningPod, spec_file: Path) -> list[str]:
        """The command that runs SPEC in the pod's network namespace, in mount and PID
        namespaces of its own (PID 1: the container's command; when it dies, the rest do)."""
        return [
            "nsenter",
            f"--net=/run/netns/{running.netns}",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            sys.executable,
            str(POD_INIT),
            str(spec_file),
        ]

    def _exec(self, running: RunningPod, cont: Container, argv: list[str], timeout: float) -> bool:
        """An exec probe: the command with the container's mounts, user and environment, in
        the pod's network (a process of its own, as a kubelet's exec is)."""
        spec_file = running.dir / "containers" / cont.name / "probe.json"
        spec_file.write_text(json.dumps({**cont.spec, "argv": argv}))
        spec_file.chmod(0o600)
        try:
            r = subprocess.run(
                self._in_pod(running, spec_file), check=False, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    @staticmethod
    def _expand(value: str, env: dict[str, str]) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)

    def _field(self, pod: Any, ip: str, path: str) -> str:
        simple = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
            "status.podIP": ip,
            "status.hostIP": self.network.gateway,
        }
        if path in simple:
            return simple[path] or ""
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), "")
        raise KeyError(f"unsupported fieldRef {path}")

    def _data(self, kind: str, ns: str, name: str, optional: bool = False) -> dict[str, bytes]:
        """The keys of a ConfigMap or Secret as bytes ({} for a missing optional one)."""
        try:
            if kind == "secret":
                obj = self.core.read_namespaced_secret(name, ns)
                return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
            obj = self.core.read_namespaced_config_map(name, ns)
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            raise
        data = {k: v.encode() for k, v in (obj.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()})
        return data

    def _key_value(self, kind: str, ns: str, ref: Any) -> str | None:
        """One key of a ConfigMap or Secret, as an env var takes it (None: optional, absent)."""
        data = self._data(kind, ns, ref.name, bool(ref.optional))
        if ref.key not in data:
            if ref.optional:
                return None
            raise KeyError(f"{kind} {ns}/{ref.name} has no key {ref.key}")
        return data[ref.key].decode()

    def _env(self, pod: Any, running: RunningPod, c: Any, base: dict[str, str]) -> dict[str, str]:
        ns = pod.metadata.namespace
        out: dict[str, str] = {}
        for src in c.env_from or []:
            for kind, ref in (("secret", src.secret_ref), ("configmap", src.config_map_ref)):
                if ref:
                    data = self._data(kind, ns, ref.name, bool(ref.optional))
                    out.update({(src.prefix or "") + k: v.decode() for k, v in data.items()})
        for e in c.env or []:
            value: str | None
            vf = e.value_from
            if vf is None:
                value = self._expand(e.value or "", {**base, **out})
            elif vf.field_ref:
                value = self._field(pod, running.ip, vf.field_ref.field_path)
            elif vf.secret_key_ref:
                value = self._key_value("secret", ns, vf.secret_key_ref)
            elif vf.config_map_key_ref:
                value = self._key_value("configmap", ns, vf.config_map_key_ref)
            else:
                value = None
            if value is not None:
                out[e.name] = value
        return out

    # ---- volumes ----------------------------------------------------------------------------
    def _write_files(self, target: Path, files: dict[str, bytes], mode: int) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():
            p = target / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(mode)
            os.chown(p, 0, self.user.pw_gid)  # fsGroup: readable by the container's group
        os.chown(target, 0, self.user.pw_gid)
        target.chmod(0o750)

    @staticmethod
    def _select(data: dict[str, bytes], items: Any) -> dict[str, bytes]:
        if not items:
            return data
        return {i.path: data[i.key] for i in items if i.key in data}

    def _token(self, pod: Any, audience: str | None, seconds: int | None) -> bytes:
        req = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=seconds or 3607,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
                ),
            )
        )
        sa = pod.spec.service_account_name or "default"
        resp = self.core.create_namespaced_service_account_token(sa, pod.metadata.namespace, req)
        return resp.status.token.encode()

    def _volumes(self, pod: Any, pod_dir: Path, ip: str) -> dict[str, Path]:
        ns = pod.metadata.namespace
        out: dict[str, Path] = {}
        for v in pod.spec.volumes or []:
            target = pod_dir / "volumes" / v.name
            if v.config_map:
                data = self._data("configmap", ns, v.config_map.name)
                self._write_files(
                    target,
                    self._select(data, v.config_map.items),
                    v.config_map.default_mode or 0o644,
                )
            elif v.secret:
                data = self._data("secret", ns, v.secret.secret_name)
                self._write_files(
                    target, self._select(data, v.secret.items), v.secret.default_mode or 0o644
                )
            elif v.empty_dir is not None:
                target.mkdir(parents=True, exist_ok=True)
                os.chown(target, self.user.pw_uid, self.user.pw_gid)
                target.chmod(0o770)
            elif v.persistent_volume_claim:
                target = self._claim_path(ns, v.persistent_volume_claim.claim_name)
            elif v.projected:
                files: dict[str, bytes] = {}
                for src in v.projected.sources:
                    if src.service_account_token:
                        t = src.service_account_token
                        files[t.path] = self._token(pod, t.audience, t.expiration_seconds)
                    elif src.config_map:
                        data = self._data("configmap", ns, src.config_map.name)
                        files.update(self._select(data, src.config_map.items))
                    elif src.secret:
                        data = self._data("secret", ns, src.secret.name)
                        files.update(self._select(data, src.secret.items))
                    elif src.downward_api:
                        for item in src.downward_api.items:
                            files[item.path] = self._field(
                                pod, ip, item.field_ref.field_path
                            ).encode()
                self._write_files(target, files, v.projected.default_mode or 0o644)
            elif v.downward_api:
                files = {
                    i.path: self._field(pod, ip, i.field_ref.field_path).encode()
                    for i in v.downward_api.items
                }
                self._write_files(target, files, v.downward_api.default_mode or 0o644)
            else:
                raise KeyError(f"volume {v.name}: type not supported by the pod runner")
            out[v.name] = target
        return out

    def _claim_path(self, ns: str, claim: str) -> Path:
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, ns)
        if not pvc.spec.volume_name:
            raise RuntimeError(f"claim {ns}/{claim} is not bound yet")
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        if not pv.spec.host_path:
            raise RuntimeError(f"volume {pv.metadata.name} is not one of the runner's")
        return Path(pv.spec.host_path.path)

    def _volume_loop(self) -> None:
        """The provisioner: a hostPath PersistentVolume for each pending claim of a StorageClass
        whose provisioner is the runner's or Yandex's disk CSI driver (which it stands in for),
        kept or deleted with the claim as the class says."""
        classes = {
            sc.metadata.name: sc
            for sc in client.StorageV1Api(self.api).list_storage_class().items
            if sc.provisioner in PROVISIONERS
        }
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if pvc.status.phase != "Pending" or pvc.spec.volume_name:
                continue
            if pvc.spec.storage_class_name not in classes:
                continue
            sc = classes[pvc.spec.storage_class_name]
            name = f"pv-{pvc.metadata.uid}"
            path = self.workdir / "disks" / name
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
            path.chmod(0o700)
            body = {
                "metadata": {
                    "name": name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": sc.provisioner},
                },
                "spec": {
                    "capacity": {"storage": pvc.spec.resources.requests["storage"]},
                    "accessModes": pvc.spec.access_modes,
                    "persistentVolumeReclaimPolicy": sc.reclaim_policy or "Delete",
                    "storageClassName": pvc.spec.storage_class_name,
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "claimRef": {
                        "namespace": pvc.metadata.namespace,
                        "name": pvc.metadata.name,
                        "uid": pvc.metadata.uid,
                    },
                },
            }
            try:
                self.core.create_persistent_volume(body)
            except ApiException as e:
                if e.status != 409:
                    raise

    # ---- status, probes, termination ----------------------------------------------------------
    def _probe(self, running: RunningPod, cont: Container, pod: Any) -> None:
        p = cont.probe or {}
        if time.monotonic() < cont.next_probe:
            return
        cont.next_probe = time.monotonic() + (p.get("period_seconds") or 10)
        if p.get("_exec"):
            # a process per probe, seconds for a Python CLI: off the loop that tends every pod
            if not cont.probing:
                cont.probing = True
                threading.Thread(target=self._exec_probe, args=(running, cont), daemon=True).start()
            return
        self._probed(cont, self._http_ok(running, pod, p))

    def _http_ok(self, running: RunningPod, pod: Any, p: dict) -> bool:
        get = p.get("http_get")
        if not get:
            return False
        port = get["port"]
        if not str(port).isdigit():
            port = self._named_port(pod, port)
        url = f"http://{running.ip}:{port}{get.get('path') or '/'}"
        try:
            with urllib.request.urlopen(url, timeout=p.get("timeout_seconds") or 1) as r:
                return 200 <= r.status < 400
        except (OSError, ValueError):  # refused, timed out, HTTP 503 from a replica
            return False

    def _live(self, running: RunningPod, cont: Container, pod: Any) -> None:
        """The kubelet's liveness probe: failureThreshold failures in a row and the container
        is stopped (SIGTERM, then SIGKILL after the probe's own grace period, else the
        pod's) and started again by the restart policy. Off the loop: probes time out."""
        p = cont.liveness or {}
        if cont.probing_live or cont.killing or time.monotonic() < cont.next_live:
            return
        cont.next_live = time.monotonic() + (p.get("period_seconds") or 10)
        cont.probing_live = True

        def probe() -> None:
            try:
                if self._http_ok(running, pod, p):
                    cont.live_failures = 0
                    return
                cont.live_failures += 1
                if cont.live_failures < (p.get("failure_threshold") or 3):
                    return
                cont.killing = True
                grace = p.get("termination_grace_period_seconds")
                if grace is None:
                    grace = pod.spec.termination_grace_period_seconds or 30
                log.info(
                    "%s/%s: %s failed its liveness probe, killed",
                    running.namespace,
                    running.name,
                    cont.name,
                )
                self._signal(cont, signal.SIGTERM)
                try:
                    cont.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self._signal(cont, signal.SIGKILL)
            finally:
                cont.probing_live = False

        threading.Thread(target=probe, daemon=True).start()

    def _exec_probe(self, running: RunningPod, cont: Container) -> None:
        p = cont.probe or {}
        try:
            self._probed(
                cont,
                self._exec(running, cont, p["_exec"]["command"], p.get("timeout_seconds") or 1),
            )
        finally:
            cont.probing = False

    @staticmethod
    def _probed(cont: Container, ok: bool) -> None:
        p = cont.probe or {}
        if ok:
            cont.failures = 0
            cont.ready = True
        else:
            cont.failures += 1
            if cont.failures >= (p.get("failure_threshold") or 3) or not cont.ready:
                cont.ready = False

    @staticmethod
    def _named_port(pod: Any, name: str) -> int:
        for c in pod.spec.containers:
            for port in c.ports or []:
                if port.name == name:
                    return port.container_port
        raise KeyError(f"no container port named {name}")

    def _tend(self, pod: Any, running: RunningPod) -> None:
        if running.stopping or running.finished:
            return
        policy = pod.spec.restart_policy or "Always"
        for c in pod.spec.containers:
            cont = running.containers.get(c.name)
            if cont is None:
                continue
            code = cont.proc.poll()
            if code is not None:
                cont.ready = False
                if cont.exit_code is None:
                    cont.exit_code, cont.exited_at = code, time.monotonic()
                restart = policy == "Always" or (policy == "OnFailure" and code != 0)
                # crash-loop back-off, short: the tests want restarts, not waiting
                if restart and time.monotonic() - cont.exited_at > min(2**cont.restarts, 10):
                    new = self._start_container(
                        pod, running, c, self._volumes(pod, running.dir, running.ip)
                    )
                    new.restarts = cont.restarts + 1
                    running.containers[c.name] = new
                continue
            if cont.probe:
                self._probe(running, cont, pod)
            if cont.liveness:
                self._live(running, cont, pod)
        if policy != "Always" and all(
            cont.proc.poll() is not None for cont in running.containers.values()
        ):
            running.finished = True
        self._report(pod, running)

    def _report(self, pod: Any, running: RunningPod) -> None:
        conts = running.containers
        ready = bool(conts) and all(c.ready for c in conts.values())
        if running.finished:
            failed = any(c.exit_code for c in conts.values())
            phase = "Failed" if failed else "Succeeded"
        else:
            phase = "Running"
        statuses = []
        for c in pod.spec.containers:
            cont = conts.get(c.name)
            if cont is None:
                continue
            code = cont.proc.poll()
            state = (
                {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
                if code is not None
                else {"running": {"startedAt": rfc3339(cont.started)}}
            )
            statuses.append(
                {
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": cont.ready,
                    "started": code is None,
                    "restartCount": cont.restarts,
                    "state": state,
                }
            )
        key = json.dumps(
            [
                phase,
                ready,
                running.ip,
                [(s["name"], s["ready"], s["restartCount"], list(s["state"])) for s in statuses],
            ]
        )
        if key == running.reported:
            return
        t = rfc3339()
        status = {
            "phase": phase,
            "hostIP": self.network.gateway,
            "podIP": running.ip,
            "podIPs": [{"ip": running.ip}],
            "startTime": rfc3339(min(c.started for c in conts.values())) if conts else t,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": t},
                {"type": "Ready", "status": str(ready), "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            ],
            "containerStatuses": statuses,
        }
        try:
            self.core.patch_namespaced_pod_status(
                running.name, running.namespace, {"status": status}
            )
            running.reported = key
        except ApiException as e:
            if e.status != 404:
                raise

    def _signal(self, cont: Container, sig: int) -> None:
        """Signal the container's first process (PID 1 of its PID namespace: when it exits,
        the kernel kills everything else in the container)."""
        if cont.proc.poll() is not None:
            return
        try:
            children = (
                Path(f"/proc/{cont.proc.pid}/task/{cont.proc.pid}/children").read_text().split()
            )
        except OSError:
            children = []
        for pid in children:
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL or not children:
            try:
                os.kill(cont.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _kill_pod(self, running: RunningPod, grace: float) -> None:
        for cont in running.containers.values():
            self._signal(cont, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for cont in running.containers.values():
            try:
                cont.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(cont, signal.SIGKILL)
                cont.proc.wait()
        if running.node not in self.lost:
            self.network.remove_pod(running.netns)
        with self.lock:
            self.pods.pop(running.uid, None)

    def _terminate(self, running: RunningPod, grace: float) -> None:
        self._kill_pod(running, grace)
        try:
            self.core.delete_namespaced_pod(
                running.name,
                running.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=running.uid)
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _force_delete(self, pod: Any) -> None:
        try:
            self.core.delete_namespaced_pod(
                pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
            )
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- for tests ----------------------------------------------------------------------------
    def pod_processes(self, namespace: str, name: str) -> list[int]:
        """Every process of the pod's containers (the container's command and all below it):
        what a paused VM or a hung storage stack would stop."""
        with self.lock:
            running = next(
                (p for p in self.pods.values() if (p.namespace, p.name) == (namespace, name)),
                None,
            )
            roots = [c.proc.pid for c in running.containers.values()] if running else []
        found, todo = [], list(roots)
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children(pid)
        return found

    def pod_ip(self, namespace: str, name: str) -> str | None:
        with self.lock:
            for p in self.pods.values():
                if p.namespace == namespace and p.name == name:
                    return p.ip
        return None

    def pod_names(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod the runner has started."""
        with self.lock:
            return [(p.namespace, p.name) for p in self.pods.values()]

    def container_log(self, namespace: str, name: str, container: str) -> str:
        with self.lock:
            for p in self.pods.values():
                if p.namespace == namespace and p.name == name:
                    f = p.dir / "containers" / container / "log"
                    return f.read_text(errors="replace") if f.exists() else ""
        return ""


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
