"""The import boundaries of docs/ARCHITECTURE.md, checked over the source's AST.

Arrows point one way: faces (CLI, mount, library API) -> the front door
(``datamover.job``) -> the engine (with the journal and manifests) -> the stores, and
everything may use the small shared vocabulary (errors, options, checksums, ...).
This test fails when an import points the wrong way, when modules import each other
in a cycle, when an import hides inside a function to dodge one, or when code outside
``datamover/stores`` asks which backend it holds.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"datamover": ROOT / "datamover", "datamover_fuse": ROOT / "fuse" / "datamover_fuse"}

VOCABULARY = (
    "datamover._version",
    "datamover.errors",
    "datamover.checksums",
    "datamover.redact",
    "datamover.options",
    "datamover.retry",
    "datamover.config",
    "datamover.posixmeta",
    "datamover.ownfiles",
    "datamover.gcpolicy",
)
STORES = ("datamover.stores",)
ENGINE = ("datamover.engine", "datamover.journal", "datamover.manifest", "datamover.filters")
FRONT_DOOR = ("datamover.job", "datamover.reporting")
FACES = ("datamover.cli", "datamover.api", "datamover.fileio", "datamover_fuse")
#: Concrete backends: only the registry (inside datamover.stores) names them.
BACKENDS = tuple(f"datamover.stores.{b}" for b in ("posix", "s3", "azure", "gcs", "fsspec"))

#: (modules, what they must not import, why)
RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (VOCABULARY, STORES + ENGINE + FRONT_DOOR + FACES, "the vocabulary imports no layer"),
    (STORES, ENGINE + FRONT_DOOR + FACES, "a store imports nothing above it"),
    (ENGINE, FRONT_DOOR + FACES, "the engine never imports the front door or a face"),
    (FRONT_DOOR, FACES, "the front door never imports a face"),
    (FACES, ("datamover.engine",), "a face reaches the engine only through datamover.job"),
)


def _in(module: str, groups: tuple[str, ...]) -> bool:
    return any(module == g or module.startswith(g + ".") for g in groups)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    line: int
    runtime: bool  # False inside ``if TYPE_CHECKING:``
    in_function: bool
    marked: bool  # a "# optional:" or "# deferred:" comment says why it is deferred


def _modules() -> Iterator[tuple[str, Path]]:
    for package, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [package, *rel.parts]
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


MODULES = dict(_modules())


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join([*here, base] if base else here)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


class _Collector:
    """Imports of one module, noting ``TYPE_CHECKING`` blocks and function bodies."""

    def __init__(self, module: str, path: Path) -> None:
        self.module = module
        self.is_package = path.name == "__init__.py"
        text = path.read_text(encoding="utf-8")
        self.lines = text.splitlines()
        self.found: list[Import] = []
        self.visit(ast.parse(text), runtime=True, in_function=False)

    def visit(self, node: ast.AST, *, runtime: bool, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    self.visit_one(sub, runtime=False, in_function=in_function)
                for sub in child.orelse:
                    self.visit_one(sub, runtime=runtime, in_function=in_function)
            else:
                self.visit_one(child, runtime=runtime, in_function=in_function)

    def _marked(self, lineno: int) -> bool:
        """A ``# optional:``/``# deferred:`` comment heads the run of comment and
        import lines this import stands in."""
        for line in reversed(self.lines[: lineno - 1]):
            text = line.strip()
            if text.startswith(("# optional:", "# deferred:")):
                return True
            if not text.startswith(("#", "import ", "from ")):
                return False
        return False

    def visit_one(self, node: ast.AST, *, runtime: bool, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            marked = self._marked(node.lineno)
            for target in _resolve(self.module, node, self.is_package):
                if target.split(".")[0] in PACKAGES:
                    self.found.append(
                        Import(self.module, target, node.lineno, runtime, in_function, marked)
                    )
            return
        fn = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        self.visit(node, runtime=runtime, in_function=in_function or fn)


def _imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        yield from _Collector(module, path).found


IMPORTS = list(_imports())


def test_layers_point_one_way() -> None:
    wrong = []
    for imp in IMPORTS:
        if imp.source == "datamover":  # the package root re-exports the public API
            continue
        for sources, forbidden, why in RULES:
            if _in(imp.source, sources) and _in(imp.target, forbidden):
                wrong.append(f"{imp.source}:{imp.line} imports {imp.target} ({why})")
    assert not wrong, "\n".join(wrong)


def test_backends_are_named_only_by_the_registry() -> None:
    wrong = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in IMPORTS
        if _in(imp.target, BACKENDS) and not _in(imp.source, STORES)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.runtime and not imp.in_function and imp.target in graph:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_imports_hidden_in_functions() -> None:
    """A first-party import inside a function hides a dependency (and usually dodges a
    cycle). Deferring an optional package, or one that costs start-up time only some
    commands need, is allowed when a ``# optional:`` / ``# deferred:`` comment says so."""
    hidden = [
        f"{imp.source}:{imp.line} imports {imp.target} inside a function"
        for imp in IMPORTS
        if imp.in_function and not imp.marked
    ]
    assert not hidden, "\n".join(hidden)


class _SchemeQuestions(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[int] = []

    def visit_Compare(self, node: ast.Compare) -> None:
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.Attribute) and side.attr == "scheme":
                self.found.append(node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "type"):
            for arg in node.args[1:]:
                names = [n.id for n in ast.walk(arg) if isinstance(n, ast.Name)]
                if any(n.endswith("Store") and n != "Store" for n in names):
                    self.found.append(node.lineno)
        self.generic_visit(node)


def test_only_stores_ask_which_backend_they_hold() -> None:
    """Outside ``datamover/stores`` behaviour branches on ``store.features`` and store
    methods, never on ``scheme`` or a store's class."""
    asked = []
    for module, path in MODULES.items():
        if _in(module, STORES):
            continue
        visitor = _SchemeQuestions()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        asked += [f"{module}:{line}" for line in visitor.found]
    assert not asked, "asks which backend it holds: " + ", ".join(asked)
