"""Waiting for something a real process does in its own time: the one polling primitive.

Every wait in the project (a leader elected, a port open, a pod gone, a row replicated) is the
same loop: read, judge, sleep, give up after a deadline. Written once, a timeout always says
what was awaited and the last state seen, so a failed wait reads like a diagnosis instead of a
bare "timed out".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")


def until(
    read: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    what: str = "a condition",
    *,
    done: Callable[[T], bool] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """``read()`` every ``interval`` s until it is done, and return its last value.

    Done means ``done(value)`` where ``done`` is given, else a truthy value. An exception of a
    type in ``ignore`` counts as "not yet" (a server still starting refuses connections). After
    ``timeout`` s this raises :class:`WaitTimeout` naming ``what`` and the last value or error.
    The condition is always checked once more at the deadline, so a zero timeout still reads.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = read()
        except ignore as exc:
            last = exc
        else:
            if done(value) if done is not None else value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


__all__ = ["WaitTimeout", "until"]
