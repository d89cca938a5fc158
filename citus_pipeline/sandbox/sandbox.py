"""`citus-pipeline k8s sandbox up|down|status`: the sandbox as a whole.

`up` is idempotent: what runs is left running, what is missing is made (the stack's binaries
and the images too, when absent or out of date). `down` stops every process it started,
removes its namespaces, routes, bridge, mounts, cgroups and files, and puts back the kernel
settings it found (the record of them lives in sandbox.json until then).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..cluster.local.processes import tail
from ..errors import SandboxError
from ..images.buildah import world_readable
from ..waiting import until
from . import addons, binaries, faults, kernel, network
from .control_plane import ControlPlane
from .images import archives, ensure_images
from .layout import Layout
from .node import NodeStack, remove_tree
from .product import prepare
from .spec import write_spec

Log = Callable[[str], None]
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Sandbox:
    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout.default()
        self.plane = ControlPlane(self.layout)
        self.stacks = [NodeStack(n, self.plane) for n in self.layout.nodes]

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            return json.loads(self.layout.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **changes) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        state = {**self.state(), **changes}
        self.layout.state_file.write_text(json.dumps(state, indent=2) + "\n")

    # -- up ----------------------------------------------------------------------------------
    @world_readable()
    def up(self, log: Log = lambda _m: None) -> dict:
        started = time.monotonic()
        timings: dict[str, float] = {}

        def step(name: str, t0: float) -> None:
            timings[name] = round(time.monotonic() - t0, 1)
            log(f"{name}: {timings[name]} s")

        reason = binaries.missing_reason()
        if reason and binaries.missing():
            log("building the Kubernetes stack (scripts/k8s-control-plane.sh)")
            binaries.build()
            reason = binaries.missing_reason()
        if reason:
            raise SandboxError(reason)
        if "kernel" not in self.state():
            self._save(kernel=kernel.read())  # before anything here changes them
        t0 = time.monotonic()
        kernel.write({"net.ipv4.ip_forward": "1"})
        network.up_bridge()
        for s in self.stacks:
            network.up_node(s.node)
        self.plane.start()
        step("control plane", t0)
        t0 = time.monotonic()
        ensure_images(self.layout, log)
        step("images", t0)
        t0 = time.monotonic()
        wanted = archives(self.layout)

        def bring_node(s: NodeStack) -> list[str]:
            make_cgroups(s.node.cgroup_root)
            s.configure()
            s.start_containerd()
            imported = s.import_images(wanted)
            s.start_kubelet()
            s.start_kube_proxy()
            return imported

        with ThreadPoolExecutor(len(self.stacks)) as pool:
            for s, imported in zip(self.stacks, pool.map(bring_node, self.stacks), strict=True):
                if imported:
                    log(f"{s.node.name}: imported {len(imported)} images")
        step("nodes started", t0)
        t0 = time.monotonic()
        cidrs = self._pod_cidrs()
        for s in self.stacks:
            s.write_cni(cidrs[s.node.name])
        network.route_pods([s.node for s in self.stacks], cidrs)
        self._save(pod_cidrs=cidrs)
        self._wait_nodes_ready()
        step("nodes Ready", t0)
        t0 = time.monotonic()
        addons.install(self.layout, log)
        step("addons", t0)
        write_spec(self.layout)
        prepare(self.layout)
        timings["total"] = round(time.monotonic() - started, 1)
        self._save(up_s=timings)
        return timings

    def _nodes(self) -> dict:
        out = addons.kubectl(self.layout, "get", "nodes", "-o", "json")
        return {n["metadata"]["name"]: n for n in json.loads(out)["items"]}

    def _pod_cidrs(self, timeout: float = 300) -> dict[str, str]:
        names = {s.node.name for s in self.stacks}

        def read() -> dict[str, str]:
            self._check_alive()
            return {
                name: n["spec"].get("podCIDR", "")
                for name, n in self._nodes().items()
                if name in names
            }

        return until(
            read,
            timeout,
            1,
            "every node registered with a pod CIDR",
            done=lambda c: set(c) == names and all(c.values()),
            ignore=(SandboxError,),
        )

    def _check_alive(self) -> None:
        """A node process that exited is a failure now, not a timeout later."""
        for s in self.stacks:
            for d in s.daemons:
                if d.pid() is None:
                    raise SandboxError(f"{d.name} is not running: {tail(d.log, 3)}", d.log)

    def _wait_nodes_ready(self, timeout: float = 300) -> None:
        def ready() -> dict[str, str]:
            self._check_alive()
            out = {}
            for name, n in self._nodes().items():
                cond = {c["type"]: c for c in n["status"].get("conditions", [])}
                out[name] = cond.get("Ready", {}).get("status", "Unknown")
            return out

        until(
            ready,
            timeout,
            1,
            "every node Ready",
            done=lambda r: len(r) == len(self.stacks) and set(r.values()) == {"True"},
        )

    # -- down ----------------------------------------------------------------------------------
    def down(self, log: Log = lambda _m: None) -> None:
        state = self.state()
        with ThreadPoolExecutor(len(self.stacks)) as pool:
            list(pool.map(lambda s: s.stop(), self.stacks))
        log("nodes stopped")
        self.plane.stop()
        log("control plane stopped")
        network.down([s.node for s in self.stacks], state.get("pod_cidrs", {}))
        for s in self.stacks:
            remove_cgroups(s.node.cgroup_root)
        if state.get("kernel"):
            kernel.write(state["kernel"])
            log("kernel settings put back")
        remove_tree(self.layout.root)
        log(f"removed {self.layout.root}")

    def tag_image(self, source: str, name: str) -> None:
        """``source`` also known as ``name`` on every node: an image as a registry the user
        pushed to would serve it (the overlay's and the Helm values' registry names)."""
        for s in self.stacks:
            s.ctr("images", "tag", "--force", source, name, check=True)

    # -- faults below the API (the drills) ------------------------------------------------------
    def pod_processes(self, namespace: str, name: str) -> list[int]:
        return faults.pod_processes(self.layout, self.stacks, namespace, name)

    def lose_node(self, name: str) -> list[int]:
        return faults.lose_node(self.stacks, name)

    def revive_node(self, name: str) -> None:
        faults.revive_node(faults.stack_of(self.stacks, name))

    def cut_nodes(self, a: str, b: str) -> None:
        faults.cut_nodes(self.stacks, a, b, self.state().get("pod_cidrs", {}))

    def heal_nodes(self, a: str, b: str) -> None:
        faults.heal_nodes(self.stacks, a, b)

    def cut_pod(self, node: str, pod: str, peers: list[str] | None) -> None:
        faults.cut_pod(self.stacks, node, pod, peers)

    def heal_pod(self, node: str) -> None:
        faults.heal_pod(self.stacks, node)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        out: dict = {
            "root": str(self.layout.root),
            "control_plane": self.plane.running(),
            "nodes": {s.node.name: s.running() for s in self.stacks},
        }
        try:
            nodes = self._nodes()
            out["ready"] = {
                name: next(
                    (
                        c["status"] == "True"
                        for c in n["status"].get("conditions", [])
                        if c["type"] == "Ready"
                    ),
                    False,
                )
                for name, n in nodes.items()
            }
        except (SandboxError, OSError) as e:
            out["api"] = str(e)
        return out


def make_cgroups(subtree: str) -> None:
    """The kubelet's cgroup root in every v1 hierarchy (it refuses one that is missing); a new
    cpuset cgroup takes its CPUs and memory nodes from the root, or no task can join it."""
    for hierarchy in CGROUP_ROOT.iterdir():
        if not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        top = hierarchy / subtree.lstrip("/")
        top.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (top / f).read_text().strip():
                    (top / f).write_text((hierarchy / f).read_text())


def remove_cgroups(subtree: str) -> None:
    """rmdir the kubelet's cgroup subtree in every v1 hierarchy (deepest first; an empty cgroup
    is removed with rmdir, never with its files)."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / subtree.lstrip("/")
        if not top.is_dir():
            continue
        for d in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass
