"""The core install must work on an edge device without torch (and without ray)."""
from __future__ import annotations

import subprocess
import sys

import onnx

from onnx_builders import tiny_branchy_model

# Importing a module that is None in sys.modules raises ImportError, as if it were not installed.
HIDE = "import sys; sys.modules['torch'] = None; sys.modules['ray'] = None; sys.modules['matplotlib'] = None; "


def _run(code: str, *args: str):
    return subprocess.run([sys.executable, "-c", HIDE + code, *args], capture_output=True, text=True, timeout=120)


def test_help_and_inspect_work_without_torch(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_branchy_model(), str(path))
    code = ("from finplan.cli.main import main; import sys; "
            "rc = main(['--help']); assert rc == 0, rc; rc = main(['inspect', sys.argv[1]]); "
            "assert rc == 0, rc; assert 'torch' not in {k for k, v in sys.modules.items() if v is not None}")
    result = _run(code, str(path))
    assert result.returncode == 0, result.stderr
    assert "inspect" in result.stdout and "block3" in result.stdout


def test_every_non_torch_module_imports_without_torch():
    code = ("import importlib, pkgutil, finplan, sys\n"
            "skip = ('finplan.exits', 'finplan.deploy.ray_serve', 'finplan.cli.exits', 'finplan.cli.serve', 'finplan.demo')\n"
            "for m in pkgutil.walk_packages(finplan.__path__, 'finplan.'):\n"
            "    if not m.name.startswith(skip):\n"
            "        importlib.import_module(m.name)\n"
            "print('ok')")
    result = _run(code)
    assert result.returncode == 0, result.stderr
