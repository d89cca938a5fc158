"""The status tables of `citus-pipeline cluster ...`: a ClusterTopology and Prometheus's
targets as rich tables (and the same tables as markdown)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group
from rich.table import Table

from ..cluster.topology import ClusterTopology, down_lines


def titled_table(title: str, header: Iterable[str]) -> Table:
    """An empty table of these columns under a left-aligned title: every table the CLI prints."""
    t = Table(title=title, title_justify="left")
    for h in header:
        t.add_column(h)
    return t


def print_targets(targets: list[dict], console: Console) -> None:
    """Prometheus's scrape targets, one row each (``Monitoring.targets``)."""
    t = titled_table(
        "Scrape targets", ("Job", "Group", "Member", "Endpoint", "Health", "Last error")
    )
    for x in targets:
        health = x["health"]
        style = {"up": "green", "down": "red"}.get(health, "yellow")
        t.add_row(
            x["job"],
            x["citus_group"],
            x["member"],
            x["endpoint"],
            f"[{style}]{health}[/]",
            x["last_error"],
        )
    console.print(t)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def member_rows(topo: ClusterTopology) -> list[list[str]]:
    return [
        [
            str(m.group),
            m.name,
            f"{m.host}:{m.port}",
            m.role,
            m.state,
            "" if m.timeline is None else str(m.timeline),
            "" if m.lag_mb is None else f"{m.lag_mb:g}",
        ]
        for m in sorted(topo.members, key=lambda m: (m.group, m.name))
    ]


MEMBER_HEADER = ["Group", "Member", "Host", "Role", "State", "TL", "Lag in MB"]
NODE_HEADER = ["Node id", "Group", "Host", "Port", "Role", "Active", "Has shards"]
SHARD_HEADER = ["Group", "Host", "Shards", "Size"]


def node_rows(topo: ClusterTopology) -> list[list[str]]:
    return [
        [
            str(n.nodeid),
            str(n.groupid),
            n.host,
            str(n.port),
            n.role,
            "yes" if n.active else "no",
            "yes" if n.should_have_shards else "no",
        ]
        for n in topo.dist_nodes
    ]


def shard_rows(topo: ClusterTopology) -> list[list[str]]:
    return [
        [str(s.groupid), f"{s.host}:{s.port}", str(s.shards), _fmt_bytes(s.bytes)]
        for s in topo.shards
    ]


def rich_tables(topo: ClusterTopology) -> Group:
    parts = []
    for title, header, rows in (
        (
            f"Citus cluster {topo.scope} ({topo.backend})"
            + (f" — not answered: {topo.members_unanswered}" if topo.members_unanswered else ""),
            MEMBER_HEADER,
            member_rows(topo),
        ),
        ("pg_dist_node", NODE_HEADER, node_rows(topo)),
        (
            "Shards per node"
            + (f" — not answered: {topo.shards_unanswered}" if topo.shards_unanswered else ""),
            SHARD_HEADER,
            shard_rows(topo),
        ),
    ):
        t = titled_table(title, header)
        for r in rows:
            t.add_row(*r)
        parts.append(t)
    return Group(*parts)


def print_topology(topo: ClusterTopology, console: Console | None = None) -> None:
    console = console or Console()
    console.print(rich_tables(topo))
    for line in down_lines(topo):
        console.print(f"[bold red]{line}[/]", highlight=False)


def markdown_tables(topo: ClusterTopology) -> str:
    def md(header: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)

    return "\n\n".join(
        [
            md(MEMBER_HEADER, member_rows(topo)),
            md(NODE_HEADER, node_rows(topo)),
            md(SHARD_HEADER, shard_rows(topo)),
        ]
    )


__all__ = ["markdown_tables", "print_targets", "print_topology", "rich_tables"]
