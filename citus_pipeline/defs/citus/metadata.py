"""How the assets and checks turn domain results into Dagster metadata and log lines.

Numbers become `dg.MetadataValue.int/float` so the UI plots them across runs; tables become
markdown; sources are shown without credentials. Nothing here talks to the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import BaseModel

if TYPE_CHECKING:  # for the type only: formatting metadata needs none of the data path
    from ...data.progress import ProgressEvent

NodeBytes = dict[int, dict[str, int]]  # {group: {"shards": n, "bytes": b}}


def numeric_metadata(report: BaseModel, prefix: str = "") -> dict[str, dg.MetadataValue]:
    """Every int/float field of a data-path report (a pydantic model: computed fields
    included) as numeric metadata, so the UI plots it across runs."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in report.model_dump().items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out[prefix + key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[prefix + key] = dg.MetadataValue.float(round(value, 4))
    return out


def column_schema(columns: Iterable[tuple[str, str, bool]]) -> dg.MetadataValue:
    """A table's (column, type, nullable) as Dagster's column schema (the UI's Columns tab)."""
    return dg.MetadataValue.table_schema(
        dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name, type_, constraints=dg.TableColumnConstraints(nullable=nullable)
                )
                for name, type_, nullable in columns
            ]
        )
    )


def seconds_metadata(seconds: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(round(seconds, 3))


def markdown_table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A markdown table; cells are escaped (a `|` or a line break in a raw record would
    otherwise cut the row), None shows as empty."""
    headers = list(headers)

    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def per_node_metadata(prefix: str, nodes: NodeBytes) -> dict[str, dg.MetadataValue]:
    md: dict[str, dg.MetadataValue] = {}
    for g, v in sorted(nodes.items()):
        md[f"{prefix}bytes_group_{g}"] = dg.MetadataValue.int(v["bytes"])
        md[f"{prefix}shards_group_{g}"] = dg.MetadataValue.int(v["shards"])
    return md


def nodes_markdown(nodes: NodeBytes) -> str:
    return markdown_table(
        ["worker group", "shards", "MB"],
        [(g, v["shards"], f"{v['bytes'] / 1e6:.1f}") for g, v in sorted(nodes.items())],
    )


def describe_source(source: str) -> str:
    """A source for display: a URL without credentials or query string, or a path."""
    if "://" in source:
        parts = urlsplit(source)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    return source


def progress_logger(
    log: Callable[[str], None], every_seconds: float = 10.0
) -> Callable[[ProgressEvent], None]:
    """A `progress` callback for the data path that logs at most once per ``every_seconds``
    (a load reports every chunk; the run log would drown in them)."""
    last = [0.0]

    def progress(event: ProgressEvent) -> None:
        now = time.monotonic()
        if now - last[0] < every_seconds:
            return
        last[0] = now
        done, total = event.done_bytes, event.total_bytes
        pct = f" ({100 * done / total:.0f}%)" if done and total else ""
        log(f"{event.message or ''} rows={event.done_rows}{pct}".strip())

    return progress


__all__ = [
    "NodeBytes",
    "column_schema",
    "describe_source",
    "markdown_table",
    "nodes_markdown",
    "numeric_metadata",
    "per_node_metadata",
    "progress_logger",
    "seconds_metadata",
]
