"""The README is the user's truth: its module tree and its configuration table stay complete."""

from __future__ import annotations

import re
from pathlib import Path

from citus_pipeline import settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _tree() -> str:
    start = README.index("```\ncitus_pipeline/\n")
    return README[start : README.index("```", start + 3)]


def test_the_module_tree_lists_every_module():
    tree = _tree()
    named = set(re.findall(r"[a-z_0-9]+\.py", tree))
    missing = []
    for path in sorted((ROOT / "citus_pipeline").rglob("*.py")):
        if path.name == "__init__.py" or path.parent.name == "bench":
            continue  # packages are named as folders; the benchmarks in one line
        if path.name not in named:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
    for bench in (ROOT / "citus_pipeline" / "bench").glob("*.py"):
        if bench.stem not in ("__init__", "commands"):
            assert bench.stem in tree


def test_the_configuration_table_names_every_setting():
    assert [s.name for s in settings.ALL if f"`{s.name}`" not in README] == []
    old = [name for s in settings.ALL for name in s.deprecated]
    assert [name for name in old if f"`{name}`" not in README] == []
