"""Settings both backends apply the same way and the spec does not expose: the TCP timeouts of
every connection to a node, the liveness probe of every member, and how a replica is cloned.
"""

from __future__ import annotations

from dataclasses import dataclass

# Patroni's pg_basebackup options for a new replica, on every backend: clone at once instead of
# waiting for the leader's spread checkpoint (up to 0.9 × checkpoint_timeout, ~4.5 min).
REPLICA_BASEBACKUP_OPTIONS: tuple[dict[str, str], ...] = ({"checkpoint": "fast"},)


# TCP timeouts for every connection to a node: the coordinator's to the workers (in
# citus.node_conninfo) and the clients' to the coordinator (in the DSNs the project hands out).
# A node cut off by the network, or paused, never closes its sockets: without these a
# statement waits for the kernel's retransmissions (about 15 min), holding the shard locks
# Patroni's citus_update_node needs to put the new leader into pg_dist_node. Sent data
# unacknowledged for 10 s, or an idle connection silent for 10 + 2 x 5 s, closes it.
TCP_TIMEOUTS = (
    "keepalives=1 keepalives_idle=10 keepalives_interval=5 keepalives_count=2 "
    "tcp_user_timeout=10000"
)


@dataclass(frozen=True)
class LivenessProbe:
    """How often a member's Patroni is asked ``/liveness``, and when it counts as hung."""

    initial_delay_s: int
    period_s: int
    timeout_s: int
    failure_threshold: int


# One probe for both backends: the kubelet's on Kubernetes, the supervisor's locally. A member
# that stops answering is killed about ttl after the stall (3 probes 5 s apart, each given
# 5 s); a Patroni that only starts gets 30 s first.
LIVENESS = LivenessProbe(initial_delay_s=30, period_s=5, timeout_s=5, failure_threshold=3)


# The read endpoint's sessions (both backends): Citus sends their reads to each worker
# group's standbys, and nothing they run may write (the same, should a session land on a
# leader). A superuser's startup option: citus.use_secondary_nodes is set at connection start.
READ_SESSION_OPTIONS = "-c citus.use_secondary_nodes=always -c default_transaction_read_only=on"


def with_tcp_timeouts(conninfo: str) -> str:
    """``conninfo`` with :data:`TCP_TIMEOUTS`, unless it sets TCP timeouts of its own."""
    if "keepalives" in conninfo or "tcp_user_timeout" in conninfo:
        return conninfo
    return f"{conninfo} {TCP_TIMEOUTS}".strip()


__all__ = [
    "LIVENESS",
    "READ_SESSION_OPTIONS",
    "REPLICA_BASEBACKUP_OPTIONS",
    "TCP_TIMEOUTS",
    "LivenessProbe",
    "with_tcp_timeouts",
]
