"""Chunk parsing: bytes of whole lines -> validated records (an Arrow table) + rejects.

Fast path: pyarrow's multithreaded C++ CSV reader parses the chunk into 16 string columns
and pyarrow compute applies the rules of `format` to whole columns at once. The fast path
is only trusted when it provably saw one record per physical line (no line with an odd
number of quotes, no row of the wrong width, as many rows as lines); otherwise the chunk
takes the slow path, which applies the same rules line by line in Python, so every reject
carries its exact line number. Bad records are rare, so the slow path is too.

Bytes that are not valid UTF-8 are read as Windows-1252, line by line (the files' legacy
encoding); bytes Windows-1252 leaves undefined are read as Latin-1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from . import format as fmt
from .sources import newlines

STRING_TYPES = {c: pa.string() for c in fmt.COLUMNS}

# Freed Arrow buffers go back to the OS within a second (bounded loader RSS whatever the
# file size). The wheel's default pool is mimalloc, which keeps more: measured on 8 MiB
# chunks, jemalloc held the loader ~90 MB lower. Not at once (decay 0): then every buffer
# of every piece was a fresh page fault, and on 4 M rows the loader spent 7.6 s in the
# kernel instead of 4.3 (17.8 CPU-s in all instead of 13.4) for 30 MB less RSS.
JEMALLOC_DECAY_MS = 1000
try:
    pa.set_memory_pool(pa.jemalloc_memory_pool())
    pa.jemalloc_set_decay_ms(JEMALLOC_DECAY_MS)
except (
    NotImplementedError,
    pa.ArrowNotImplementedError,
):  # pragma: no cover - build without jemalloc
    pass


def warm_up() -> None:
    """Compile the regular expressions once (the first RE2 use costs ~1 s); call in a thread."""
    parse_chunk(
        b'"{5BBE9CB3-6332-4EB0-9CD3-8737CEA4A65A}","1","1995-01-01 00:00","","D","N","F","","","","","","","","A","A"\n',
        1,
    )


@dataclass
class Reject:
    line: int
    raw: str
    reason: str


@dataclass
class ParsedChunk:
    good: pa.Table  # the 16 columns as strings, only good records
    good_lines: np.ndarray  # line number of each good record
    rejects: list[Reject] = field(default_factory=list)
    lines: int = 0
    slow_path: bool = False
    transcoded_lines: int = 0


def decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def to_utf8(data: bytes) -> tuple[bytes, int]:
    """`data` as valid UTF-8 (lines that are not are read as Windows-1252) and how many lines
    were transcoded. Valid chunks (almost all) cost one C-speed check and no copy."""
    try:
        data.decode("utf-8")
        return data, 0
    except UnicodeDecodeError:
        pass
    out = []
    n = 0
    for raw in data.split(b"\n"):
        try:
            raw.decode("utf-8")
            out.append(raw)
        except UnicodeDecodeError:
            out.append(decode_line(raw).encode("utf-8"))
            n += 1
    return b"\n".join(out), n


def _line_count(data: bytes) -> int:
    if not data:
        return 0
    return newlines(data) + (0 if data.endswith(b"\n") else 1)


def _odd_quote_lines(data: bytes) -> bool:
    """True if some line has an odd number of double quotes (broken quoting)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == 34)
    if quotes.size % 2:
        return True
    ends = np.flatnonzero(arr == 10)
    per_line = np.diff(np.searchsorted(quotes, ends, side="left"), prepend=0)
    return bool((per_line % 2).any())


def _read_fast(data: bytes) -> pa.Table | None:
    """The chunk as 16 string columns, or None if any row is not 16 fields wide."""
    invalid: list[int] = []

    def bad_row(row) -> str:
        invalid.append(1)
        return "skip"

    t = pcsv.read_csv(
        pa.py_buffer(data),
        # one thread: the loader's streams already run in parallel, and Arrow's thread pool
        # cost a third more CPU per row for no gain on a machine the database shares
        read_options=pcsv.ReadOptions(
            column_names=list(fmt.COLUMNS), block_size=1 << 20, use_threads=False
        ),
        parse_options=pcsv.ParseOptions(
            quote_char='"',
            double_quote=True,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=bad_row,
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=STRING_TYPES,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return None if invalid else t


# The rules' constants as Arrow values, made once.
_S = {v: pa.scalar(v, pa.string()) for v in ("0", "01", "2000-01-01", "A")}
_FALSE = pa.scalar(False)
_PRICE_MIN = pa.scalar(fmt.PRICE_MIN, pa.int64())
_PRICE_MAX = pa.scalar(fmt.PRICE_MAX, pa.int64())
_PRICE_DIGITS = pa.scalar(11, pa.int32())
_DATE_LO = pa.scalar(np.datetime64(fmt.DATE_MIN.isoformat(), "s"), pa.timestamp("s"))
_DATE_HI = pa.scalar(np.datetime64(fmt.DATE_MAX.isoformat(), "s"), pa.timestamp("s"))
_CODE_SETS = {col: pa.array(codes, pa.string()) for col, codes in fmt.CODE_SETS.items()}
_MAX_LENGTH = {col: pa.scalar(m, pa.int32()) for col, m in fmt.MAX_LENGTH.items()}


def _length_ok(a: pa.ChunkedArray, m: pa.Scalar) -> pa.ChunkedArray:
    """utf8 length <= m; counts characters only where the byte length is over (rare)."""
    ok = pc.less_equal(pc.binary_length(a), m)
    if pc.all(ok).as_py():
        return ok
    return pc.less_equal(pc.utf8_length(a), m)


def _bad_mask(t: pa.Table, complete: bool) -> pa.ChunkedArray:
    """True for each row that breaks a rule (a superset check; reasons come from `format`)."""
    ok = pc.match_substring_regex(t["transaction_id"], fmt.GUID_RE)
    price = t["price"]
    price_ok = pc.and_(
        pc.match_substring_regex(price, fmt.PRICE_RE),
        pc.less_equal(pc.binary_length(price), _PRICE_DIGITS),
    )
    safe_price = pc.if_else(price_ok, price, _S["0"])
    p = pc.cast(safe_price, pa.int64())
    price_ok = pc.and_(
        price_ok, pc.and_(pc.greater_equal(p, _PRICE_MIN), pc.less_equal(p, _PRICE_MAX))
    )
    ok = pc.and_(ok, price_ok)
    d = t["date_of_transfer"]
    d_ok = pc.match_substring_regex(d, fmt.DATE_RE)
    day = pc.utf8_slice_codeunits(d, 0, 10)
    ts = pc.strptime(
        pc.if_else(d_ok, day, _S["2000-01-01"]), format="%Y-%m-%d", unit="s", error_is_null=True
    )
    # strptime may roll 1995-02-30 over to 03-02: the parsed day must be the written one
    written_day = pc.cast(pc.if_else(d_ok, pc.utf8_slice_codeunits(d, 8, 10), _S["01"]), pa.int64())
    d_ok = pc.and_(d_ok, pc.fill_null(pc.equal(pc.day(ts), written_day), _FALSE))
    d_ok = pc.and_(d_ok, pc.and_(pc.greater_equal(ts, _DATE_LO), pc.less_equal(ts, _DATE_HI)))
    ok = pc.and_(ok, pc.fill_null(d_ok, _FALSE))
    for col, codes in _CODE_SETS.items():
        ok = pc.and_(ok, pc.is_in(t[col], value_set=codes))
    if complete:
        ok = pc.and_(ok, pc.equal(t["record_status"], _S["A"]))
    for col, m in _MAX_LENGTH.items():
        ok = pc.and_(ok, _length_ok(t[col], m))
    return pc.invert(ok)


def _line_text(data: bytes, starts: np.ndarray, i: int) -> str:
    end = data.find(b"\n", int(starts[i]))
    raw = data[int(starts[i]) : end if end >= 0 else len(data)]
    return raw.rstrip(b"\r").decode("utf-8", errors="replace")


def pieces(data: bytes, first_line: int, piece_bytes: int) -> Iterator[tuple[bytes, int]]:
    """`data` (whole lines) cut into record-aligned pieces of about `piece_bytes`, each
    with the number of its first line. A chunk is parsed piece by piece, so parsing memory
    follows the piece size, not the chunk size (a chunk is one transaction: the bigger, the
    fewer two-phase commits)."""
    n = len(data)
    if n <= piece_bytes:
        if n:
            yield data, first_line
        return
    size = -(-n // -(-n // piece_bytes))  # equal pieces, none a small remainder
    start = 0
    while start < n:
        end = data.find(b"\n", start + size - 1) + 1 if n - start > size else n
        if end <= 0:  # no line end after that point
            end = n
        piece = data[start:end]
        yield piece, first_line
        first_line += newlines(piece)
        start = end


def parse_chunk(data: bytes, first_line: int, *, complete: bool = True) -> ParsedChunk:
    """Parse and validate one chunk of whole lines whose first line is number `first_line`."""
    lines = _line_count(data)
    if lines == 0:
        return ParsedChunk(
            pa.table({c: pa.array([], pa.string()) for c in fmt.COLUMNS}), np.zeros(0, np.int64)
        )
    transcoded = 0
    t = None
    if not _odd_quote_lines(data):
        try:
            t = _read_fast(data)  # Arrow checks UTF-8 while converting: no separate pass
        except pa.ArrowInvalid:
            data, transcoded = to_utf8(data)
            if transcoded:
                try:
                    t = _read_fast(data)
                except pa.ArrowInvalid:
                    t = None
    else:
        data, transcoded = to_utf8(data)
    if t is not None and t.num_rows == lines:
        bad = _bad_mask(t, complete)
        line_no = np.arange(first_line, first_line + lines, dtype=np.int64)
        if not pc.any(bad).as_py():
            return ParsedChunk(t, line_no, [], lines, False, transcoded)
        bad_idx = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        arr = np.frombuffer(data, dtype=np.uint8)
        starts = np.concatenate(([0], np.flatnonzero(arr == 10) + 1))
        rejects = []
        really_bad = []
        for i in bad_idx:
            fields = [t.column(c)[int(i)].as_py() for c in fmt.COLUMNS]
            reason = fmt.validate_fields(fields, complete=complete)
            if reason is not None:
                really_bad.append(i)
                rejects.append(Reject(int(line_no[i]), _line_text(data, starts, int(i)), reason))
        keep = np.ones(lines, dtype=bool)
        keep[really_bad] = False
        return ParsedChunk(
            t.filter(pa.array(keep)), line_no[keep], rejects, lines, False, transcoded
        )
    if not transcoded:
        data, transcoded = to_utf8(data)
    return _parse_slow(data, first_line, lines, complete, transcoded)


def _parse_slow(
    data: bytes, first_line: int, lines: int, complete: bool, transcoded: int
) -> ParsedChunk:
    good: list[list[str]] = []
    good_lines: list[int] = []
    rejects: list[Reject] = []
    text = data.decode("utf-8")
    parts = text.split("\n")
    if text.endswith("\n"):
        parts.pop()
    for k, line in enumerate(parts):
        no = first_line + k
        line = line.rstrip("\r")
        if not line:
            rejects.append(Reject(no, line, fmt.R_EMPTY_LINE))
            continue
        if line.count('"') % 2:
            rejects.append(Reject(no, line, fmt.R_QUOTING))
            continue
        fields = next(csv.reader(io.StringIO(line)))
        reason = fmt.validate_fields(fields, complete=complete)
        if reason is None:
            good.append(fields)
            good_lines.append(no)
        else:
            rejects.append(Reject(no, line, reason))
    cols = list(zip(*good)) if good else [()] * fmt.N_FIELDS
    t = pa.table({c: pa.array(list(v), pa.string()) for c, v in zip(fmt.COLUMNS, cols)})
    return ParsedChunk(t, np.array(good_lines, dtype=np.int64), rejects, lines, True, transcoded)


__all__ = ["ParsedChunk", "Reject", "parse_chunk", "pieces", "to_utf8"]
