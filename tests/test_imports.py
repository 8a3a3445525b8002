"""The house rules of docs/architecture.md about imports, read from the source with ``ast``.

- No import cycle among ``sidecar`` modules. Imports inside functions count like module-level ones: a
  lazy import hides a cycle from the interpreter but not from the reader, and moving it to the top
  would bring the cycle back. Imports under ``if TYPE_CHECKING:`` do not count (they never run).
  ``from sidecar.pkg import name`` depends on ``sidecar.pkg.name`` when that is a module, else on the
  package's ``__init__``; the parent packages a dotted import initialises are not counted as edges.
- Imports go downhill through the layers of ``LAYERS`` (lowest first): a module of a layer imports
  nothing of a higher layer nor of ``UPPER`` (the faces and the process-wide parts: api, cli,
  scheduler, metrics, alerts, aiohttp), directly or through modules outside the layers (config, logs,
  jobs, ...). ``sidecar.archive``, ``sidecar.codec``, ``sidecar.engine`` and ``sidecar.store`` are the
  lowest two.
- No ``_private`` name is imported from another sidecar module, nor read as ``module._private``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import sidecar

PACKAGE = Path(sidecar.__file__).parent
LAYERS: tuple[tuple[str, ...], ...] = (  # lowest first
    ("sidecar.archive", "sidecar.codec"),  # bytes and their formats
    ("sidecar.engine", "sidecar.store"),  # moving data; where bytes live
    ("sidecar.pitr",),  # the oplog archive
    ("sidecar.integrity",),  # the proofs (the pitr level reads the oplog archive)
    ("sidecar.service",),  # the one place a job runs
)
UPPER = (
    "sidecar.api",
    "sidecar.cli",
    "sidecar.scheduler",
    "sidecar.metrics",
    "sidecar.metrics_http",
    "sidecar.alerts",
    "aiohttp",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                yield child
                yield from runtime_nodes(child)
            continue
        yield node
        yield from runtime_nodes(node)


def resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> Iterator[tuple[str, str | None, ast.alias]]:
    """(imported module, imported name or None, alias) for each runtime import in ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, alias
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, None, alias
                else:
                    yield source, alias.name, alias


def graph() -> dict[str, set[str]]:
    return {
        module: {target for target, _, _ in imports(module) if target in MODULES and target != module}
        for module in MODULES
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan + BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while (member := stack.pop()) != node:
                group.add(member)
            groups.append(group | {node})

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [shortest_cycle(edges, group) for group in groups if len(group) > 1]


def shortest_cycle(edges: dict[str, set[str]], group: set[str]) -> list[str]:
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(edges[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                frontier.append(nxt)
    raise AssertionError(f"no cycle in {group}")


def rank(name: str) -> int | None:
    """The index of ``name``'s layer in LAYERS; len(LAYERS) for UPPER; None outside both."""
    for number, layer in enumerate(LAYERS):
        if within(name, layer):
            return number
    return len(LAYERS) if within(name, UPPER) else None


def layer_violations() -> list[str]:
    """Direct imports, and those through modules outside the layers (store -> logs -> api)."""
    edges = graph()
    found = set()
    for module in MODULES:
        own = rank(module)
        if own is None or own == len(LAYERS):
            continue
        path = {module: [module]}
        frontier = [module]
        while frontier:
            node = frontier.pop(0)
            for target, _, _ in imports(node):
                if (other := rank(target)) is not None and other > own:
                    found.add(" -> ".join([*path[node], target]))
            for nxt in sorted(edges[node] - path.keys()):
                if rank(nxt) is not None:
                    continue  # a layered module is checked on its own, a higher one was reported
                path[nxt] = [*path[node], nxt]
                frontier.append(nxt)
    return sorted(found)


def private_imports() -> list[str]:
    found = set()
    for module in MODULES:
        aliases = set()
        for target, name, alias in imports(module):
            if target not in MODULES or target == module:
                continue
            if name and name.startswith("_") and not name.startswith("__"):
                found.add(f"{module} imports {target}.{name}")
            elif name is None:
                aliases.add(alias.asname or alias.name)
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.add(f"{module} reads {node.value.id}.{node.attr}")
    return sorted(found)


def test_no_import_cycles() -> None:
    found = [" -> ".join(cycle) for cycle in cycles(graph())]
    assert not found, "import cycles:\n" + "\n".join(found)


def test_lower_layers_do_not_import_the_upper_ones() -> None:
    found = layer_violations()
    assert not found, "\n".join(found)


def test_no_private_names_cross_modules() -> None:
    found = private_imports()
    assert not found, "\n".join(found)


def documented_layers() -> list[tuple[str, ...]]:
    """The folders and files of each row of docs/architecture.md's layer table, in its order."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+|faces) \| ([^|]+) \|", text, flags=re.MULTILINE)
    names = (re.findall(r"`([\w_]+)(?:/|\.py)`", cells) for _, cells in rows)
    return [tuple(sorted(f"sidecar.{n}" for n in row)) for row in names]


def test_the_architecture_document_shows_these_layers() -> None:
    upper = tuple(name for name in UPPER if name.startswith("sidecar."))
    assert documented_layers() == [tuple(sorted(layer)) for layer in LAYERS] + [tuple(sorted(upper))]


def test_the_checks_see_what_they_should() -> None:
    """The reader itself: a known edge, a relative import, a cycle and a TYPE_CHECKING block."""
    assert "sidecar.config" in graph()["sidecar.logs"]
    node = ast.parse("from ..config import Settings").body[0]
    assert resolve("sidecar.api.auth", node) == "sidecar.config"  # type: ignore[arg-type]
    assert resolve("sidecar.api", node) == "sidecar.config"  # type: ignore[arg-type]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert rank("sidecar.store.catalog") == rank("sidecar.engine") < rank("sidecar.pitr.record.catalog")
    assert rank("sidecar.integrity.pitr") > rank("sidecar.pitr.status") and rank("sidecar.config") is None
    assert rank("aiohttp.web") == rank("sidecar.api.app") == len(LAYERS)
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nimport y\n")
    names = [a.name for n in runtime_nodes(guarded) if isinstance(n, ast.Import) for a in n.names]
    assert names == ["y"]
