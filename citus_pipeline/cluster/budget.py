"""Asking within a time budget: `cluster status` answers within :data:`STATUS_BUDGET_S`
whatever the members, the coordinator or the Kubernetes API do (frozen, cut off, stopped).

A call that outlasts its share is left behind in a daemon thread rather than waited for (a
statement on a frozen node, or a request to a frozen API server, can outlast its own timeout),
and the status says what did not answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

STATUS_BUDGET_S = 4.5


@dataclass(frozen=True)
class Asked(Generic[T]):
    answered: bool  # False: still running when the budget ran out
    value: T | None = None
    error: BaseException | None = None


class Pending(Generic[T]):
    """``work()`` started in a daemon thread, to be waited for later within a budget: two
    asks started together share one budget instead of splitting it."""

    def __init__(self, work: Callable[[], T], name: str = "status-ask") -> None:
        self._box: dict[str, object] = {}

        def run() -> None:
            try:
                self._box["value"] = work()
            except Exception as e:  # noqa: BLE001 -- handed to the caller, who decides
                self._box["error"] = e

        self._thread = threading.Thread(target=run, daemon=True, name=name)
        self._thread.start()

    def wait(self, seconds: float) -> Asked[T]:
        self._thread.join(max(0.0, seconds))
        if self._thread.is_alive():
            return Asked(False)
        return Asked(True, self._box.get("value"), self._box.get("error"))  # type: ignore[arg-type]


def ask_within(work: Callable[[], T], seconds: float, name: str = "status-ask") -> Asked[T]:
    """``work()`` run in a daemon thread and waited for at most ``seconds``."""
    return Pending(work, name).wait(seconds)


__all__ = ["STATUS_BUDGET_S", "Asked", "Pending", "ask_within"]
