"""Rows in `uk_price` without a load: for tests about what happens to rows already there
(rebalances, worker removal), not about how they got in."""

from __future__ import annotations

import psycopg


def seed_uk_price(dsn: str, rows: int) -> None:
    """``rows`` synthetic sales in the project's schema (created if missing), spread over
    five property types, 40 districts and ~27 years."""
    from citus_pipeline.data.schema import ensure_schema

    ensure_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO uk_price (transaction_id, price, date_of_transfer, property_type, "
            "old_new, duration, ppd_category_type, town_city, district) "
            "SELECT gen_random_uuid(), 50000 + (i %% 1000) * 300, DATE '1995-01-01' + (i %% 10000),"
            " (ARRAY['D','S','T','F','O'])[1 + i %% 5]::\"char\", 'N', 'F', 'A', 'LONDON',"
            " 'D' || (i %% 40) FROM generate_series(1, %s) i",
            (rows,),
        )
