"""The local cluster's own network (``local.network: netns``): a namespace per member.

On loopback every member is an address of one network stack, and a client there leaves from
127.0.0.1 whatever address it talks to, so no rule can cut one member off. With ``netns``
each member runs in a network namespace of its own, joined to a bridge in the host's
namespace by a veth pair: member m of group g is ``base + 256*g + m`` on its veth, the bridge
holds etcd's and Prometheus's addresses (``base + 254`` and ``+ 253``) and routes between
the members and the host, where the CLI, Dagster and the tests run.

A partition is a set of blackhole routes inside one member's namespace: the member can
send nothing to the addresses cut (its own connects fail at once), and since even its TCP
acknowledgements go nowhere, the other side sees silence, as across a broken network. An
isolated member's link is down: nothing reaches it at all.
Creating namespaces and links needs root (CAP_NET_ADMIN); iproute2's ``ip`` does the work
and util-linux's ``nsenter`` starts the members' processes inside (``processes.Daemon``).
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ...errors import ClusterError
from .layout import Layout, Member

PREFIX_LEN = 16  # base + 256*g + m for every group: one /16 holds the whole cluster
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    # Python 3.11 has no os.setns; libc's moves only the calling thread
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise ClusterError(f"setns into a member's network namespace: {os.strerror(err)}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


class MemberNetwork:
    """The namespaces, veth pairs and bridge of one local cluster, and its partitions."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.spec = layout.spec
        # one cluster's interfaces by a short digest of its state directory: interface names
        # hold 15 characters, and two state directories may hold clusters of the same name
        self.tag = hashlib.sha1(str(layout.state_dir).encode()).hexdigest()[:6]

    @property
    def enabled(self) -> bool:
        return self.spec.local.network == "netns"

    @property
    def bridge(self) -> str:
        return f"cpb{self.tag}"

    def namespace(self, m: Member) -> str:
        return f"cpn{self.tag}-{m.group}-{m.index}"

    def _veth(self, m: Member) -> str:
        return f"cpv{self.tag}{m.group:02x}{m.index:x}"

    def check(self, as_root: bool) -> None:
        if not self.enabled:
            return
        if not as_root:
            raise ClusterError(
                "local.network: netns creates network namespaces and needs root; run as root "
                "or use local.network: loopback"
            )
        for tool in ("ip", "nsenter"):
            if not shutil.which(tool):
                raise ClusterError(f"{tool} not found on PATH: install iproute2 and util-linux")

    def _exists(self, *args: str) -> bool:
        return _ip(*args, check=False).returncode == 0

    def _bridge_addresses(self) -> list:
        s = self.spec
        extra = [s.leader_endpoint_address, s.pooler_address] if s.pooler.enabled else []
        return [s.etcd_address, s.prometheus_address, *extra]

    def ensure_bridge(self) -> None:
        """The bridge with etcd's, Prometheus's and the pooler's addresses (idempotent)."""
        if not self.enabled:
            return
        br = self.bridge
        for a in self._bridge_addresses():
            holders = {
                line.split()[1]
                for line in _ip("-o", "addr", "show", "to", f"{a}/32").stdout.splitlines()
            } - {br}
            if holders:
                raise ClusterError(
                    f"{a} is already on {', '.join(sorted(holders))}: another cluster uses "
                    f"local.base_address {self.spec.local.base_address} (if none runs, a "
                    f"killed one left it: ip link delete {min(holders)})"
                )
        if not self._exists("link", "show", br):
            _ip("link", "add", br, "type", "bridge")
        for a in self._bridge_addresses():
            _ip("addr", "replace", f"{a}/{PREFIX_LEN}", "dev", br)
        _ip("link", "set", br, "up")

    def ensure_member(self, m: Member) -> None:
        """m's namespace, veth pair, address and default route (idempotent)."""
        if not self.enabled:
            return
        self.ensure_bridge()
        ns, veth = self.namespace(m), self._veth(m)
        if not self._exists("netns", "pids", ns):
            _ip("netns", "add", ns)
        if not self._exists("link", "show", veth):
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "replace", f"{m.address}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "replace", "default", "via", str(self.spec.etcd_address))

    def remove_members(self, members: Iterable[Member]) -> None:
        """Delete the members' namespaces (their processes must be gone): their veth goes too."""
        if not self.enabled:
            return
        for m in members:
            _ip("netns", "delete", self.namespace(m), check=False)
            _ip("link", "delete", self._veth(m), check=False)

    def remove(self, members: Iterable[Member]) -> None:
        self.remove_members(members)
        if self.enabled:
            _ip("link", "delete", self.bridge, check=False)

    def netns_file(self, m: Member) -> str | None:
        """The file of m's network namespace, to start m's processes in (``Daemon.spawn``);
        None without the cluster's own network."""
        return f"/run/netns/{self.namespace(m)}" if self.enabled else None

    @contextmanager
    def entered(self, m: Member) -> Iterator[None]:
        """The calling thread inside m's namespace for the block: what it connects to, it
        reaches as m's own host does, whatever cuts m from the rest. Needs root."""
        if not self.enabled:
            yield
            return
        with (
            open("/proc/thread-self/ns/net") as home,
            open(f"/run/netns/{self.namespace(m)}") as inside,
        ):
            _setns(inside.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def cut(self, m: Member, addresses: Iterable[str | ipaddress.IPv4Address]) -> None:
        """Partition m from ``addresses`` (other members, etcd) until :meth:`heal`."""
        self._require()
        for a in addresses:
            _ip("-n", self.namespace(m), "route", "replace", "blackhole", f"{a}/32")

    def isolate(self, m: Member) -> None:
        """Cut m off from everything: its link goes down (its routes with it), so its own
        sends fail at once and nothing reaches it."""
        self._require()
        _ip("-n", self.namespace(m), "link", "set", "eth0", "down")

    @contextmanager
    def cut_off(
        self, m: Member, addresses: Iterable[str | ipaddress.IPv4Address] | None
    ) -> Iterator[None]:
        """m cut off from ``addresses`` (None: from everything) for the block, healed after
        it whatever happened inside."""
        if addresses is None:
            self.isolate(m)
        else:
            self.cut(m, addresses)
        try:
            yield
        finally:
            self.heal(m)

    def heal(self, m: Member) -> None:
        """Undo every cut of m."""
        self._require()
        ns = self.namespace(m)
        _ip("-n", ns, "route", "flush", "type", "blackhole", check=False)
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "replace", "default", "via", str(self.spec.etcd_address))

    def _require(self) -> None:
        if not self.enabled:
            raise ClusterError(
                "partitions need the cluster's own network: set local.network: netns in the spec"
            )


__all__ = ["MemberNetwork"]
