"""The tables of the data path, as named SQL constants, and `ensure_schema` that creates them.

- `uk_price_raw`: the reference deployment's schema (text price, timestamp date), kept so
  the reference experiment's questions can be asked of it. It holds the validated rows of the
  loads that asked for it, distributed and co-located with `uk_price`: a load into it is
  spread over the workers like any other, and publish runs shard by shard on the workers.
  (A plain coordinator table, as in the reference experiment, made the coordinator do all
  of a 28 M-row load and publish alone: 9 + 8.6 minutes on the 2-core machine.)
- `uk_price`: the analytic table, typed and compact, distributed by transaction id. Its
  CHECK constraints reject impossible values even if a row bypasses the loader.
- `uk_price_rejects`: every bad record with its source, 1-based line number, text, reason.
- `uk_price_load_ledger`: one row per committed chunk, written in the chunk's transaction.
- `uk_price_monthly_log`: one row per applied monthly record (idempotency and the audit
  of C/D records whose id is unknown).
- `uk_price_rollup`: sales and price sums per (year, type, district, town), coordinator-local,
  kept exact by every write path (`data.rollup`).

Every statement takes the PostgreSQL schema as an identifier (tests use one schema each).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .format import COLUMNS, MAX_LENGTH

RAW = "uk_price_raw"
TYPED = "uk_price"
REJECTS = "uk_price_rejects"
LEDGER = "uk_price_load_ledger"
MONTHLY_LOG = "uk_price_monthly_log"
DEFAULT_SCHEMA = "public"

# The reference deployment's table, column for column.
RAW_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_raw (
    transaction_unique_identifier uuid PRIMARY KEY,
    price varchar(50),
    date_of_transfer timestamp,
    postcode varchar(10),
    property_type varchar(10),
    "Old/New" varchar(10),
    duration varchar(10),
    paon varchar(100),
    saon varchar(50),
    street varchar(100),
    locality varchar(50),
    "Town/City" varchar(50),
    district varchar(50),
    county varchar(50),
    ppdcategory_type varchar(10),
    record_status varchar(10)
)
"""
RAW_COLUMNS = (
    'transaction_unique_identifier, price, date_of_transfer, postcode, property_type, "Old/New", '
    'duration, paon, saon, street, locality, "Town/City", district, county, ppdcategory_type, '
    "record_status"
)

# Named, so a bulk write can drop it and build it again (data.deferred_index).
PRIMARY_KEY = "uk_price_pkey"
# Codes are one-byte "char"; empty address parts are NULL; record_status is not kept (every
# row of uk_price is current: monthly C and D are applied, not stored).
TYPED_DDL = f"""
CREATE TABLE IF NOT EXISTS {{schema}}.uk_price (
    transaction_id uuid NOT NULL,
    price integer NOT NULL CONSTRAINT price_positive CHECK (price > 0),
    date_of_transfer date NOT NULL
        CONSTRAINT date_in_range CHECK (date_of_transfer BETWEEN '1995-01-01' AND '2099-12-31'),
    property_type "char" NOT NULL
        CONSTRAINT property_type_code CHECK (property_type IN ('D', 'S', 'T', 'F', 'O')),
    old_new "char" NOT NULL CONSTRAINT old_new_code CHECK (old_new IN ('Y', 'N')),
    duration "char" NOT NULL CONSTRAINT duration_code CHECK (duration IN ('F', 'L', 'U')),
    ppd_category_type "char" NOT NULL
        CONSTRAINT ppd_category_code CHECK (ppd_category_type IN ('A', 'B')),
    postcode text CONSTRAINT postcode_length CHECK (length(postcode) <= 10),
    paon text,
    saon text,
    street text,
    locality text,
    town_city text,
    district text,
    county text,
    CONSTRAINT {PRIMARY_KEY} PRIMARY KEY (transaction_id)
)
"""
# Column order of uk_price: the file's columns but record_status, the fixed-width ones first
# (less alignment padding per row), then the free text (format.MAX_LENGTH's), each in file order.
TYPED_COLUMNS = tuple(
    sorted((c for c in COLUMNS if c != "record_status"), key=lambda c: c in MAX_LENGTH)
)

# The reference query counts one property type: a one-byte btree (deduplicated, ~1/10 of the
# heap) answers it with an index-only scan once VACUUM has set the visibility map. Cost: one
# more index entry per inserted row (A records, loads) and per C that changes the type.
PROPERTY_TYPE_INDEX = "uk_price_property_type"
PROPERTY_TYPE_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {PROPERTY_TYPE_INDEX} ON {{schema}}.uk_price (property_type)"
)

# Sales and price sums per (year, type, district, town) on the coordinator: the analytic
# questions as sums over a few thousand rows (data.rollup keeps it in step with uk_price).
ROLLUP = "uk_price_rollup"
ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_rollup (
    year smallint NOT NULL,
    property_type "char" NOT NULL,
    district text,
    town_city text,
    sales bigint NOT NULL,
    price_sum bigint NOT NULL,
    CONSTRAINT uk_price_rollup_key
        UNIQUE NULLS NOT DISTINCT (year, property_type, district, town_city)
)
"""

DISTRIBUTE = "SELECT create_distributed_table(%s, 'transaction_id', shard_count => %s)"
IS_DISTRIBUTED = "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = to_regclass(%s)"
DISTRIBUTE_RAW = (
    "SELECT create_distributed_table(%s, 'transaction_unique_identifier', colocate_with => %s)"
)

REJECTS_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_rejects (
    source text NOT NULL,
    source_fingerprint text NOT NULL,
    line_number bigint NOT NULL,
    raw_record text NOT NULL,
    reason text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_fingerprint, line_number)
)
"""

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_load_ledger (
    source_fingerprint text NOT NULL,
    chunk_offset bigint NOT NULL,
    chunk_bytes bigint NOT NULL,
    first_line bigint NOT NULL,
    target text NOT NULL,
    source text NOT NULL,
    rows_read bigint NOT NULL,
    rows_loaded bigint NOT NULL,
    rows_rejected bigint NOT NULL,
    rows_duplicate bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_fingerprint, target, chunk_offset)
)
"""

MONTHLY_LOG_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_monthly_log (
    source_fingerprint text NOT NULL,
    line_number bigint NOT NULL,
    transaction_id uuid NOT NULL,
    record_status "char" NOT NULL,
    outcome text NOT NULL,
    source text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_fingerprint, line_number)
)
"""


# Monthly records in flight, co-located with uk_price so the A/C/D statements join shard by
# shard on the workers (rows live here only inside the applying transaction).
MONTHLY_STAGE = "uk_price_monthly_stage"
MONTHLY_STAGE_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.uk_price_monthly_stage (
    source_fingerprint text NOT NULL,
    line_number bigint NOT NULL,
    record_status "char" NOT NULL,
    LIKE {schema}.uk_price
)
"""
DISTRIBUTE_COLOCATED = "SELECT create_distributed_table(%s, 'transaction_id', colocate_with => %s)"


REJECT_INSERT = """
INSERT INTO {schema}.uk_price_rejects (source, source_fingerprint, line_number, raw_record, reason)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


def insert_rejects(
    cur: psycopg.Cursor, schema: str, source: str, fingerprint: str, rejects: list
) -> None:
    """Every reject (line, raw record, reason) of one source into uk_price_rejects, once."""
    if rejects:
        cur.executemany(
            q(REJECT_INSERT, schema),
            [(source, fingerprint, r.line, r.raw, r.reason) for r in rejects],
        )


COLUMNS_SQL = """
SELECT column_name, data_type, is_nullable = 'YES'
FROM information_schema.columns WHERE table_schema = %s AND table_name = %s
ORDER BY ordinal_position
"""


def table_columns(conn: psycopg.Connection, schema: str, name: str) -> list[tuple[str, str, bool]]:
    """(column, type, nullable) of a table as the database has it, in column order."""
    return [(c, t, bool(n)) for c, t, n in conn.execute(COLUMNS_SQL, (schema, name)).fetchall()]


def q(statement: str, schema: str) -> sql.Composed:
    """`statement` with `{schema}` bound as an identifier."""
    return sql.SQL(statement).format(schema=sql.Identifier(schema))


def table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def regclass(schema: str, name: str) -> str:
    return sql.Identifier(schema, name).as_string(None)


def ensure_schema(dsn: str, shard_count: int = 32, *, schema: str = DEFAULT_SCHEMA) -> None:
    """Create the schema's tables and distribute `uk_price` (idempotent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for ddl in (RAW_DDL, TYPED_DDL, REJECTS_DDL, LEDGER_DDL, MONTHLY_LOG_DDL, ROLLUP_DDL):
            conn.execute(q(ddl, schema))
        (done,) = conn.execute(IS_DISTRIBUTED, (regclass(schema, TYPED),)).fetchone()
        if not done:
            conn.execute(DISTRIBUTE, (regclass(schema, TYPED), shard_count))
        (done,) = conn.execute(IS_DISTRIBUTED, (regclass(schema, RAW),)).fetchone()
        if not done:  # rows of an earlier plain uk_price_raw move to the workers with it
            conn.execute(DISTRIBUTE_RAW, (regclass(schema, RAW), regclass(schema, TYPED)))
            conn.execute(
                "SELECT truncate_local_data_after_distributing_table(%s)",
                (regclass(schema, RAW),),
            )
        conn.execute(q(PROPERTY_TYPE_INDEX_DDL, schema))


def ensure_monthly_stage(dsn: str, *, schema: str = DEFAULT_SCHEMA) -> None:
    """Create the monthly staging table, co-located with uk_price (idempotent; apply_monthly)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(q(MONTHLY_STAGE_DDL, schema))
        (done,) = conn.execute(IS_DISTRIBUTED, (regclass(schema, MONTHLY_STAGE),)).fetchone()
        if not done:
            conn.execute(
                DISTRIBUTE_COLOCATED, (regclass(schema, MONTHLY_STAGE), regclass(schema, TYPED))
            )


CHECKSUM = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) "
    "FROM {table} t"
)


def checksum(conn: psycopg.Connection, schema: str, name: str = TYPED) -> tuple[int, int]:
    """(rows, a sum of row hashes) of a table: equal for equal contents, in any order."""
    rows, total = conn.execute(sql.SQL(CHECKSUM).format(table=table(schema, name))).fetchone()
    return int(rows), int(total)


def drop_all(dsn: str, *, schema: str = DEFAULT_SCHEMA) -> None:
    """Drop every table of the data path in `schema` (and the schema unless it is public)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if schema == DEFAULT_SCHEMA:
            for name in (MONTHLY_STAGE, TYPED, RAW, REJECTS, LEDGER, MONTHLY_LOG, ROLLUP):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table(schema, name)))
        else:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


__all__ = [
    "DEFAULT_SCHEMA",
    "LEDGER",
    "MONTHLY_LOG",
    "MONTHLY_STAGE",
    "PRIMARY_KEY",
    "PROPERTY_TYPE_INDEX",
    "RAW",
    "RAW_COLUMNS",
    "REJECTS",
    "ROLLUP",
    "TYPED",
    "TYPED_COLUMNS",
    "checksum",
    "drop_all",
    "ensure_monthly_stage",
    "ensure_schema",
    "insert_rejects",
    "q",
    "regclass",
    "table",
    "table_columns",
]
