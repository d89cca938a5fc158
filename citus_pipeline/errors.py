"""The one root of every error a user can cause or act on.

Each such error says in one line what went wrong and where (a spec field, a file and line, an
address and port, a member), and, when a log says more, its path. The command line catches
this root in one place (`citus_pipeline.terminal.run`) and prints that line; everything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A failure a user can act on; ``log`` points at the file that says more."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} (log: {self.log})" if self.log else msg


class ClusterError(UserError):
    """A cluster backend could not do what was asked (start, stop, change a leader, scale)."""


class WaitTimeout(ClusterError):
    """A wait ran out of time (``citus_pipeline.waiting.until``): what was awaited, for how
    long, and the last state seen (a value, or the error a read raised)."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        shown = repr(last)
        if len(shown) > 300:  # a whole topology or catalog dump would drown the line
            shown = shown[:297] + "..."
        super().__init__(f"timed out after {timeout:g} s waiting for {what}; last seen: {shown}")
        self.what, self.timeout, self.last = what, timeout, last


__all__ = ["ClusterError", "UserError", "WaitTimeout"]
