"""`citus-pipeline data`: generate, load (+ publish), publish, apply-monthly, drop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

app = typer.Typer(
    help="Price Paid data: generate, load, publish, apply monthly updates.", no_args_is_help=True
)
console = Console(stderr=True)

DSN_ENV = "CITUS_PIPELINE_DSN"


def _dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    if os.environ.get(DSN_ENV):
        return os.environ[DSN_ENV]
    from ..cluster.backend import get_backend

    return get_backend().coordinator_dsn()


DsnOpt = typer.Option(
    None,
    "--dsn",
    help=f"libpq conninfo of the coordinator (default: ${DSN_ENV}, else the local cluster)",
)
SchemaOpt = typer.Option("public", "--schema", help="PostgreSQL schema holding the tables")


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(1)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="file to write"),
    rows: int = typer.Option(1_000_000, "--rows", min=0),
    seed: int = typer.Option(0, "--seed"),
    monthly: bool = typer.Option(False, "--monthly", help="write a monthly update against --base"),
    base: Path | None = typer.Option(
        None, "--base", help="complete file a monthly update refers to"
    ),
    expected: Path | None = typer.Option(
        None, "--expected", help="monthly: also write the next month's complete file"
    ),
    unknown: int = typer.Option(
        0, "--unknown", help="monthly: C/D records for ids not in the base"
    ),
    edge_cases: bool = typer.Option(
        False, "--edge-cases", help="commas, quotes, empty fields, Windows-1252 bytes"
    ),
    crlf: bool = typer.Option(False, "--crlf", help="CRLF line ends"),
    bad: int = typer.Option(
        0, "--bad", help="add this many broken records (listed in FILE.bad.json)"
    ),
) -> None:
    """Write a deterministic Price Paid file in the published layout."""
    from .generate import generate_complete, generate_monthly

    try:
        if monthly:
            if base is None:
                raise typer.BadParameter("--monthly needs --base FILE")
            r = generate_monthly(
                out, base, rows, seed, unknown=unknown, expected_out=expected, crlf=crlf
            )
        else:
            r = generate_complete(out, rows, seed, edge_cases=edge_cases, crlf=crlf, bad=bad)
    except (OSError, ValueError) as err:
        _fail(err)
    console.print(
        f"wrote {out}: {r.rows:,} records, {r.bytes / 1e6:.1f} MB"
        + (f", {len(r.bad_records)} broken" if r.bad_records else "")
        + (f", {r.monthly}" if r.monthly else "")
    )


class _Bar:
    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = progress.add_task("load", total=None)

    def __call__(self, ev) -> None:
        self.progress.update(
            self.task,
            total=ev.total_bytes,
            completed=ev.done_bytes,
            description=f"{ev.done_rows:,} rows ({ev.rows_rejected:,} rejected)",
        )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@app.command()
def load(
    source: str = typer.Argument(..., help="file, directory, http(s) URL; plain or gzip"),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", min=1, help="parallel COPY streams (default: cores)"
    ),
    target: str = typer.Option(
        "uk_price",
        "--target",
        help="uk_price (direct) | uk_price_raw (staging, then publish) | both",
    ),
    publish: bool = typer.Option(
        True, "--publish/--no-publish", help="after a staged load, publish uk_price_raw -> uk_price"
    ),
    chunk_mb: int = typer.Option(
        0, "--chunk-mb", min=0, help="chunk size in MiB: one transaction each (0: 12)"
    ),
    dsn: str | None = DsnOpt,
    schema: str = SchemaOpt,
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Load Price Paid records, validated, exactly once; bad records go to uk_price_rejects."""
    from .load import load_price_paid, publish_uk_price
    from .sources import SourceError

    conninfo = _dsn(dsn)
    try:
        with _progress() as bar:
            report = load_price_paid(
                source,
                conninfo,
                jobs=jobs,
                progress=_Bar(bar),
                schema=schema,
                target=target,
                chunk_bytes=(chunk_mb << 20) or None,
            )
        pub = None
        if publish and target in ("uk_price_raw", "both"):
            pub = publish_uk_price(conninfo, schema=schema)
    except (SourceError, ValueError) as err:
        _fail(err)
    if as_json:
        typer.echo(
            json.dumps({"load": report.model_dump(), "publish": pub.model_dump() if pub else None})
        )
        return
    console.print(
        f"read {report.rows_read:,}  loaded {report.rows_loaded:,}  rejected {report.rows_rejected:,}  "
        f"duplicates skipped {report.rows_duplicate:,} ({report.rows_already_loaded:,} in chunks already loaded)  "
        f"{report.seconds:.1f} s, {report.rows_per_s:,.0f} rows/s, {report.mb_per_s:.1f} MB/s, {report.jobs} streams"
    )
    if pub:
        console.print(
            f"published {pub.rows_published:,} rows to uk_price ({pub.rows_in_uk_price:,} in all) in {pub.seconds:.1f} s"
        )


@app.command("publish")
def publish_cmd(dsn: str | None = DsnOpt, schema: str = SchemaOpt) -> None:
    """Publish uk_price_raw -> uk_price (typed, distributed); idempotent."""
    from .load import publish_uk_price

    r = publish_uk_price(_dsn(dsn), schema=schema)
    console.print(
        f"published {r.rows_published:,} rows ({r.rows_in_uk_price:,} in uk_price) in {r.seconds:.1f} s"
    )


@app.command("apply-monthly")
def apply_monthly_cmd(
    source: str = typer.Argument(..., help="monthly update file (or directory of them)"),
    dsn: str | None = DsnOpt,
    schema: str = SchemaOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Apply a monthly update: A inserts, C replaces, D deletes; applying twice changes nothing."""
    from .load import LayoutError
    from .monthly import apply_monthly
    from .sources import SourceError

    try:
        r = apply_monthly(source, _dsn(dsn), schema=schema)
    except (SourceError, LayoutError, ValueError) as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps(r.model_dump()))
        return
    if r.files_already_applied:
        console.print(f"{r.files_already_applied} file(s) already applied: nothing changed")
    console.print(
        f"read {r.rows_read:,}: added {r.adds:,}, changed {r.changes:,}, deleted {r.deletes:,}, "
        f"rejected {r.rows_rejected:,}; unknown ids: {r.unknown_changes:,} C, {r.unknown_deletes:,} D; "
        f"A already present {r.adds_existing:,}; superseded {r.superseded:,}"
    )
    for tid in r.unknown_ids[:20]:
        console.print(f"  unknown id {tid}")


@app.command()
def drop(
    dsn: str | None = DsnOpt, schema: str = SchemaOpt, yes: bool = typer.Option(False, "--yes")
) -> None:
    """Drop the data-path tables in SCHEMA."""
    from .schema import drop_all

    if not yes:
        typer.confirm(
            f"drop uk_price, uk_price_raw, rejects, ledger and logs in schema {schema}?", abort=True
        )
    drop_all(_dsn(dsn), schema=schema)


__all__ = ["app"]
