"""`citus-pipeline data`: generate, load (+ publish), publish, apply-monthly, drop.

Every command but generate talks to the coordinator: ``--dsn``, else ``$CITUS_PIPELINE_DSN``,
else the cluster backend's (``$CITUS_PIPELINE_BACKEND``, default local) way in for clients:
its pooler's session pool, or the coordinator where the spec has no pooler. Reports
and progress go to stderr; ``--json`` reports go to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import settings
from .terminal import err, fail, run, transfer_bar, user_errors

app = typer.Typer(
    help="Price Paid data: generate, load, publish, apply monthly updates.", no_args_is_help=True
)


def _dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    from ..cluster.backend import get_backend

    with user_errors():
        return get_backend().client_dsn()  # $CITUS_PIPELINE_DSN, else the pooler's session pool


DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        help=f"libpq conninfo of the coordinator (default: ${settings.DSN.name}, "
        f"else the pooler's session pool of the cluster backend ${settings.BACKEND.name}, "
        "default local; the coordinator where the spec has no pooler)",
    ),
]
SchemaOpt = Annotated[str, typer.Option("--schema", help="PostgreSQL schema holding the tables")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="file to write")],
    rows: Annotated[int, typer.Option("--rows", min=0)] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    monthly: Annotated[
        bool, typer.Option("--monthly", help="write a monthly update against --base")
    ] = False,
    base: Annotated[
        Path | None, typer.Option("--base", help="complete file a monthly update refers to")
    ] = None,
    expected: Annotated[
        Path | None,
        typer.Option("--expected", help="monthly: also write the next month's complete file"),
    ] = None,
    unknown: Annotated[
        int, typer.Option("--unknown", help="monthly: C/D records for ids not in the base")
    ] = 0,
    edge_cases: Annotated[
        bool, typer.Option("--edge-cases", help="commas, quotes, empty fields, Windows-1252 bytes")
    ] = False,
    crlf: Annotated[bool, typer.Option("--crlf", help="CRLF line ends")] = False,
    bad: Annotated[
        int, typer.Option("--bad", help="add this many broken records (listed in FILE.bad.json)")
    ] = 0,
) -> None:
    """Write a deterministic Price Paid file in the published layout."""
    from ..data.generate import generate_complete, generate_monthly

    try:
        if monthly:
            if base is None:
                raise typer.BadParameter("--monthly needs --base FILE")
            r = generate_monthly(
                out, base, rows, seed, unknown=unknown, expected_out=expected, crlf=crlf
            )
        else:
            r = generate_complete(out, rows, seed, edge_cases=edge_cases, crlf=crlf, bad=bad)
    # an unwritable --out, or a --base too small for the monthly update asked for
    except (OSError, ValueError) as e:
        fail(e)
    err.print(
        f"wrote {out}: {r.rows:,} records, {r.bytes / 1e6:.1f} MB"
        + (f", {len(r.bad_records)} broken" if r.bad_records else "")
        + (f", {r.monthly}" if r.monthly else "")
    )


@app.command()
def load(
    source: Annotated[str, typer.Argument(help="file, directory, http(s) URL; plain or gzip")],
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="parallel COPY streams (default: cores)"),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            "--target", help="uk_price (direct) | uk_price_raw (staging, then publish) | both"
        ),
    ] = "uk_price",
    publish: Annotated[
        bool,
        typer.Option(
            "--publish/--no-publish", help="after a staged load, publish uk_price_raw -> uk_price"
        ),
    ] = True,
    chunk_mb: Annotated[
        int,
        typer.Option("--chunk-mb", min=0, help="chunk size in MiB: one transaction each (0: 24)"),
    ] = 0,
    dsn: DsnOpt = None,
    schema: SchemaOpt = "public",
    as_json: JsonOpt = False,
) -> None:
    """Load Price Paid records, validated, exactly once; bad records go to uk_price_rejects."""
    from ..data import load_price_paid, publish_uk_price

    conninfo = _dsn(dsn)
    with user_errors():
        try:
            with transfer_bar("load") as bar:
                report = load_price_paid(
                    source,
                    conninfo,
                    jobs=jobs,
                    progress=lambda ev: bar(
                        ev.done_bytes,
                        ev.total_bytes,
                        f"{ev.done_rows:,} rows ({ev.rows_rejected:,} rejected)",
                    ),
                    schema=schema,
                    target=target,
                    chunk_bytes=(chunk_mb << 20) or None,
                )
        except ValueError as e:  # a --target that is none of the three
            fail(e)
        pub = None
        if publish and target in ("uk_price_raw", "both"):
            pub = publish_uk_price(conninfo, schema=schema)
    if as_json:
        typer.echo(
            json.dumps({"load": report.model_dump(), "publish": pub.model_dump() if pub else None})
        )
        return
    err.print(
        f"read {report.rows_read:,}  loaded {report.rows_loaded:,}  rejected {report.rows_rejected:,}  "
        f"duplicates skipped {report.rows_duplicate:,} ({report.rows_already_loaded:,} in chunks already loaded)  "
        f"{report.seconds:.1f} s, {report.rows_per_s:,.0f} rows/s, {report.mb_per_s:.1f} MB/s, {report.jobs} streams"
    )
    if pub:
        err.print(
            f"published {pub.rows_published:,} rows to uk_price ({pub.rows_in_uk_price:,} in all) in {pub.seconds:.1f} s"
        )


@app.command("publish")
def publish_cmd(dsn: DsnOpt = None, schema: SchemaOpt = "public") -> None:
    """Publish uk_price_raw -> uk_price (typed, distributed); idempotent."""
    from ..data import publish_uk_price

    r = run(publish_uk_price, _dsn(dsn), schema=schema)
    err.print(
        f"published {r.rows_published:,} rows ({r.rows_in_uk_price:,} in uk_price) in {r.seconds:.1f} s"
    )


@app.command("apply-monthly")
def apply_monthly_cmd(
    source: Annotated[str, typer.Argument(help="monthly update file (or directory of them)")],
    dsn: DsnOpt = None,
    schema: SchemaOpt = "public",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Apply a monthly update: A inserts, C replaces, D deletes; applying twice changes nothing."""
    from ..data.monthly import apply_monthly

    r = run(apply_monthly, source, _dsn(dsn), schema=schema)
    if as_json:
        typer.echo(json.dumps(r.model_dump()))
        return
    if r.files_already_applied:
        err.print(f"{r.files_already_applied} file(s) already applied: nothing changed")
    err.print(
        f"read {r.rows_read:,}: added {r.adds:,}, changed {r.changes:,}, deleted {r.deletes:,}, "
        f"rejected {r.rows_rejected:,}; unknown ids: {r.unknown_changes:,} C, {r.unknown_deletes:,} D; "
        f"A already present {r.adds_existing:,}; superseded {r.superseded:,}"
    )
    for tid in r.unknown_ids[:20]:
        err.print(f"  unknown id {tid}")


@app.command()
def drop(
    dsn: DsnOpt = None,
    schema: SchemaOpt = "public",
    yes: Annotated[bool, typer.Option("--yes")] = False,
) -> None:
    """Drop the data-path tables in SCHEMA."""
    from ..data.schema import drop_all

    if not yes:
        typer.confirm(
            f"drop uk_price, uk_price_raw, rejects, ledger and logs in schema {schema}?", abort=True
        )
    run(drop_all, _dsn(dsn), schema=schema)


__all__ = ["app"]
