"""What every part of the spec is built from: a strict, frozen model and the field types.

Strict: a misspelt key is refused (naming the field) instead of silently taking the default;
frozen: a spec once validated is the one every component sees.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Port = Annotated[int, Field(ge=1, le=65535)]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["Identifier", "Port", "StrictModel"]
