"""The Price Paid Data record format: the 16 columns, their codes, and the validation rules.

One place defines what a good record is. The loader validates whole chunks at once with
pyarrow compute (`validate_table`); `validate_fields` applies the very same rules to one
record in pure Python (slow path, tests, the generator's self-check). Reasons are the
constants below so a reject always says the same thing for the same fault.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

# Column names as used in the typed table `uk_price`, in file order.
COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "price",
    "date_of_transfer",
    "postcode",
    "property_type",
    "old_new",
    "duration",
    "paon",
    "saon",
    "street",
    "locality",
    "town_city",
    "district",
    "county",
    "ppd_category_type",
    "record_status",
)
N_FIELDS = len(COLUMNS)

PROPERTY_TYPES = ("D", "S", "T", "F", "O")  # detached, semi, terraced, flat/maisonette, other
OLD_NEW = ("Y", "N")
DURATIONS = ("F", "L", "U")  # freehold, leasehold, unknown (occurs in the real data)
PPD_CATEGORIES = ("A", "B")  # standard, additional
RECORD_STATUSES = ("A", "C", "D")  # addition, change, delete

CODE_SETS: dict[str, tuple[str, ...]] = {
    "property_type": PROPERTY_TYPES,
    "old_new": OLD_NEW,
    "duration": DURATIONS,
    "ppd_category_type": PPD_CATEGORIES,
    "record_status": RECORD_STATUSES,
}

# Longest value each free-text column may hold: the reference schema's varchar widths, so a
# record that passes here can never fail the COPY into `uk_price_raw`.
MAX_LENGTH: dict[str, int] = {
    "postcode": 10,
    "paon": 100,
    "saon": 50,
    "street": 100,
    "locality": 50,
    "town_city": 50,
    "district": 50,
    "county": 50,
}

PRICE_MIN = 1
PRICE_MAX = 2_147_483_647  # integer column
DATE_MIN = _dt.date(1995, 1, 1)  # the dataset starts on 1 January 1995
DATE_MAX = _dt.date(2099, 12, 31)

GUID_RE = r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$"
PRICE_RE = r"^-?[0-9]+$"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} 00:00$"

# Reasons (templates take the offending value, shortened by `show`).
R_FIELD_COUNT = "field count {n}, expected 16"
R_QUOTING = "malformed quoting"
R_EMPTY_LINE = "empty line"
R_GUID = "bad GUID {v}"
R_PRICE_INT = "price not an integer: {v}"
R_PRICE_RANGE = "price out of range: {v}"
R_DATE = "bad date {v} (expected YYYY-MM-DD 00:00)"
R_DATE_RANGE = "date out of range: {v}"
R_CODE = "unknown {col} {v}"
R_TOO_LONG = "{col} too long ({n} chars, max {m})"
R_STATUS_IN_COMPLETE = "record_status {v} in a complete file (use apply-monthly)"


def show(value: str, limit: int = 40) -> str:
    """A value quoted for a reason text, cut to `limit` characters."""
    v = value if len(value) <= limit else value[: limit - 1] + "…"
    return "'" + v.replace("'", "\\'") + "'"


_guid = re.compile(GUID_RE)
_price = re.compile(PRICE_RE)
_date = re.compile(DATE_RE)


def validate_fields(fields: list[str], *, complete: bool = True) -> str | None:
    """The reason `fields` is not a good record, or None. Same rules as `validate_table`."""
    if len(fields) != N_FIELDS:
        return R_FIELD_COUNT.format(n=len(fields))
    f = dict(zip(COLUMNS, fields))
    if not _guid.match(f["transaction_id"]):
        return R_GUID.format(v=show(f["transaction_id"]))
    p = f["price"]
    if not _price.match(p):
        return R_PRICE_INT.format(v=show(p))
    if len(p) > 11 or not PRICE_MIN <= int(p) <= PRICE_MAX:
        return R_PRICE_RANGE.format(v=show(p))
    d = f["date_of_transfer"]
    if not _date.match(d):
        return R_DATE.format(v=show(d))
    try:
        day = _dt.date(int(d[0:4]), int(d[5:7]), int(d[8:10]))
    except ValueError:
        return R_DATE.format(v=show(d))
    if not DATE_MIN <= day <= DATE_MAX:
        return R_DATE_RANGE.format(v=show(d))
    for col, codes in CODE_SETS.items():
        if f[col] not in codes:
            return R_CODE.format(col=col, v=show(f[col]))
    if complete and f["record_status"] != "A":
        return R_STATUS_IN_COMPLETE.format(v=show(f["record_status"]))
    for col, m in MAX_LENGTH.items():
        if len(f[col]) > m:
            return R_TOO_LONG.format(col=col, n=len(f[col]), m=m)
    return None


def quote_record(fields: list[str] | tuple[str, ...]) -> str:
    """One record in the published layout: every field double-quoted, quotes doubled."""
    return ",".join('"' + x.replace('"', '""') + '"' for x in fields)


@dataclass(frozen=True)
class FileShapeProblem:
    """Why a file is refused before loading (one clear line for the user)."""

    message: str


_HEADER_WORDS = ("transaction", "price", "postcode", "date", "property", "duration", "county")


def sniff_file_shape(first_records: list[list[str]]) -> FileShapeProblem | None:
    """Refuse a file up front when its first records show it is not in the published layout.

    A header row, or a sample in which no record is good (e.g. a spreadsheet re-save with
    19 columns or DD-MM-YYYY dates), is refused with one message; a good file with a few
    bad records passes and those records are rejected one by one.
    """
    if not first_records:
        return None
    head = [x.strip().lower() for x in first_records[0]]
    if (
        head
        and not _guid.match(first_records[0][0])
        and any(w in " ".join(head) for w in _HEADER_WORDS)
    ):
        return FileShapeProblem(
            f"line 1 looks like a header row ({', '.join(first_records[0][:4])}, ...): "
            "the published files have no header"
        )
    reasons = [validate_fields(r, complete=False) for r in first_records]
    if len(first_records) >= 5 and all(r is not None for r in reasons):
        counts = {len(r) for r in first_records}
        return FileShapeProblem(
            f"none of the first {len(first_records)} records is in the published layout "
            f"(field counts {sorted(counts)}; line 1: {reasons[0]}): wrong file or a re-saved copy"
        )
    return None


__all__ = [
    "CODE_SETS",
    "COLUMNS",
    "DATE_MAX",
    "DATE_MIN",
    "DATE_RE",
    "DURATIONS",
    "GUID_RE",
    "MAX_LENGTH",
    "N_FIELDS",
    "OLD_NEW",
    "PPD_CATEGORIES",
    "PRICE_MAX",
    "PRICE_MIN",
    "PRICE_RE",
    "PROPERTY_TYPES",
    "RECORD_STATUSES",
    "FileShapeProblem",
    "quote_record",
    "show",
    "sniff_file_shape",
    "validate_fields",
]
