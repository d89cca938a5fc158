"""The up-front layout check: a file that is not in the published layout is refused whole.

A header row, a spreadsheet re-save (other quoting, other field count) or another dataset
would otherwise be rejected record by record; refusing it at once names the file and what
is wrong with it, and nothing is loaded.
"""

from __future__ import annotations

import csv

from . import format as fmt
from .parse import decode_line
from .sources import InputFile, SourceError, read_first_lines

SNIFF_LINES = 20


class LayoutError(SourceError):
    """A file refused up front because it is not in the published layout."""


def check_layout(inp: InputFile) -> None:
    """Raise :class:`LayoutError` if the first records of ``inp`` are not Price Paid records."""
    lines = [ln for ln in read_first_lines(inp, SNIFF_LINES) if ln]
    records = [next(csv.reader([decode_line(ln)])) for ln in lines]
    problem = fmt.sniff_layout(records)
    if problem:
        raise LayoutError(f"{inp.name}: {problem.message}")


__all__ = ["LayoutError", "check_layout"]
