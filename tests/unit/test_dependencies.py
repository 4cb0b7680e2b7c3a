"""Declared dependencies are exactly those the code imports: nothing declared and
unused (``aiofiles`` once was), nothing imported and left to arrive by chance
(``trio`` once was)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: project -> (its pyproject.toml, its source tree)
PROJECTS = {
    "datamover": (ROOT / "pyproject.toml", ROOT / "datamover"),
    "datamover-fuse": (ROOT / "fuse" / "pyproject.toml", ROOT / "fuse" / "datamover_fuse"),
}
FIRST_PARTY = {"datamover", "datamover_fuse"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    names = {_norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in reqs}
    return names - {_norm(p) for p in PROJECTS}


def _imported_modules(tree: Path) -> set[str]:
    found: set[str] = set()
    for path in tree.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # ``from google.cloud import storage``: the module may be the name.
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] not in sys.stdlib_module_names | FIRST_PARTY}


@cache
def _file_owners() -> dict[str, str]:
    """Installed file (relative to site-packages) -> the distribution that owns it."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            owners[str(file)] = _norm(dist.metadata["Name"])
    return owners


def _distribution(module: str) -> str:
    """The distribution that provides ``module`` (namespace packages such as
    ``google`` and ``azure`` are resolved by the file that defines the module)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:n]))
        except ImportError:  # "a.b.Name" where a.b is a plain module
            continue
        if spec is None or spec.origin in (None, "namespace"):
            continue
        origin = Path(spec.origin)
        for base in map(Path, sys.path):
            try:
                rel = origin.relative_to(base)
            except ValueError:
                continue
            owner = _file_owners().get(str(rel))
            if owner:
                return owner
    raise AssertionError(f"no installed distribution provides {module}")


def test_declared_dependencies_are_exactly_the_imported_ones() -> None:
    problems = []
    for project, (pyproject, tree) in PROJECTS.items():
        declared = _declared(pyproject)
        used = {_distribution(m) for m in _imported_modules(tree)}
        if used - declared:
            problems.append(f"{project} imports but does not declare {sorted(used - declared)}")
        if declared - used:
            problems.append(f"{project} declares but never imports {sorted(declared - used)}")
    assert not problems, "; ".join(problems)
