"""DESIGN.md's import direction: cli -> {deploy, partition, profiler, exits} -> {hardware_profiles, contract}.

The planner works on numbers only, so it stays usable (and testable in milliseconds) on a
laptop without models; only exits/ imports torch; only deploy/ray_serve imports ray.
"""
from __future__ import annotations

import ast
from pathlib import Path

import finplan

ROOT = Path(finplan.__file__).parent
BASE = {"errors", "fileio", "contract", "onnx_parts", "data", "hardware_profiles", "schemas", "embedded",
        "exit_policy", "links", "validation"}
ALLOWED = {
    "partition": {"errors", "fileio", "validation", "links", "hardware_profiles", "partition"},
    "profiler": BASE | {"profiler"},
    "deploy": BASE | {"deploy"},
    "exits": BASE | {"exits"},
    "hardware_profiles": {"errors", "fileio", "validation", "hardware_profiles"},
}
THIRD_PARTY_BANNED = {
    "partition": {"onnx", "onnxruntime", "torch", "ray"},
    "profiler": {"torch", "ray"},
    "deploy": {"torch"},
    "hardware_profiles": {"onnx", "onnxruntime", "torch", "ray"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_packages_import_only_downwards():
    problems = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "finplan" and len(parts) > 1 and parts[1] not in allowed:
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
                if parts[0] in THIRD_PARTY_BANNED.get(package, ()):
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not problems, "\n".join(problems)


def test_only_ray_serve_imports_ray():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "ray_serve" not in p.parts and p.name not in ("serve.py",)
                 and any(n.split(".")[0] == "ray" for n in _imports(p))]
    assert offenders == []
