"""The layer contract: transferkit's modules import each other without cycles, its packages import only packages in
lower layers (the order is the table in docs/architecture.md, read from there), and its own modules are imported at
the top of a module, not inside functions.

Every import is an edge, module-level or inside a function, and so is every import made from a string: the package's
lazy public names (``transferkit._LAZY``), the backbone plugins (``models.backbones._PLUGIN_MODULES``) and any
``importlib.import_module("transferkit...")``. Lazy imports of heavy third-party libraries are not edges and stay
lazy. (import-linter is not a dependency: this is its layers and independence contracts, written out.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import transferkit

ROOT = Path(transferkit.__file__).parent
DOC = ROOT.parent.parent / "docs" / "architecture.md"
LAZY = "transferkit.__getattr__"  # the lazy public names: a node of their own above everything they name
MAX_FUNCTION_IMPORTS = 10  # transferkit imports inside functions, outside cli.py and the lazy __init__.py
START_UP_MODULES = ("transferkit/cli.py", "transferkit/__init__.py")  # where lazy imports keep start-up fast


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str | None:
    """The module an ImportFrom names, relative imports resolved against ``name`` (the importing module)."""
    if not node.level:
        return node.module
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _lazy_names() -> dict[str, str]:
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("transferkit/__init__.py has no _LAZY table")


def _code_imports(name: str, path: Path, modules: dict[str, Path], lazy: dict[str, str]) -> set[str]:
    """The transferkit modules that ``name`` imports in code (``import``/``from ... import``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, name, path)
            if not module or not module.startswith("transferkit"):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if module == "transferkit" and alias.name in lazy:
                    out.add(LAZY)  # `from transferkit import fit`: the lazy name, not the package's own body
                else:
                    out.add(full if full in modules else module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("transferkit"))
    return out


def _string_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules named by a string literal that is a transferkit module (a plugin list, ``import_module("...")``)."""
    return {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules
            and node.value.startswith("transferkit.")}


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules and target != LAZY:
        target = target.rpartition(".")[0]
    return target or None


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(code edges, string edges) between modules; the lazy public names are the node ``LAZY``."""
    modules = _modules()
    lazy = _lazy_names()
    code: dict[str, set[str]] = {m: set() for m in [*modules, LAZY]}
    strings: dict[str, set[str]] = {m: set() for m in [*modules, LAZY]}
    for name, path in modules.items():
        for target in _code_imports(name, path, modules, lazy):
            found = _resolve(target, modules)
            if found and found != name:
                code[name].add(found)
        strings[name] |= {t for t in _string_imports(path, modules) if t != name}
    strings[LAZY] = set(lazy.values())
    strings["transferkit"] -= strings[LAZY]  # the table's strings are the lazy node's edges, not the package body's
    return code, strings


def _package(module: str) -> str:
    """The layer unit of a module: its subpackage (``transferkit.train.engine`` -> ``train``), its own name for a
    top-level module (``transferkit.config`` -> ``config``), ``transferkit`` for the package's own body."""
    if module == LAZY:
        return LAZY
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "transferkit"


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in graph.items():
        out.setdefault(_package(source), set()).update(_package(t) for t in targets)
    return {p: targets - {p} for p, targets in out.items()}


def _merge(*graphs: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for g in graphs:
        for k, v in g.items():
            out.setdefault(k, set()).update(v)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_order(text: str | None = None) -> list[set[str]]:
    """The layers of docs/architecture.md's "Layer order" table, lowest first: each row names its packages and
    modules in backticks (``transferkit.__getattr__`` is the lazy public names, ``transferkit`` the package body)."""
    text = DOC.read_text(encoding="utf-8") if text is None else text
    section = text.split("### Layer order", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    layers = {int(row.split("|")[1]): set(re.findall(r"`([\w.]+)`", row.split("|")[2])) for row in rows}
    return [layers[k] for k in sorted(layers)]


def _violations(packages: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    rank = {p: i for i, layer in enumerate(layers) for p in layer}
    return sorted(f"{p} (layer {rank[p]}) imports {t} (layer {rank[t]})" for p, targets in packages.items()
                  for t in targets if rank[t] >= rank[p])


def _function_imports() -> list[str]:
    """``path:line`` of each transferkit import inside a function, outside the start-up modules."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        if rel in START_UP_MODULES:
            continue
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                relative_or_own = isinstance(node, ast.ImportFrom) and (
                    node.level > 0 or (node.module or "").startswith("transferkit"))
                plain = isinstance(node, ast.Import) and any(a.name.startswith("transferkit") for a in node.names)
                if relative_or_own or plain:
                    out.append(f"{rel}:{node.lineno}")
    return sorted(set(out))  # a nested function's import is walked from each enclosing function: counted once


def test_transferkit_modules_import_each_other_without_cycles() -> None:
    code, strings = _graphs()
    assert sum(len(v) for v in code.values()) > 100  # the walk sees the package's imports at all
    assert _cycles(code) == []
    # A registry that loads its plugins by name, each of which imports the registry to register itself, is the one
    # loop a string import may close: the backbone families. Any other string edge must leave the graph acyclic.
    plugin_loads = {(a, b) for a, targets in strings.items() for b in targets if a in code[b]}
    assert plugin_loads == {("transferkit.models.backbones", "transferkit.models.text"),
                            ("transferkit.models.backbones", "transferkit.models.audio")}
    both = _merge(code, strings)
    for a, b in plugin_loads:
        both[a].discard(b)
    assert _cycles(both) == []


def test_string_imports_are_followed() -> None:
    _, strings = _graphs()
    assert {"transferkit.models.text", "transferkit.models.audio"} <= strings["transferkit.models.backbones"]
    assert {"transferkit.train.engine", "transferkit.estimator", "transferkit.config"} <= strings[LAZY]
    assert not strings["transferkit"]  # the package body imports only the errors; the rest is the lazy node's


def test_packages_import_only_lower_layers() -> None:
    code, strings = _graphs()
    packages = _package_graph(_merge(code, strings))
    layers = layer_order()
    listed = [p for layer in layers for p in layer]
    assert len(listed) == len(set(listed)), "a package is in two layers of docs/architecture.md"
    assert set(listed) == set(packages), "docs/architecture.md's layer order must name every package and module"
    assert _cycles(packages) == []
    assert _violations(packages, layers) == []


def test_transferkit_imports_sit_at_the_top_of_modules() -> None:
    """Imports of transferkit's own modules belong at the top: inside a function they hide the module's place in the
    layers and pay the import on every call. cli.py and the package's ``__init__`` stay lazy for start-up; the few
    others keep the ``import transferkit.config`` or data modules free of torch and the model libraries."""
    found = _function_imports()
    assert len(found) <= MAX_FUNCTION_IMPORTS, found


def test_the_checks_find_what_they_look_for() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    layers = layer_order("### Layer order\n| layer | what |\n|---|---|\n| 1 | `b` |\n| 0 | `a`, `c.d` |\n")
    assert layers == [{"a", "c.d"}, {"b"}]
    assert _violations({"a": {"b"}, "b": {"a"}, "c.d": set()}, layers) == ["a (layer 0) imports b (layer 1)"]
    assert _package("transferkit.train.engine") == "train" and _package("transferkit.config") == "config"
