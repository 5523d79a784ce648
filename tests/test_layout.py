"""The shape of the house, read from the source with ast: imports between our packages run one
way (app -> worker -> db -> core), no module of ours imports itself back through others (module
level and inside functions alike), no name meant to be private crosses a file, and no source file
outside tests and migrations grows past 400 lines.

Each rule is also tried on a small made-up tree, so a checker that silently saw nothing would fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "db", "worker", "app")  # lowest first: a package may import only those before it
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module of ours, dotted
    name: str | None  # the name taken from it, when `from target import name` names a non-module
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.relative_to(root).parts:
                continue
            files[module_name(root, path)] = path
    return files


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: set[str]) -> list[Import]:
    """Every import of one of our modules in `path`, wherever it sits in the file. A name is
    private-checked when it is taken from another module of ours, or read as an attribute of one
    (``service._execute``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    aliases: dict[str, str] = {}  # local name -> our module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    found.append(Import(module, alias.name, None, node.lineno))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                target = _resolve_relative(module, is_package, node.level, node.module)
            if not target or target.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:
                    found.append(Import(module, submodule, None, node.lineno))
                    aliases[alias.asname or alias.name] = submodule
                else:
                    found.append(Import(module, target, alias.name, node.lineno))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(Import(module, aliases[node.value.id], node.attr, node.lineno))
    return found


def graph(root: Path) -> tuple[dict[str, Path], list[Import]]:
    files = source_files(root)
    modules = set(files)
    edges = []
    for module, path in files.items():
        for imp in imports_of(module, path, modules):
            target = imp.target
            while target not in modules and "." in target:  # `import core.x.y` of an attribute
                target = target.rsplit(".", 1)[0]
            edges.append(Import(imp.source, target, imp.name, imp.line))
    return files, edges


def upward(edges: list[Import]) -> list[str]:
    rank = {package: i for i, package in enumerate(PACKAGES)}
    return [
        f"{e.source}:{e.line} imports {e.target} ({e.source.split('.')[0]} may not import "
        f"{e.target.split('.')[0]})"
        for e in edges
        if rank[e.target.split(".")[0]] > rank[e.source.split(".")[0]]
    ]


def private(edges: list[Import]) -> list[str]:
    return [
        f"{e.source}:{e.line} uses {e.target}.{e.name}"
        for e in edges
        if e.name and e.name.startswith("_") and not e.name.startswith("__") and e.target != e.source
    ]


def package_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(files: dict[str, Path], edges: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan). A package's
    ``__init__`` importing its own submodules is how a package re-exports, so an edge from a
    package to a module inside it, and from a module up to a package that holds it, is not a
    circle on its own."""
    succ: dict[str, set[str]] = {m: set() for m in files}
    for e in edges:
        if e.target == e.source:
            continue
        if e.target in package_parents(e.source) or e.source in package_parents(e.target):
            continue
        succ[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def long_files(root: Path, files: dict[str, Path]) -> list[str]:
    return [
        f"{path.relative_to(root)}: {n} lines"
        for path in files.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]


# --- the rules on this repository ------------------------------------------------------------


@pytest.fixture(scope="module")
def ours():
    return graph(ROOT)


def test_our_modules_are_found(ours):
    files, edges = ours
    assert {"core", "db", "worker", "app"} <= {m.split(".")[0] for m in files}
    assert len(edges) > 100  # the checker reads real imports, not nothing


def test_imports_never_run_upward(ours):
    assert upward(ours[1]) == []


def test_no_import_circles(ours):
    assert cycles(*ours) == []


def test_no_private_name_crosses_a_module(ours):
    assert private(ours[1]) == []


def test_no_source_file_over_400_lines(ours):
    assert long_files(ROOT, ours[0]) == []


# --- the checker on a made-up tree: each rule sees what it must --------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for package in PACKAGES:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path):
    write_tree(tmp_path, {"core/a.py": "def f():\n    from worker import b\n", "worker/b.py": ""})
    _, edges = graph(tmp_path)
    assert upward(edges) == ["core.a:2 imports worker.b (core may not import worker)"]


def test_the_checker_sees_a_circle_closed_by_a_deferred_import(tmp_path):
    write_tree(
        tmp_path,
        {
            "worker/a.py": "from worker.b import g\n",
            "worker/b.py": "def g():\n    from worker import c\n",
            "worker/c.py": "import worker.a\n",
            "worker/d.py": "from worker.a import g\n",
        },
    )
    assert cycles(*graph(tmp_path)) == [["worker.a", "worker.b", "worker.c"]]


def test_a_package_reexporting_its_modules_is_no_circle(tmp_path):
    write_tree(
        tmp_path,
        {"core/vocab/__init__.py": "from core.vocab.curve import f\n", "core/vocab/curve.py": "from core.vocab import g\n"},
    )
    assert cycles(*graph(tmp_path)) == []


def test_the_checker_sees_private_names_taken_or_read(tmp_path):
    write_tree(
        tmp_path,
        {
            "worker/a.py": "def _x(): pass\n",
            "worker/b.py": "from worker.a import _x\n",
            "app/c.py": "from worker import a\n\na._x()\n",
            "app/d.py": "from . import e\n",
            "app/e.py": "",
        },
    )
    assert sorted(private(graph(tmp_path)[1])) == ["app.c:3 uses worker.a._x", "worker.b:1 uses worker.a._x"]


def test_the_checker_counts_lines(tmp_path):
    write_tree(tmp_path, {"core/big.py": "x = 1\n" * 401, "core/fine.py": "x = 1\n" * 400})
    assert long_files(tmp_path, graph(tmp_path)[0]) == ["core/big.py: 401 lines"]
