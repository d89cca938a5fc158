"""Citus metadata read and changed through the coordinator (shared by both backends).

Patroni's Citus support owns pg_dist_node while groups exist: it registers each worker
group's leader (and its replicas as secondaries) and follows failovers. This module only
reads that metadata and does what Patroni does not: draining a group before it goes away.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..errors import DrainError
from .topology import ClusterTopology, DistNode, NodeShards, active_worker_groups

DIST_NODES_SQL = """
SELECT nodeid, groupid, nodename, nodeport, noderole::text, isactive, shouldhaveshards
FROM pg_catalog.pg_dist_node ORDER BY groupid, noderole, nodeid
"""

# Shards and bytes per primary node; citus_shard_sizes() asks every worker once.
NODE_SHARDS_SQL = """
WITH sizes AS (
    SELECT shard_id, size FROM pg_catalog.citus_shard_sizes()
)
SELECT n.groupid, n.nodename, n.nodeport,
       count(p.shardid)::int AS shards,
       coalesce(sum(sz.size), 0)::bigint AS bytes
FROM pg_catalog.pg_dist_node n
LEFT JOIN pg_catalog.pg_dist_placement p ON p.groupid = n.groupid
LEFT JOIN sizes sz ON sz.shard_id = p.shardid
WHERE n.noderole = 'primary'
GROUP BY n.groupid, n.nodename, n.nodeport
ORDER BY n.groupid
"""

DRAIN_SQL = "SELECT pg_catalog.citus_drain_node(%s, %s, shard_transfer_mode => %s::citus.shard_transfer_mode)"
REMOVE_NODE_SQL = "SELECT pg_catalog.citus_remove_node(%s, %s)"
# Marks a node that is gone as inactive without reaching it, so citus_remove_node then does
# not try to either (it syncs the removal to every active node with metadata).
DISABLE_NODE_SQL = "SELECT pg_catalog.citus_disable_node(%s, %s, synchronous => true)"
SET_SHOULD_HAVE_SHARDS_SQL = (
    "SELECT pg_catalog.citus_set_node_property(%s, %s, 'shouldhaveshards', true)"
)
CLEANUP_SQL = "CALL pg_catalog.citus_cleanup_orphaned_resources()"
RECOVER_SQL = "SELECT pg_catalog.recover_prepared_transactions()"
# A shard transfer in progress anywhere: a background task of a job, or a blocking call.
TRANSFER_RUNNING_SQL = r"""
SELECT (SELECT count(*) FROM pg_catalog.pg_dist_background_task
        WHERE status IN ('running', 'runnable', 'blocked', 'cancelling'))
     + (SELECT count(*) FROM pg_catalog.pg_stat_activity
        WHERE pid <> pg_backend_pid() AND state <> 'idle' AND query ~* '(citus_move_shard_placement|citus_copy_shard_placement|rebalance_table_shards|citus_drain_node|split_shard|isolate_tenant_to_new_shard|create_distributed_table_concurrently)')
"""
# Shard-move replication objects on a node, dropped: Citus creates a move's subscription on
# the target before it writes the cleanup record, so a coordinator killed in between leaves
# one that no pg_dist_cleanup row names (its slot may be gone with the source's leader).
DROP_MOVE_LEFTOVERS_ON_EACH_NODE_SQL = r"""
SELECT n.groupid, r.success, r.result
FROM pg_catalog.run_command_on_all_nodes($cmd$
DO $do$
DECLARE s text;
BEGIN
  FOR s IN SELECT subname FROM pg_catalog.pg_subscription WHERE subname LIKE 'citus\_shard\_%' LOOP
    EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', s);
    EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', s);
    EXECUTE format('DROP SUBSCRIPTION %I', s);
  END LOOP;
  FOR s IN SELECT pubname FROM pg_catalog.pg_publication WHERE pubname LIKE 'citus\_shard\_%' LOOP
    EXECUTE format('DROP PUBLICATION %I', s);
  END LOOP;
  PERFORM pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
  WHERE slot_name LIKE 'citus\_shard\_%' AND NOT active;
END $do$
$cmd$) r
JOIN pg_catalog.pg_dist_node n USING (nodeid)
WHERE n.noderole = 'primary'
"""
# Groups holding at least one placement: a catalog read on the coordinator, no worker asked.
PLACEMENT_GROUPS_SQL = "SELECT DISTINCT groupid FROM pg_catalog.pg_dist_placement"
PLACEMENTS_IN_GROUP_SQL = "SELECT count(*) FROM pg_catalog.pg_dist_placement WHERE groupid = %s"


def fetch_dist_nodes(conn: psycopg.Connection) -> list[DistNode]:
    rows = conn.execute(DIST_NODES_SQL).fetchall()
    return [
        DistNode(
            nodeid=r[0],
            groupid=r[1],
            host=r[2],
            port=r[3],
            role=r[4],
            active=r[5],
            should_have_shards=r[6],
        )
        for r in rows
    ]


# The shard sizes come from every worker: a frozen or cut-off worker would hold the query (and
# `cluster status`) for as long as its socket stays open, which is without end while its
# kernel still answers TCP. Status gives up on them after this long instead.
SHARD_SIZES_TIMEOUT_MS = 3000


def fetch_node_shards(
    conn: psycopg.Connection, timeout_ms: int = SHARD_SIZES_TIMEOUT_MS
) -> list[NodeShards]:
    """Placements and bytes per primary; raises ``psycopg.errors.QueryCanceled`` when some
    worker does not answer within ``timeout_ms``."""
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        rows = conn.execute(NODE_SHARDS_SQL).fetchall()
    return [NodeShards(groupid=r[0], host=r[1], port=r[2], shards=r[3], bytes=r[4]) for r in rows]


def read_metadata(conn: psycopg.Connection, topo: ClusterTopology, with_shards: bool) -> None:
    """Fill ``topo`` from the coordinator: pg_dist_node, and (``with_shards``) the shards per
    node, or why the workers left them unanswered. Both backends' ``status`` end here."""
    topo.dist_nodes = fetch_dist_nodes(conn)
    if not with_shards:
        return
    try:
        topo.shards = fetch_node_shards(conn)
    except psycopg.errors.QueryCanceled:
        topo.shards_unanswered = (
            f"a worker did not answer within {SHARD_SIZES_TIMEOUT_MS / 1000:g} s"
        )
    except psycopg.Error as err:
        topo.shards_unanswered = str(err).strip().splitlines()[0] or type(err).__name__


def drain_group(conn: psycopg.Connection, group: int, transfer_mode: str = "block_writes") -> int:
    """Move every shard placement off ``group``; returns the number of placements it held.

    Raises :class:`DrainError` (with Citus's own message) if the drain fails or leaves
    anything behind. ``conn`` must be in autocommit mode: the drain commits per move.
    """
    if group <= 0:
        raise DrainError(f"group {group} is not a worker group")
    nodes = [n for n in fetch_dist_nodes(conn) if n.groupid == group and n.role == "primary"]
    if not nodes:
        raise DrainError(f"worker group {group} has no primary in pg_dist_node")
    before = conn.execute(PLACEMENTS_IN_GROUP_SQL, (group,)).fetchone()[0]
    primary = nodes[0]
    try:
        conn.execute(DRAIN_SQL, (primary.host, primary.port, transfer_mode))
    except psycopg.Error as err:
        # citus_drain_node marks the node shouldhaveshards=false before moving anything;
        # a refused removal must leave the node as it was.
        if primary.should_have_shards:
            conn.execute(SET_SHOULD_HAVE_SHARDS_SQL, (primary.host, primary.port))
        msg = str(err).strip().splitlines()[0]
        raise DrainError(f"citus_drain_node({primary.host}:{primary.port}) failed: {msg}") from err
    left = conn.execute(PLACEMENTS_IN_GROUP_SQL, (group,)).fetchone()[0]
    if left:
        raise DrainError(f"group {group} still holds {left} shard placements after the drain")
    return before


def cleanup_orphans(conn: psycopg.Connection) -> None:
    """Drop shards a move or drain left behind now, while their node is still reachable.

    Citus drops moved-away placements lazily; a group that is about to disappear would
    otherwise leave cleanup records that retry against a dead address forever.
    """
    conn.execute(CLEANUP_SQL)
    recover_prepared_transactions(conn)
    drop_move_leftovers(conn)


def drop_move_leftovers(conn: psycopg.Connection) -> None:
    """Drop every shard-move subscription, publication and inactive slot on every node, when
    no shard transfer runs: what an interrupted move left without a cleanup record (with
    one, ``citus_cleanup_orphaned_resources`` has dropped it already). A node that does not
    answer is left for the next call."""
    if conn.execute(TRANSFER_RUNNING_SQL).fetchone()[0]:
        return
    conn.execute(DROP_MOVE_LEFTOVERS_ON_EACH_NODE_SQL).fetchall()


def ensure_distributed(conn: psycopg.Connection, table: str, columns: str) -> None:
    """``table`` created with ``columns`` (SQL, the first being ``id bigint PRIMARY KEY``)
    and distributed on id, unless it already is (the drills' and benches' own tables)."""
    ident = sql.Identifier(table)
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident, sql.SQL(columns)))
    if not conn.execute(
        "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = %s::regclass", (table,)
    ).fetchone():
        conn.execute("SELECT create_distributed_table(%s, 'id')", (table,))


def recover_prepared_transactions(conn: psycopg.Connection) -> None:
    """Finish two-phase commits a failover interrupted.

    When a worker leader dies between PREPARE and COMMIT PREPARED, the transaction is
    committed (the coordinator decided) but its rows on that group stay in a prepared
    transaction on the promoted standby -- invisible until Citus's recovery daemon runs
    (``citus.recover_2pc_interval``, 1 min). Work that must be visible at once calls this.
    """
    try:
        conn.execute(RECOVER_SQL)
    except psycopg.errors.InsufficientPrivilege:  # not ours to run: the daemon will do it
        pass


def fetch_active_worker_groups(conn: psycopg.Connection) -> list[int]:
    return active_worker_groups(fetch_dist_nodes(conn))


def worker_groups_holding_shards(conn: psycopg.Connection) -> dict[int, bool]:
    """{active worker group: whether it holds any shard placement} (cheap: catalogs only)."""
    holding = {g for (g,) in conn.execute(PLACEMENT_GROUPS_SQL).fetchall()}
    return {g: g in holding for g in fetch_active_worker_groups(conn)}


def node_bytes(conn: psycopg.Connection) -> dict[int, dict[str, int]]:
    """{group: {"shards": n, "bytes": b}} for every primary worker group."""
    return {
        n.groupid: {"shards": n.shards, "bytes": n.bytes}
        for n in fetch_node_shards(conn)
        if n.groupid > 0
    }


def remove_group_nodes(
    conn: psycopg.Connection, group: int, *, gone: bool = False
) -> list[DistNode]:
    """Remove every pg_dist_node row of ``group`` (secondaries first). Call after a drain.

    ``gone``: the group's servers no longer exist (their pods were deleted): each active row
    is disabled first, which citus_remove_node otherwise needs to reach."""
    left = conn.execute(PLACEMENTS_IN_GROUP_SQL, (group,)).fetchone()[0]
    if left:
        raise DrainError(
            f"refusing to remove group {group}: it still holds {left} shard placements"
        )
    rows = [n for n in fetch_dist_nodes(conn) if n.groupid == group]
    if gone:
        # the primary first: disabling a secondary syncs metadata to every active node with
        # metadata, which would still include the group's (unreachable) primary
        for n in sorted(rows, key=lambda n: n.role != "primary"):
            if n.active:
                conn.execute(DISABLE_NODE_SQL, (n.host, n.port))
    for n in sorted(rows, key=lambda n: n.role == "primary"):
        conn.execute(REMOVE_NODE_SQL, (n.host, n.port))
    return rows


__all__ = [
    "cleanup_orphans",
    "drain_group",
    "drop_move_leftovers",
    "ensure_distributed",
    "fetch_active_worker_groups",
    "fetch_dist_nodes",
    "fetch_node_shards",
    "node_bytes",
    "read_metadata",
    "recover_prepared_transactions",
    "remove_group_nodes",
    "worker_groups_holding_shards",
]
