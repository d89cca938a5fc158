"""Waiting in tests for something a real process does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float, every: float = 1.0
) -> T:
    """``read()`` again every ``every`` s until ``done`` holds for its value; after ``timeout``
    s the test fails with the last value read."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout:.0f}s: {value}")
        time.sleep(every)
        value = read()
    return value
