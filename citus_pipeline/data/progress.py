"""What long data operations (load, publish, monthly apply) report while they run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class ProgressEvent:
    done_rows: int
    total_bytes: int | None
    done_bytes: int
    message: str
    rows_loaded: int = 0
    rows_rejected: int = 0


Progress = Callable[[ProgressEvent], None]

__all__ = ["Progress", "ProgressEvent"]
