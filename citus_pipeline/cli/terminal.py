"""What every command of the CLI shares: the consoles, the one error line, progress bars, --spec.

Every failure a user can cause derives from :class:`~citus_pipeline.errors.UserError`. Commands
do their work inside :func:`user_errors` (or :func:`run`), the one place the CLI catches that
root, so each such failure ends in one line on stderr (``error: ...``) and exit status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..errors import UserError

T = TypeVar("T")

# Not a terminal (CI, pipes): wide enough that host:port and roles are never cut.
out = Console(width=None if Console().is_terminal else 160)
err = Console(stderr=True)

SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec", help="cluster spec YAML (default: $CITUS_PIPELINE_SPEC, else cluster.yaml)"
    ),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="kubeconfig context (default: current)")
]


def one_line(e: Exception | str) -> str:
    """The message on one line: multi-line texts (a server's, a library's) joined with '; '."""
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def fail(e: Exception | str) -> NoReturn:
    """Print ``error: <one line>`` on stderr and exit with status 1."""
    # escape: a message may quote user text that looks like rich markup ("[bold]")
    err.print(f"[bold red]error:[/] {escape(one_line(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _kubernetes_api_reason(e: Exception) -> str | None:
    """One line for the Kubernetes client's ApiException, None for any other exception."""
    # Only a process that imported the client can hold its exception; looking it up here
    # keeps the client (slow to import) out of every command that never talks to Kubernetes.
    exceptions = sys.modules.get("kubernetes.client.exceptions")
    if exceptions is None or not isinstance(e, exceptions.ApiException):
        return None
    line = f"Kubernetes API: {e.reason or 'error'}" + (f" ({e.status})" if e.status else "")
    try:
        message = json.loads(e.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{line}: {message}" if message else line


@contextlib.contextmanager
def user_errors(what: str | None = None) -> Iterator[None]:
    """Turn a UserError (or a Kubernetes API error) raised inside into :func:`fail`.

    ``what`` prefixes the line (``apply to namespace citus: ...``).
    """
    prefix = f"{what}: " if what else ""
    try:
        yield
    except UserError as e:
        fail(f"{prefix}{e}")
    except Exception as e:
        reason = _kubernetes_api_reason(e)
        if reason is None:
            raise
        fail(f"{prefix}{reason}")


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` inside :func:`user_errors`."""
    with user_errors():
        return fn(*args, **kwargs)


@contextlib.contextmanager
def step_bar(first: str = "starting") -> Iterator[Callable[[str, int, int], None]]:
    """A transient bar on stderr, fed by a cluster backend's ``(message, done, total)`` reports."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as p:
        task = p.add_task(first, total=1)

        def report(message: str, done: int, total: int) -> None:
            p.update(task, description=message, completed=done, total=total)

        yield report


@contextlib.contextmanager
def transfer_bar(first: str = "load") -> Iterator[Callable[[int, int | None, str], None]]:
    """A bar on stderr for bytes moved: percent, speed, elapsed and remaining time.

    Yields ``update(done_bytes, total_bytes, description)``; ``total_bytes`` None while unknown.
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as p:
        task = p.add_task(first, total=None)

        def update(done_bytes: int, total_bytes: int | None, description: str) -> None:
            p.update(task, total=total_bytes, completed=done_bytes, description=description)

        yield update


__all__ = [
    "ContextOpt",
    "SpecOpt",
    "err",
    "fail",
    "one_line",
    "out",
    "run",
    "step_bar",
    "transfer_bar",
    "user_errors",
]
