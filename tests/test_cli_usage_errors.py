"""click's usage errors follow finplan's bad-input rule: one line on stderr, exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from finplan.cli.main import main


@pytest.mark.parametrize("argv,names", [
    (["run", "deploy/", "--data", "embedded", "--limit", "0"], "--limit"),
    (["plan", "--bogus"], "--bogus"),
    (["emit"], "PLAN.json"),
    (["nosuch"], "nosuch"),
    (["verify", "deploy/", "--model", "m.onnx", "--data", "embedded", "--atol", "-1"], "--atol"),
])
def test_usage_errors_are_one_line_naming_the_option(argv, names, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("finplan: error:") and names in err, err
    assert "Traceback" not in err and captured.out == ""


def test_python_dash_m_finplan_is_the_command():
    done = subprocess.run([sys.executable, "-m", "finplan", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "finplan" in done.stdout


@pytest.mark.parametrize("argv", [[], ["profiles"]])
def test_a_bare_group_prints_its_help(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: finplan") and "Commands:" in out and len(out.splitlines()) > 5
