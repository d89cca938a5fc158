"""The up-front check of a file's shape: a file whose first records are not Price Paid records
as published is refused whole.

A header row, a spreadsheet re-save (other quoting, other field count) or another dataset
would otherwise be rejected record by record; refusing it at once names the file and what
is wrong with it, and nothing is loaded.
"""

from __future__ import annotations

import csv

from ..errors import FileShapeError
from . import format as fmt
from .parse import decode_line
from .sources import InputFile, read_first_lines

SNIFF_LINES = 20


def check_file_shape(inp: InputFile) -> None:
    """Raise :class:`FileShapeError` if the first records of ``inp`` are not Price Paid
    records."""
    lines = [ln for ln in read_first_lines(inp, SNIFF_LINES) if ln]
    records = [next(csv.reader([decode_line(ln)])) for ln in lines]
    problem = fmt.sniff_file_shape(records)
    if problem:
        raise FileShapeError(f"{inp.name}: {problem.message}")


__all__ = ["check_file_shape"]
