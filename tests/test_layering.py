"""The import rules of ARCHITECTURE.md (at the repository root), checked on the source.

Rooms: cli -> {exits, profiler, deploy, partition} -> the base; the four rooms never import each
other; the planner works on numbers only (partition imports errors, units, fileio, validation,
links and hardware_profiles, and no onnx/onnxruntime/torch/ray), so it stays usable (and testable
in milliseconds) on a laptop without models; only exits/ imports torch; only deploy/ray_serve
imports ray; no import circle anywhere. The tables below are ARCHITECTURE.md's.
"""
from __future__ import annotations

import ast
from pathlib import Path

import finplan

ROOT = Path(finplan.__file__).parent
REPOSITORY = ROOT.parent.parent
ENTRY_POINTS = {"__main__", "demo"}  # above the cli
ROOMS = {"cli", "exits", "profiler", "deploy", "partition"}
BASE = {"errors", "units", "fileio", "validation", "schemas", "contract_types", "onnx_graph", "onnx_parts", "contract", "cuts",
        "data", "sample_files", "textdata", "exit_policy", "links", "hardware_profiles", "embedded"}
ALLOWED = {  # room -> what it may import besides itself (and the package root's __version__)
    "cli": BASE | {"exits", "profiler", "deploy", "partition"},
    "exits": BASE,
    "profiler": BASE,
    "deploy": BASE,
    "partition": {"errors", "units", "fileio", "validation", "links", "hardware_profiles"},
    "hardware_profiles": {"errors", "units", "fileio", "validation"},
}
THIRD_PARTY_BANNED = {
    "partition": {"onnx", "onnxruntime", "torch", "ray"},
    "profiler": {"torch", "ray"},
    "deploy": {"torch"},
    "hardware_profiles": {"onnx", "onnxruntime", "torch", "ray"},
}


def _top(module: str) -> str:
    """``finplan.partition.fin`` -> ``partition``; the package root -> ""."""
    return module.split(".")[1] if "." in module else ""


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_module_has_its_place_in_the_architecture():
    """A new top-level module or package is placed in ARCHITECTURE.md (and here) before it is used."""
    names = {path.stem if path.suffix == ".py" else path.name for path in ROOT.iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path.is_dir() and path.name != "__pycache__")}
    assert names - ENTRY_POINTS - ROOMS - BASE == set()
    text = (REPOSITORY / "ARCHITECTURE.md").read_text()
    assert all(f"`{name}" in text or f"{name}/" in text for name in BASE | ROOMS - {"cli"}), "ARCHITECTURE.md"


def test_packages_import_only_downwards():
    problems = []
    for module, targets in sorted(import_graph(ROOT).items()):
        room = _top(module)
        for target in sorted(targets):
            other = _top(target)
            if other in ("", room) or room in ENTRY_POINTS:
                continue
            if room in ALLOWED and other not in ALLOWED[room]:
                problems.append(f"{module} ({room}) imports {target}")
            elif room not in ALLOWED and other in ROOMS:  # a base module
                problems.append(f"{module} (base) imports {target} ({other}): the base never imports a room")
    for package, banned in THIRD_PARTY_BANNED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            problems += [f"{path.relative_to(ROOT)} imports {name}" for name in _imports(path)
                         if name.split(".")[0] in banned]
    assert not problems, "\n".join(problems)


def test_only_ray_serve_imports_ray():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "ray_serve" not in p.parts and p.name not in ("serve.py",)
                 and any(n.split(".")[0] == "ray" for n in _imports(p))]
    assert offenders == []


# --------------------------------------------------------------------------- no import circle

def module_name(path: Path, root: Path) -> str:
    """``finplan.partition.fin`` for src/finplan/partition/fin.py (a package is its __init__)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Every module of the package at ``root`` -> the package's modules it imports.

    Built from the source (ast), so it sees what runs only sometimes too: imports inside
    functions, under ``if TYPE_CHECKING``, in ``try``. ``from a import b`` imports ``a`` and,
    when ``a.b`` is a module, ``a.b``; relative imports are resolved against the package.
    """
    modules = {module_name(path, root): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan; iterative, O(V + E))."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
                    cycles.append(sorted(component))
    return cycles


def test_no_import_circle_anywhere_in_the_package():
    graph = import_graph(ROOT)
    assert len(graph) > 50 and graph["finplan.contract"] >= {"finplan.onnx_parts", "finplan.contract_types"}
    cycles = import_cycles(graph)
    assert not cycles, "import circles (each line one; break it by moving what both need below both):\n" + \
        "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_sees_function_level_and_package_circles(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg.b import thing\n")
    (root / "b.py").write_text("def thing():\n    from pkg import c  # function level\n")
    (root / "c.py").write_text("import pkg.a\n")
    (root / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (root / "sub" / "leaf.py").write_text("from pkg.sub import y\n")  # a module and its own package
    (root / "d.py").write_text("import pkg.a\nfrom pkg.sub import leaf\n")  # depends on both, in no circle
    cycles = import_cycles(import_graph(root))
    assert sorted(cycles) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.sub", "pkg.sub.leaf"]]
