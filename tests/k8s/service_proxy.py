"""Services for the pod runner: names and a userspace proxy, what cluster DNS, kube-proxy and
the cloud's load balancer do in a real cluster.

* Names: each pod's /etc/hosts lists every StatefulSet pod by ``pod.subdomain.ns.svc`` (the
  headless-service names the members register) and every service by ``svc.ns.svc`` and
  ``svc.ns`` (its cluster IP), and by ``svc`` alone for the pod's own namespace, which is what
  cluster DNS with the pod's search path answers; rewritten in place when they change, so the
  pods' bind mounts see it.
* Traffic: a TCP listener on each service's cluster IP (added to the bridge) and, for
  ``type: LoadBalancer``, on an ingress address of its own that is written to the service's
  status like a cloud controller does; each connection goes to a ready address of the
  service's Endpoints at the time it is made (Patroni's leader Endpoints, or the endpoints
  controller's for a selector), as kube-proxy does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from kubernetes.client.rest import ApiException

from .network import PodNetwork, _ip

log = logging.getLogger("pod-runner.services")


class ServiceProxy:
    def __init__(self, core: Any, network: PodNetwork) -> None:
        self.core = core
        self.network = network
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.listeners: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self.backends: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self.lb_addresses: dict[str, str] = {}  # ns/name -> ingress address
        self.hosts_files: dict[str, tuple[str, str, str]] = {}  # path -> (ip, own names, ns)
        # (address, names, namespace, name in that namespace alone)
        self.names: list[tuple[str, str, str, str]] = []
        self._stop = threading.Event()
        self._sync = threading.Thread(target=self._sync_loop, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._sync.start()

    def stop(self) -> None:
        self._stop.set()
        self._sync.join(5)

        async def close() -> None:
            for srv in self.listeners.values():
                srv.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    # ---- names ------------------------------------------------------------------------------
    def write_hosts(self, path: Any, pod: Any, ip: str) -> None:
        own = pod.spec.hostname or pod.metadata.name
        if pod.spec.subdomain:
            fq = f"{own}.{pod.spec.subdomain}.{pod.metadata.namespace}.svc"
            own = f"{fq}.cluster.local {fq} {own}"
        self.hosts_files[str(path)] = (ip, own, pod.metadata.namespace)
        self._write(str(path))

    def _write(self, path: str) -> None:
        ip, own, pod_ns = self.hosts_files[path]
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost", f"{ip}\t{own}"]
        lines += [
            f"{addr}\t{names} {short}" if ns == pod_ns and short else f"{addr}\t{names}"
            for addr, names, ns, short in self.names
            if addr != ip
        ]
        text = "\n".join(lines) + "\n"
        try:
            with open(path, "r+") as f:  # in place: a bind mount follows the inode
                if f.read() == text:
                    return
                f.seek(0)
                f.write(text)
                f.truncate()
        except FileNotFoundError:
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)  # the pod's user reads it as /etc/hosts

    # ---- sync -------------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("service sync failed")
            self._stop.wait(0.5)

    def sync(self) -> None:
        names: list[tuple[str, str, str, str]] = []
        for pod in self.core.list_pod_for_all_namespaces().items:
            ip = pod.status.pod_ip if pod.status else None
            if ip and pod.spec.subdomain and pod.metadata.deletion_timestamp is None:
                h = pod.spec.hostname or pod.metadata.name
                fq = f"{h}.{pod.spec.subdomain}.{pod.metadata.namespace}.svc"
                names.append((ip, f"{fq}.cluster.local {fq}", pod.metadata.namespace, ""))
        wanted: dict[tuple[str, int], list[tuple[str, int]]] = {}
        endpoints = {
            (e.metadata.namespace, e.metadata.name): e
            for e in self.core.list_endpoints_for_all_namespaces().items
        }
        for svc in self.core.list_service_for_all_namespaces().items:
            ns, name = svc.metadata.namespace, svc.metadata.name
            addrs = self._ready_addresses(endpoints.get((ns, name)))
            cip = svc.spec.cluster_ip
            if cip and cip != "None":
                fq = f"{name}.{ns}.svc"
                names.append((cip, f"{fq}.cluster.local {fq} {name}.{ns}", ns, name))
            for port in svc.spec.ports or []:
                backends = [(a, p) for a, pname, p in addrs if pname in (port.name, None)] or [
                    (a, p) for a, _pname, p in addrs if len({x[1] for x in addrs}) == 1
                ]
                if cip and cip != "None":
                    wanted[(cip, port.port)] = backends
                if svc.spec.type == "LoadBalancer":
                    lb = self._lb_address(svc)
                    wanted[(lb, port.port)] = backends
        self.names = names
        for path in list(self.hosts_files):
            self._write(path)
        self.backends = wanted
        for key in wanted:
            if key not in self.listeners:
                asyncio.run_coroutine_threadsafe(self._listen(*key), self.loop).result(5)

    @staticmethod
    def _ready_addresses(ep: Any) -> list[tuple[str, str | None, int]]:
        out = []
        for subset in (ep.subsets or []) if ep else []:
            for a in subset.addresses or []:
                for p in subset.ports or []:
                    out.append((a.ip, p.name, p.port))
        return out

    def _lb_address(self, svc: Any) -> str:
        key = f"{svc.metadata.namespace}/{svc.metadata.name}"
        if key not in self.lb_addresses:
            self.lb_addresses[key] = self.network.extra_address()
        addr = self.lb_addresses[key]
        ingress = (
            (svc.status.load_balancer.ingress or [])
            if svc.status and svc.status.load_balancer
            else []
        )
        if not any(i.ip == addr for i in ingress):
            try:
                self.core.patch_namespaced_service_status(
                    svc.metadata.name,
                    svc.metadata.namespace,
                    {"status": {"loadBalancer": {"ingress": [{"ip": addr}]}}},
                )
            except ApiException as e:
                if e.status != 404:
                    raise
        return addr

    # ---- traffic ----------------------------------------------------------------------------
    async def _listen(self, addr: str, port: int) -> None:
        if (addr, port) in self.listeners:
            return
        if not any(addr == a for a in self.lb_addresses.values()):
            _ip("addr", "add", f"{addr}/32", "dev", self.network.bridge, check=False)
        self.listeners[(addr, port)] = await asyncio.start_server(
            lambda r, w: self._handle(addr, port, r, w), addr, port, reuse_address=True
        )

    async def _handle(self, addr: str, port: int, reader: Any, writer: Any) -> None:
        backends = self.backends.get((addr, port)) or []
        if not backends:
            writer.close()
            return
        host, bport = backends[0]
        try:
            br, bw = await asyncio.wait_for(asyncio.open_connection(host, bport), 5)
        except (TimeoutError, OSError):
            writer.close()
            return

        async def pump(src: Any, dst: Any) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, bw), pump(br, writer))
