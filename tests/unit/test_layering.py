"""The package's import graph: no cycles, and no import running back up the layers.

Layers, bottom up: errors/settings/waiting/pki -> cluster -> images/sandbox (the images users
deploy, the Kubernetes sandbox) -> data -> defs (with definitions.py) -> pipeline (the main job
from nothing) -> drills -> bench -> cli. A layer imports only the
layers below it. The cluster layer knows nothing of the data path or Dagster, the data path
nothing of Dagster; the benchmarks measure cluster/ and data/ code, never defs/ (`bench seed`
runs the whole job through pipeline/, as `pipeline run` does). Only cli/ knows the command
line: nothing below it imports typer (or click beneath it) or any module of cli/.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "citus_pipeline"

# Bottom up; a package that does not exist yet (drills/ while it is being written) holds no
# module, so its rule simply applies from the day it does.
LAYERS = [
    (
        "citus_pipeline.errors",
        "citus_pipeline.settings",
        "citus_pipeline.waiting",
        "citus_pipeline.pki",
    ),
    ("citus_pipeline.cluster",),
    ("citus_pipeline.images", "citus_pipeline.sandbox"),
    ("citus_pipeline.data",),
    ("citus_pipeline.defs", "citus_pipeline.definitions"),
    ("citus_pipeline.pipeline",),
    ("citus_pipeline.drills",),
    ("citus_pipeline.bench",),
    ("citus_pipeline.cli",),
]

# Beyond the layer order: (importing module prefix, module prefixes it must not import)
FORBIDDEN = [
    ("citus_pipeline.errors", ("citus_pipeline",)),
    ("citus_pipeline.settings", ("citus_pipeline",)),
    ("citus_pipeline.bench", ("citus_pipeline.defs", "citus_pipeline.definitions")),
]

# Everything below cli/: never the command line's framework, nor the CLI's own modules.
NO_CLI = [prefix for layer in LAYERS[:-1] for prefix in layer]
CLI_MODULES = ("typer", "click", "citus_pipeline.cli")


def _under(name: str, prefixes) -> bool:
    """``name`` is one of ``prefixes`` or inside one (``defs`` holds ``defs.x``, not
    ``definitions``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(name: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if _under(name, layer)), None)


def _sources() -> dict[str, tuple[str, bool]]:
    """Every module of the package: name -> (source, is a package's __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if init else parts)] = (path.read_text(), init)
    return out


def _imported(name: str, source: str, init: bool) -> list[tuple[str, list[str]]]:
    """Each import of ``source`` (anywhere in the file) as (module, names taken from it), a
    relative one resolved against ``name``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = name.split(".") if init else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            found.append((target, [a.name for a in node.names]))
    return found


def _graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    graph = {}
    for name, (source, init) in sources.items():
        deps: set[str] = set()
        for target, names in _imported(name, source, init):
            subs = {f"{target}.{n}" for n in names} & sources.keys()
            if subs and len(subs) == len(names):
                deps |= subs  # `from . import schema`: the submodule, not its package
            elif target in sources:
                deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, or of a module FORBIDDEN beyond that."""
    wrong = []
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            mine, theirs = _layer(m), _layer(d)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{m} imports {d} (a higher layer)")
            elif any(
                _under(m, [prefix]) and _under(d, banned) and not _under(d, [prefix])
                for prefix, banned in FORBIDDEN
            ):
                wrong.append(f"{m} imports {d}")
    return wrong


def _cli_below(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every module below cli/ that imports typer, click or a module of cli/."""
    wrong = []
    for name, (source, init) in sorted(sources.items()):
        if not _under(name, NO_CLI):
            continue
        for target, names in _imported(name, source, init):
            # the module itself, or a submodule taken from it (`from citus_pipeline import cli`)
            hits = [
                m for m in (target, *(f"{target}.{n}" for n in names)) if _under(m, CLI_MODULES)
            ]
            if hits:
                wrong.append(f"{name} imports {hits[0]}")
    return wrong


def test_the_package_has_no_import_cycle():
    assert _cycle(_graph(_sources())) is None


def test_every_module_has_a_layer():
    assert [m for m in _sources() if m != "citus_pipeline" and _layer(m) is None] == []


def test_no_import_runs_back_up_the_layers():
    assert _upward(_graph(_sources())) == []


def test_only_the_cli_knows_the_command_line():
    assert _cli_below(_sources()) == []


# ---- the checker itself can fail -----------------------------------------------------------
def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_checker_finds_an_import_up_the_layers():
    graph = {
        "citus_pipeline.data.load": {"citus_pipeline.defs.citus.assets"},
        "citus_pipeline.bench.seed": {"citus_pipeline.definitions", "citus_pipeline.pipeline.run"},
        "citus_pipeline.defs.citus.assets": {"citus_pipeline.data.load"},
        "citus_pipeline.errors": {"citus_pipeline.settings"},
    }
    assert _upward(graph) == [
        "citus_pipeline.bench.seed imports citus_pipeline.definitions",
        "citus_pipeline.data.load imports citus_pipeline.defs.citus.assets (a higher layer)",
        "citus_pipeline.errors imports citus_pipeline.settings",
    ]


def test_the_checker_finds_the_command_line_below_the_cli():
    sources = {
        "citus_pipeline.cluster.spec": ("import typer\n", False),
        "citus_pipeline.data": ("from ..cli.terminal import fail\n", True),
        "citus_pipeline.drills.local": ("def f():\n    from click import echo\n", False),
        "citus_pipeline.bench.seed": ("from .. import cli, settings\n", False),
        "citus_pipeline.pipeline.run": ("from ..cli import terminal\n", False),
        "citus_pipeline.defs.citus.assets": ("import dagster as dg\n", False),
        "citus_pipeline.cli.data": ("import typer\nfrom .terminal import fail\n", False),
    }
    assert _cli_below(sources) == [
        "citus_pipeline.bench.seed imports citus_pipeline.cli",
        "citus_pipeline.cluster.spec imports typer",
        "citus_pipeline.data imports citus_pipeline.cli.terminal",
        "citus_pipeline.drills.local imports click",
        "citus_pipeline.pipeline.run imports citus_pipeline.cli",
    ]
