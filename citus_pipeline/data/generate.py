"""Deterministic Price Paid files in the exact published layout, at any size.

`generate_complete` writes a complete file (`pp-complete.csv` layout), `generate_monthly` a
monthly update against a base file (A new ids, C and D ids taken from the base) and, on
request, the complete file of the next month that applying it must produce. Choices are
drawn in vectorised blocks with numpy (PCG64 seeded by the caller), so the same seed gives
the same bytes, and a block of 50k rows costs one Python formatting pass (≫ 1 M rows/min).

Distributions follow the real data loosely: property-type shares, lognormal prices by type,
year (a house-price index) and region, real towns with their districts, counties and
postcode areas, numbered and named houses, flats with SAONs, leasehold flats.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .format import quote_record, validate_fields
from .sample_tables import (
    CP1252_NAMES,
    HOUSE_NAMES,
    HPI,
    LOCALITIES,
    PLACES,
    POSTCODE_LETTERS,
    STREET_KINDS,
    STREET_NAMES,
    TYPE_CODES,
    TYPE_MEDIAN_1995,
    TYPE_SHARE,
)

BLOCK_ROWS = 50_000


@dataclass
class BadRecord:
    """A record deliberately broken by the generator: where it is and why it must be rejected."""

    line: int
    kind: str
    reason: str


@dataclass
class GenerateReport:
    path: str
    rows: int
    seed: int
    bytes: int
    bad_records: list[BadRecord] = field(default_factory=list)
    monthly: dict[str, int] | None = None
    unknown_ids: list[str] = field(default_factory=list)


def _guids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex().upper()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i : i + 32]
        # version-4 style nibble like the published ids
        out.append(f"{{{h[0:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:32]}}}")
    return out


class _RecordMaker:
    """Draws blocks of realistic records (lists of 16 strings) from one numpy generator."""

    def __init__(
        self, rng: np.random.Generator, years: tuple[int, int], month: tuple[int, int] | None
    ):
        self.rng = rng
        self.years = years
        self.month = month
        w = np.array([p[5] for p in PLACES])
        self.place_p = w / w.sum()
        self.place_factor = np.array([p[4] for p in PLACES])
        ys = np.arange(years[0], years[1] + 1)
        vol = np.array(
            [1.3 if 2001 <= y <= 2007 else 0.75 if 2008 <= y <= 2012 else 1.0 for y in ys]
        )
        self.year_values = ys
        self.year_p = vol / vol.sum()
        self.hpi = np.array([HPI.get(int(y), HPI[2025]) for y in ys])

    def block(self, n: int) -> list[list[str]]:
        rng = self.rng
        ids = _guids(rng, n)
        t = rng.choice(5, size=n, p=TYPE_SHARE)
        place = rng.choice(len(PLACES), size=n, p=self.place_p)
        if self.month:
            y0, m0 = self.month
            start = np.datetime64(f"{y0:04d}-{m0:02d}-01")
            end = start.astype("datetime64[M]") + 1
            days = (end.astype("datetime64[D]") - start).astype(int)
            dates = start + rng.integers(0, days, size=n)
            hpi = np.full(n, HPI.get(y0, HPI[2025]))
        else:
            yi = rng.choice(len(self.year_values), size=n, p=self.year_p)
            doy = rng.integers(0, 365, size=n)
            dates = (self.year_values[yi] - 1970).astype("datetime64[Y]").astype(
                "datetime64[D]"
            ) + doy
            hpi = self.hpi[yi]
        price = TYPE_MEDIAN_1995[t] * hpi * self.place_factor[place] * rng.lognormal(0.0, 0.45, n)
        round_to = np.where(rng.random(n) < 0.7, 500, 1)
        price = np.maximum(1000, (price // round_to) * round_to).astype(np.int64)
        new = rng.random(n) < 0.1
        flat = t == 3
        lease = np.where(flat, rng.random(n) < 0.93, rng.random(n) < 0.08)
        unknown_dur = rng.random(n) < 0.001
        cat_b = rng.random(n) < 0.08
        num = rng.integers(1, 160, size=n)
        named = rng.random(n) < np.where(t == 0, 0.25, 0.04)
        house = rng.integers(0, len(HOUSE_NAMES), size=n)
        flatno = rng.integers(1, 40, size=n)
        saon_p = flat & (rng.random(n) < 0.7)
        sn = rng.integers(0, len(STREET_NAMES), size=n)
        sk = rng.integers(0, len(STREET_KINDS), size=n)
        has_loc = rng.random(n) < 0.4
        loc = rng.integers(0, len(LOCALITIES), size=n)
        pc_d = rng.integers(1, 30, size=n)
        pc_s = rng.integers(0, 10, size=n)
        pc_l = rng.integers(0, len(POSTCODE_LETTERS), size=(n, 2))
        no_pc = rng.random(n) < 0.003
        date_s = dates.astype(str)
        out = []
        for i in range(n):
            town, district, county, area, _, _ = PLACES[place[i]]
            pc = (
                ""
                if no_pc[i]
                else f"{area}{pc_d[i]} {pc_s[i]}{POSTCODE_LETTERS[pc_l[i, 0]]}{POSTCODE_LETTERS[pc_l[i, 1]]}"
            )
            out.append(
                [
                    ids[i],
                    str(price[i]),
                    date_s[i] + " 00:00",
                    pc,
                    TYPE_CODES[t[i]],
                    "Y" if new[i] else "N",
                    "U" if unknown_dur[i] else ("L" if lease[i] else "F"),
                    HOUSE_NAMES[house[i]] if named[i] else str(num[i]),
                    f"FLAT {flatno[i]}" if saon_p[i] else "",
                    f"{STREET_NAMES[sn[i]]} {STREET_KINDS[sk[i]]}",
                    LOCALITIES[loc[i]] if has_loc[i] else "",
                    town,
                    district,
                    county,
                    "B" if cat_b[i] else "A",
                    "A",
                ]
            )
        return out


def _edge_case(rng: np.random.Generator, rec: list[str]) -> tuple[list[str], bool]:
    """Make one record awkward but valid; True when it must be written in Windows-1252."""
    k = int(rng.integers(0, 5))
    if k == 0:
        rec[7] = f"UNIT {rec[7]}, THE MALTINGS"  # comma inside a quoted field
    elif k == 1:
        rec[9] = 'THE "OLD" FORGE, ' + rec[9]  # quotes (doubled on output) and a comma
    elif k == 2:
        rec[9] = "ST JOHN'S ROAD"  # apostrophe
    elif k == 3:
        rec[3] = rec[8] = rec[10] = ""  # empty fields
    else:
        rec[7] = CP1252_NAMES[int(rng.integers(0, len(CP1252_NAMES)))]
        return rec, True
    return rec, False


_BAD_KINDS = ("field_count", "guid", "price", "date", "code", "quoting")


def _break(rng: np.random.Generator, rec: list[str], kind: str) -> str:
    """A broken record line (without line end) of the given kind."""
    if kind == "field_count":
        return quote_record(rec + ["EXTRA", "FIELDS", "HERE"] if rng.random() < 0.5 else rec[:-2])
    if kind == "guid":
        rec[0] = rec[0][1:-1][:30]
    elif kind == "price":
        rec[1] = ("12a4", "-5", "", "1.5e5", "99999999999")[int(rng.integers(0, 5))]
    elif kind == "date":
        d = rec[2]
        rec[2] = (f"{d[8:10]}-{d[5:7]}-{d[0:4]} 00:00", f"{d[0:4]}-02-30 00:00", "")[
            int(rng.integers(0, 3))
        ]
    elif kind == "code":
        col = (4, 5, 6, 14)[int(rng.integers(0, 4))]
        rec[col] = "X"
    elif kind == "quoting":
        return quote_record(rec)[:-1]  # last field's closing quote missing
    return quote_record(rec)


def _write_lines(f, lines: list[bytes], crlf: bool) -> int:
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + end
    f.write(data)
    return len(data)


def generate_complete(
    out: str | Path,
    rows: int,
    seed: int = 0,
    *,
    years: tuple[int, int] = (1995, 2024),
    edge_cases: bool = False,
    crlf: bool = False,
    bad: int = 0,
) -> GenerateReport:
    """Write a complete file of `rows` good records (plus `bad` broken ones) to `out`.

    `edge_cases`: about 1% of records carry commas, doubled quotes, apostrophes, empty
    fields or Windows-1252 bytes (all valid). `bad`: that many extra broken records at
    seeded positions, listed with their line and expected reason in the report (and in
    `<out>.bad.json`).
    """
    rng = np.random.default_rng(np.random.PCG64(seed))
    maker = _RecordMaker(rng, years, None)
    total = rows + bad
    bad_at = set(rng.choice(total, size=bad, replace=False).tolist()) if bad else set()
    out = Path(out)
    report = GenerateReport(path=str(out), rows=rows, seed=seed, bytes=0)
    line = 0
    with open(out, "wb") as f:
        made = 0
        while made < total:
            n = min(BLOCK_ROWS, total - made)
            recs = maker.block(n)
            edge = rng.random(n) < 0.01 if edge_cases else None
            lines: list[bytes] = []
            for i, rec in enumerate(recs):
                line += 1
                if (made + i) in bad_at:
                    kind = _BAD_KINDS[int(rng.integers(0, len(_BAD_KINDS)))]
                    text = _break(rng, rec, kind)
                    reason = _reason_of(text)
                    report.bad_records.append(BadRecord(line, kind, reason))
                    lines.append(text.encode())
                    continue
                cp = False
                if edge is not None and edge[i]:
                    rec, cp = _edge_case(rng, rec)
                lines.append(quote_record(rec).encode("cp1252" if cp else "utf-8"))
            report.bytes += _write_lines(f, lines, crlf)
            made += n
    if bad:
        Path(str(out) + ".bad.json").write_text(
            json.dumps([asdict(b) for b in report.bad_records], indent=0)
        )
    return report


def _reason_of(text: str) -> str:
    """The reason the loader must give for one broken line (the same rules, record by record)."""
    if text.count('"') % 2:
        from .format import R_QUOTING

        return R_QUOTING
    fields = next(csv.reader([text]))
    reason = validate_fields(fields)
    assert reason is not None, text
    return reason


def _read_base(base: Path) -> Iterator[bytes]:
    with open(base, "rb") as f:
        for raw in f:
            yield raw.rstrip(b"\r\n")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def generate_monthly(
    out: str | Path,
    base: str | Path,
    rows: int,
    seed: int = 0,
    *,
    month: tuple[int, int] = (2025, 1),
    change_share: float = 0.10,
    delete_share: float = 0.05,
    unknown: int = 0,
    expected_out: str | Path | None = None,
    crlf: bool = False,
) -> GenerateReport:
    """Write a monthly update of `rows` records against the complete file `base`.

    About `change_share` of the records are C (a base record with a corrected price or
    address), `delete_share` D (a base record, status D), the rest A (new ids dated in
    `month`). `unknown` extra C/D records name ids absent from the base. With
    `expected_out`, also write the complete file the update turns `base` into.
    """
    rng = np.random.default_rng(np.random.PCG64(seed))
    base = Path(base)
    good_lines = [i for i, raw in enumerate(_read_base(base)) if raw]
    n_c = int(rows * change_share)
    n_d = int(rows * delete_share)
    if n_c + n_d > len(good_lines):
        raise ValueError(f"{base}: {len(good_lines)} records, too few for {n_c} C + {n_d} D")
    n_a = rows - n_c - n_d
    picked = rng.choice(len(good_lines), size=n_c + n_d, replace=False)
    change_at = {good_lines[i] for i in picked[:n_c].tolist()}
    delete_at = {good_lines[i] for i in picked[n_c:].tolist()}
    base_recs: dict[int, list[str]] = {}
    for i, raw in enumerate(_read_base(base)):
        if i in change_at or i in delete_at:
            base_recs[i] = next(csv.reader([_decode(raw)]))
    records: list[list[str]] = []
    replaced: dict[int, bytes | None] = {}
    for i in sorted(change_at | delete_at):
        rec = list(base_recs[i])
        if i in change_at:
            if rng.random() < 0.6:
                rec[1] = str(max(1, int(int(rec[1]) * float(rng.uniform(0.9, 1.1)))))
            else:
                rec[7] = rec[7] + "A" if rec[7] else "1"
            rec[15] = "A"
            replaced[i] = quote_record(rec).encode()
            records.append(rec[:15] + ["C"])
        else:
            replaced[i] = None
            records.append(rec[:15] + ["D"])
    maker = _RecordMaker(rng, (month[0], month[0]), month)
    new_recs = []
    while len(new_recs) < n_a:
        new_recs.extend(maker.block(min(BLOCK_ROWS, n_a - len(new_recs))))
    records.extend(new_recs)
    unknown_ids = []
    for j, rec in enumerate(maker.block(unknown) if unknown else []):
        rec[15] = "C" if j % 2 == 0 else "D"
        unknown_ids.append(rec[0])
        records.append(rec)
    order = rng.permutation(len(records))
    lines = [quote_record(records[k]).encode() for k in order]
    out = Path(out)
    report = GenerateReport(
        path=str(out),
        rows=len(records),
        seed=seed,
        bytes=0,
        monthly={"A": n_a, "C": n_c, "D": n_d, "unknown": unknown},
        unknown_ids=unknown_ids,
    )
    with open(out, "wb") as f:
        report.bytes = _write_lines(f, lines, crlf) if lines else 0
    if expected_out is not None:
        with open(expected_out, "wb") as f:
            buf = io.BytesIO()
            for i, raw in enumerate(_read_base(base)):
                if not raw:
                    continue
                r = replaced.get(i, raw)
                if r is not None:
                    buf.write(r + b"\n")
            for rec in new_recs:
                buf.write(quote_record(rec).encode() + b"\n")
            f.write(buf.getvalue())
    return report


__all__ = ["PLACES", "BadRecord", "GenerateReport", "generate_complete", "generate_monthly"]
