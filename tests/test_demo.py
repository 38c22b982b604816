"""`make demo` must keep working: run it (short budgets) and check what it leaves behind."""
from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "finplan.demo", "--out", str(out), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    profile = json.loads((out / "this-machine.profile.json").read_text())
    assert profile["schema"] == "finplan.profile/1"
    # No RAPL or NVIDIA counter here: the energy must be labelled as an estimate.
    assert all(not b["energy_j"]["measured"] for b in profile["blocks"]) or profile["energy"]["measured"]
    plan = json.loads((out / "plan.json").read_text())
    app = plan["applications"][0]
    assert app["feasible"] and app["placement"][0]["node"] == "device"
    assert (out / "deploy" / "manifest.json").exists() or any((out / "deploy").glob("*/manifest.json"))
    assert "PASS" in result.stdout and "Predicted vs measured" in result.stdout
