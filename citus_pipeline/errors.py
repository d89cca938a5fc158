"""Every error a user can cause or act on, each defined here once.

Each such error says in one line what went wrong and where (a spec field, a file and line, an
address and port, a member), and, when a log says more, its path. The command line catches
the root, :class:`UserError`, in one place (`citus_pipeline.cli.terminal.run`) and prints that
line; everything else is a bug and keeps its traceback.

An error that names a passing state (a leader change under way) also derives from
:class:`Transient`: `citus_pipeline.cluster.failover.is_transient` retries it by that class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class UserError(Exception):
    """A failure a user can act on; ``log`` points at the file that says more."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} (log: {self.log})" if self.log else msg


class Transient(Exception):
    """Mixed into an error that a retry of the same idempotent work can get past: what it
    names (a group's leader not answering mid leader change) passes within seconds."""


# ---- the spec and the source files ----------------------------------------------------------


class SpecError(UserError):
    """An invalid cluster spec; the message names the file, the field and the reason."""


class SourceError(UserError):
    """A source that cannot be read; the message says which and why, in one line."""


class FileShapeError(SourceError):
    """A file refused up front: its first records are not Price Paid records as published
    (a header row, a spreadsheet re-save, another dataset)."""


# ---- the cluster ----------------------------------------------------------------------------


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


class KubernetesClusterError(ClusterError):
    """Something in the Kubernetes cluster is not as the command needs it (one line)."""


class DrainError(ClusterError):
    """citus_drain_node failed or left placements behind; the group must not be removed."""


class BackupError(ClusterError):
    """A backup, restore point or restore that cannot be done; the message names the group."""


class GroupUnreachable(BackupError, Transient):
    """A group's leader did not answer (a leader change under way): worth another attempt."""


class RebalanceFailed(UserError):
    """The background rebalance job failed or outlived its wait; the message is Citus's own."""


class FailoverRetriesExhausted(UserError):
    """Idempotent work kept hitting failover errors past the retry budget."""


# ---- the drills and the benchmarks ----------------------------------------------------------


class _Injector(Protocol):
    """What the refusal needs of a fault injector (`citus_pipeline.drills.injector`), which
    this bottom layer cannot import: the name of its backend."""

    backend_name: str


class FaultNotSupported(ClusterError):
    """This backend's injector cannot give that fault (a scenario to skip, not a failure)."""

    def __init__(self, injector: _Injector, fault: str) -> None:
        super().__init__(f"the {injector.backend_name} fault injector cannot give '{fault}'")
        self.fault = fault


class ImageBuildError(UserError):
    """An image could not be built (a tool missing, a step of its Dockerfile failed)."""


class SandboxError(UserError):
    """The Kubernetes sandbox could not start, stop or answer (which part, and its log)."""


class CommandFailed(UserError):
    """A peer tool the benchmark runs (psql, pgloader, the loader's child) did not finish."""


__all__ = [
    "BackupError",
    "ClusterError",
    "CommandFailed",
    "DrainError",
    "FailoverRetriesExhausted",
    "FaultNotSupported",
    "FileShapeError",
    "GroupUnreachable",
    "ImageBuildError",
    "KubernetesClusterError",
    "RebalanceFailed",
    "SandboxError",
    "SourceError",
    "SpecError",
    "Transient",
    "UserError",
    "WaitTimeout",
]
