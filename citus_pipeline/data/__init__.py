"""The data path: Price Paid files -> validated, typed rows in Citus (see docs/data-path.md)."""

from .generate import generate_complete, generate_monthly
from .load import LoadReport, load_price_paid
from .monthly import MonthlyReport, apply_monthly
from .progress import ProgressEvent
from .publish import PublishReport, publish_uk_price
from .schema import drop_all, ensure_schema

__all__ = [
    "LoadReport",
    "MonthlyReport",
    "ProgressEvent",
    "PublishReport",
    "apply_monthly",
    "drop_all",
    "ensure_schema",
    "generate_complete",
    "generate_monthly",
    "load_price_paid",
    "publish_uk_price",
]
