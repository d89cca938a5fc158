"""How a long backend operation says how far it is: the callback a progress bar gives."""

from __future__ import annotations

from collections.abc import Callable

# (message, done, total)
Progress = Callable[[str, int, int], None]

__all__ = ["Progress"]
