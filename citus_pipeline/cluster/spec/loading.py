"""A spec from YAML or a mapping, validated; an invalid one is refused with one line naming the
file, the field and the reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ... import settings
from ...errors import SpecError
from ...settings import DEFAULT_SPEC_PATH
from .model import ClusterSpec


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def spec_from_mapping(data: Any, source: str = "<spec>") -> ClusterSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping, got {type(data).__name__}")
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(source, err)) from None


def load_spec(path: str | os.PathLike[str] | None = None) -> ClusterSpec:
    """Load and validate a spec: explicit path, else $CITUS_PIPELINE_SPEC, else cluster.yaml."""
    from_env = settings.SPEC.get()
    p = Path(path or from_env or DEFAULT_SPEC_PATH)
    if not p.exists():
        if path is None and not from_env and p == DEFAULT_SPEC_PATH:
            return ClusterSpec()
        raise SpecError(f"{p}: spec file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{p}:{where}: invalid YAML: {problem}") from None
    return spec_from_mapping(data, str(p))


__all__ = ["load_spec", "spec_from_mapping"]
