"""The documentation stays true to the code: the README's configuration table and length, the
module tree of docs/architecture.md (every module by its full path, nothing that is not there),
a section of docs/benchmarks.md per `citus-pipeline bench` command, and every relative link.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer
import typer.main

from citus_pipeline import settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "citus_pipeline"
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
README_MAX_LINES = 300  # the user's first ten minutes; the rest belongs in docs/

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.DOTALL | re.MULTILINE)


def module_tree(text: str) -> list[str]:
    """The paths the tree under `## Modules` names, each made whole from its indentation.

    Every non-blank line of the tree names one module (``name.py``) or folder (``name/``) as
    its first word, indented under its folder; anything else is an error, so a wrapped
    description cannot pass for a module.
    """
    start = text.index("\n## Modules\n")
    opening = text.index("```\ncitus_pipeline/\n", start) + len("```\n")
    block = text[opening : text.index("\n```", opening)]
    paths: list[str] = []
    folders: list[tuple[int, str]] = []  # (indent, path) of the folders above this line
    for n, line in enumerate(block.splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        assert name.endswith((".py", "/")), f"tree line {n} names no module or folder: {line!r}"
        while folders and folders[-1][0] >= indent:
            folders.pop()
        assert folders or not paths, f"tree line {n} is outside citus_pipeline/: {line!r}"
        assert indent == (folders[-1][0] + 2 if folders else 0), f"tree line {n} is misaligned"
        path = (folders[-1][1] if folders else "") + name
        paths.append(path)
        if name.endswith("/"):
            folders.append((indent, path))
    return paths


def test_the_tree_reader_builds_full_paths():
    text = "x\n## Modules\n```\ncitus_pipeline/\n  a.py  one\n  b/  two\n    c.py  three\n  d.py\n```\n"
    assert module_tree(text) == [
        "citus_pipeline/",
        "citus_pipeline/a.py",
        "citus_pipeline/b/",
        "citus_pipeline/b/c.py",
        "citus_pipeline/d.py",
    ]


def test_the_module_tree_names_every_module():
    named = set(module_tree(ARCHITECTURE.read_text()))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        folder = path.parent.relative_to(ROOT).as_posix() + "/"
        if path.name == "__init__.py" and folder in named:
            continue  # a package is named by its folder
        if rel not in named:
            missing.append(rel)
    assert missing == []


def test_the_module_tree_names_nothing_that_is_not_there():
    paths = module_tree(ARCHITECTURE.read_text())
    ghosts = [
        p for p in paths if not ((ROOT / p).is_dir() if p.endswith("/") else (ROOT / p).is_file())
    ]
    assert ghosts == []
    assert sorted(p for p in set(paths) if paths.count(p) > 1) == []


def bench_commands() -> list[str]:
    """The commands registered under `citus-pipeline bench` (the CLI a module or a package)."""
    from citus_pipeline import cli

    app = getattr(cli, "app", None)
    if not isinstance(app, typer.Typer):
        app = next(v for v in vars(cli).values() if isinstance(v, typer.Typer))
    group = typer.main.get_command(app)
    return sorted(group.commands["bench"].commands)  # type: ignore[attr-defined]


def sections(text: str) -> dict[str, str]:
    """Each `## ` heading of a markdown text (not one inside a code block) with what is under
    it, code blocks included."""
    out: dict[str, str] = {}
    heading, in_code = None, False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("## ") and not in_code:
            heading = line[3:].strip()
            out[heading] = ""
        elif heading is not None:
            out[heading] += line + "\n"
    return out


def test_every_bench_command_has_its_own_section():
    commands = bench_commands()
    assert commands, "no command registered under `citus-pipeline bench`"
    found = sections(BENCHMARKS.read_text())

    def names(heading: str) -> list[str]:
        return [c for c in commands if re.search(rf"\bbench {re.escape(c)}(?![\w-])", heading)]

    owners = {c: [h for h in found if c in names(h)] for c in commands}
    assert {c: hs for c, hs in owners.items() if len(hs) != 1} == {}
    assert [h for h in found if len(names(h)) > 1] == []
    without_command = [
        c for c, (h,) in owners.items() if f"citus-pipeline bench {c}" not in found[h]
    ]
    assert without_command == []


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_the_configuration_table_names_every_setting():
    text = README.read_text()
    assert [s.name for s in settings.ALL if f"`{s.name}`" not in text] == []
    old = [name for s in settings.ALL for name in s.deprecated]
    assert [name for name in old if f"`{name}`" not in text] == []


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it (punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def test_every_relative_link_resolves():
    pages = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
