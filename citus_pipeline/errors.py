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


__all__ = ["ClusterError", "UserError"]
