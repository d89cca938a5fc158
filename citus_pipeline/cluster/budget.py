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


def ask_within(work: Callable[[], T], seconds: float, name: str = "status-ask") -> Asked[T]:
    """``work()`` run in a daemon thread and waited for at most ``seconds``."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except Exception as e:  # noqa: BLE001 -- handed to the caller, who decides
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        return Asked(False)
    return Asked(True, box.get("value"), box.get("error"))  # type: ignore[arg-type]


__all__ = ["STATUS_BUDGET_S", "Asked", "ask_within"]
