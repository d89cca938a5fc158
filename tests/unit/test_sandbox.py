"""The sandbox's configuration, offline: names and addresses, the spec sized for it, each
node's containerd and kubelet settings, and the upstream manifests as the sandbox changes them."""

from __future__ import annotations

import ipaddress
import json
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import SandboxError
from citus_pipeline.sandbox import addons, binaries, faults, kernel
from citus_pipeline.sandbox.control_plane import ControlPlane
from citus_pipeline.sandbox.images import METALLB, SANDBOX_RECIPES, reference
from citus_pipeline.sandbox.layout import GATEWAY, LB_RANGE, NODE_NETWORK, Layout
from citus_pipeline.sandbox.node import NodeStack, labels
from citus_pipeline.sandbox.spec import sandbox_spec


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path / "sandbox")


def test_three_nodes_one_per_zone_with_distinct_names_and_addresses(layout):
    nodes = layout.nodes
    assert [n.zone for n in nodes] == ["ru-central1-a", "ru-central1-b", "ru-central1-d"]
    for attr in ("name", "address", "netns", "veth", "cgroup_root", "dir"):
        assert len({getattr(n, attr) for n in nodes}) == 3, attr
    assert all(len(n.veth) <= 15 for n in nodes)  # IFNAMSIZ
    assert all(ipaddress.ip_address(n.address) in NODE_NETWORK for n in nodes)
    assert all(ipaddress.ip_address(a) in NODE_NETWORK for a in LB_RANGE)
    assert labels(nodes[1])["topology.kubernetes.io/zone"] == "ru-central1-b"


def test_the_spec_fits_two_cores_and_renders(layout):
    spec = spec_from_mapping(sandbox_spec())
    k = spec.kubernetes
    assert k.storage_class == addons.STORAGE_CLASS
    assert set(k.client_cidrs) == {str(NODE_NETWORK)}  # pods: only as the policies allow
    assert "postgres-exporter" in k.exporter_image and not k.exporter_image.startswith("quay.io")
    members = spec.coordinator.members + spec.workers.groups * spec.workers.members
    cpu = members * float(k.coordinator_resources.cpu.rstrip("m")) / 1000
    assert cpu <= 2, cpu  # requests of every member fit the machine's two cores
    assert mf.cluster_manifests(spec)  # renders


def test_each_node_gets_its_own_runtime(layout):
    plane = ControlPlane(layout)
    configs = [tomllib.loads(NodeStack(n, plane)._containerd_config()) for n in layout.nodes]
    sockets = {c["plugins"]["io.containerd.server.v1.grpc"]["address"] for c in configs}
    roots = {c["root"] for c in configs}
    assert len(sockets) == len(roots) == 3
    for c in configs:
        runtime = c["plugins"]["io.containerd.cri.v1.runtime"]
        assert runtime["restrict_oom_score_adj"] is True
        assert runtime["netns_mounts_under_state_dir"] is True  # removed with the node
        assert c["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True
        assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_kubelet_settings_for_cgroup_v1_without_sys_resource(layout):
    stack = NodeStack(layout.nodes[0], ControlPlane(layout))
    cfg = stack._kubelet_config()
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["oomScoreAdj"] == 0
    assert cfg["cgroupRoot"] == "/sandbox-ru-central1-a"
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert str(layout.root) in cfg["podLogsDir"]
    cni = stack.cni_config("10.244.3.0/24")
    bridge = cni["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}]]
    assert str(layout.root) in bridge["ipam"]["dataDir"]


def test_kernel_settings_changed_are_reported(tmp_path, monkeypatch):
    values = {"vm.overcommit_memory": "1"}
    monkeypatch.setattr(kernel, "read", lambda keys: values)
    assert kernel.changed({"vm.overcommit_memory": "0"}) == {"vm.overcommit_memory": ("0", "1")}
    assert kernel.changed({"vm.overcommit_memory": "1"}) == {}


def _upstream_available(name: str) -> bool:
    return (binaries.bin_dir() / name).exists()


@pytest.mark.skipif(
    not _upstream_available("metallb-native.yaml"),
    reason="MetalLB's manifest comes with the stack: run scripts/k8s-control-plane.sh",
)
def test_metallb_runs_the_image_built_here_and_its_speaker_answers_arp():
    docs = addons.metallb()
    containers = [c for d in docs for c in addons._containers(d)]
    assert {c["image"] for c in containers} == {reference(METALLB)}
    assert all(c["imagePullPolicy"] == "Never" for c in containers)
    speaker = next(c for c in containers if c["name"] == "speaker")
    assert speaker["command"] == ["/speaker"] and speaker["securityContext"]["runAsUser"] == 0
    assert "NET_RAW" in speaker["securityContext"]["capabilities"]["add"]
    pool = addons.metallb_pool()[0]
    assert pool["spec"]["addresses"] == [f"{LB_RANGE[0]}-{LB_RANGE[1]}"]


@pytest.mark.skipif(
    not _upstream_available("local-path-storage.yaml"),
    reason="the provisioner's manifest comes with the stack: run scripts/k8s-control-plane.sh",
)
def test_volumes_live_under_each_nodes_directory(layout):
    docs = addons.local_path(layout)
    sc = next(d for d in docs if d["kind"] == "StorageClass")
    assert sc["metadata"]["annotations"]["defaultVolumeType"] == "local"  # fsGroup applies
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    paths = {e["node"]: e["paths"] for e in json.loads(cm["data"]["config.json"])["nodePathMap"]}
    assert paths == {n.name: [str(n.volumes)] for n in layout.nodes}
    helper = yaml.safe_load(cm["data"]["helperPod.yaml"])
    assert helper["spec"]["containers"][0]["imagePullPolicy"] == "Never"
    (standin,) = addons.yandex_disk_standin(layout)
    (c,) = addons._containers(standin)
    assert c["command"][-1] == f"--provisioner-name={addons.YANDEX_DISK_CSI}"
    assert c["command"][c["command"].index("start") :][-1].startswith("--provisioner-name")


def test_sandbox_images_are_non_root_and_need_no_registry():
    for recipe in SANDBOX_RECIPES:
        text = Path(recipe.dockerfile).read_text()
        froms = [line for line in text.splitlines() if line.startswith("FROM")]
        assert froms in (["FROM scratch"], ["FROM ${BASE_IMAGE}"]), recipe.key
        assert not recipe.user.startswith("0")


class FakeIptables:
    """The mangle table of each node as iptables keeps it: -I adds a rule, -S lists a chain
    as `-A` lines, -D deletes one copy of a rule (False where there is none)."""

    def __init__(self) -> None:
        self.inserted: list[tuple[str, list[str]]] = []
        self.present: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, stack, *args, check=True):
        node, (op, chain, rest) = stack.node.name, (args[2], args[3], args[4:])
        assert args[:2] == ("-t", "mangle")
        if op == "-I":
            self.inserted.append((node, list(args)))
            self.present.append((node, (chain, *rest)))
            return ""
        if op == "-S":
            return "".join(
                "-A " + shlex.join(r) + "\n" for n, r in self.present if n == node and r[0] == chain
            )
        if (node, (chain, *rest)) in self.present:
            self.present.remove((node, (chain, *rest)))
            return ""
        return None


def test_a_cut_between_two_nodes_drops_both_ways_and_heals_exactly_its_rules(layout, monkeypatch):
    plane = ControlPlane(layout)
    stacks = [NodeStack(n, plane) for n in layout.nodes]
    a, b, c = (s.node for s in stacks)
    cidrs = {a.name: "10.244.0.0/24", b.name: "10.244.1.0/24", c.name: "10.244.2.0/24"}
    fake = FakeIptables()
    monkeypatch.setattr(faults, "_iptables", fake)
    faults.cut_nodes(stacks, a.name, b.name, cidrs)
    calls = fake.inserted
    dropped = {(node, args[5], args[7]) for node, args in calls}
    # each side drops the other's address and pods, in and out; the third node is untouched
    assert dropped == {
        (a.name, "eth0", b.address),
        (a.name, "eth0", cidrs[b.name]),
        (b.name, "eth0", a.address),
        (b.name, "eth0", cidrs[a.name]),
    }
    assert {args[3] for _, args in calls} == {"PREROUTING", "POSTROUTING"}
    assert all(args[:3] == ["-t", "mangle", "-I"] and args[-1] == "DROP" for _, args in calls)
    assert len(fake.present) == 8
    faults.cut_nodes(stacks, a.name, b.name, cidrs)  # a second cut: its rules go too
    fake.present.append((a.name, ("PREROUTING", "-s", "10.9.9.9", "-j", "ACCEPT")))  # not ours
    faults.heal_nodes(stacks, a.name, b.name)
    assert fake.present == [(a.name, ("PREROUTING", "-s", "10.9.9.9", "-j", "ACCEPT"))]
    with pytest.raises(SandboxError, match=f"no pod CIDR recorded for node {b.name}"):
        faults.cut_nodes(stacks, a.name, b.name, {a.name: cidrs[a.name]})


def test_a_pod_cut_off_drops_its_api_and_peers_or_everything_and_heals(layout, monkeypatch):
    stacks = [NodeStack(n, ControlPlane(layout)) for n in layout.nodes]
    node = stacks[0].node.name
    fake = FakeIptables()
    monkeypatch.setattr(faults, "_iptables", fake)
    faults.cut_pod(stacks, node, "10.244.0.7", ["10.244.1.9", "10.244.2.4"])
    rules = [args for _, args in fake.inserted]
    dropped = {(r[r.index("-s") + 1], r[r.index("-d") + 1]) for r in rules}
    # from the API server (after kube-proxy's DNAT: the host's 6443) and both ways to each
    # peer; nothing else, so the coordinator still reaches it
    assert dropped == {
        ("10.244.0.7", GATEWAY),
        ("10.244.0.7", "10.244.1.9"),
        ("10.244.1.9", "10.244.0.7"),
        ("10.244.0.7", "10.244.2.4"),
        ("10.244.2.4", "10.244.0.7"),
    }
    api = next(r for r in rules if GATEWAY in r)
    assert api[api.index("--dport") + 1] == "6443"
    assert all(r[:4] == ["-t", "mangle", "-I", "FORWARD"] and r[-1] == "DROP" for r in rules)
    fake.inserted.clear()
    faults.cut_pod(stacks, node, "10.244.0.7", None)
    rules = [args for _, args in fake.inserted]
    assert [r[4:6] for r in rules] == [["-s", "10.244.0.7"], ["-d", "10.244.0.7"]]
    faults.heal_pod(stacks, node)
    assert fake.present == []
