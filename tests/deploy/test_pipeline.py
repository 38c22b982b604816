"""The real chain on the embedded model: finplan profile (for the card) -> finplan plan -> emit ->
verify -> run. On the calibration data the plan was made from, measured exit rates must match
the plan's (same samples, same thresholds, same decision rule)."""
from __future__ import annotations

import json

import pytest

from finplan.cli.main import main

NETWORK = """schema: finplan.network/1
nodes:
  - {name: device, tier: mobile, compute: {ops_per_s: 2.0e+9, power_w: 6}}
  - {name: edge, tier: edge, compute: {ops_per_s: 1.0e+11, power_w: 30}}
  - {name: cloud, tier: cloud, compute: {ops_per_s: 3.0e+11, power_w: 60}}
links:
  - {from: device, to: edge, bandwidth_bps: 1.0e+9, latency_s: 0.0005, energy_j_per_bit: 1.0e-9}
  - {from: device, to: cloud, bandwidth_bps: 1.0e+8, latency_s: 0.005, energy_j_per_bit: 2.0e-9}
  - {from: edge, to: cloud, bandwidth_bps: 1.0e+9, latency_s: 0.001, energy_j_per_bit: 1.0e-9}
"""
CALIB_LIMIT = "200"


@pytest.fixture(scope="session")
def embedded_plan(tmp_path_factory):
    from finplan.data import embedded_model_path

    model = embedded_model_path()
    if not model.is_file():
        pytest.skip("the embedded model is not built")
    work = tmp_path_factory.mktemp("pipeline")
    assert main(["profile", str(model), "--calib", "embedded", "--limit", CALIB_LIMIT, "--budget-s", "0.3",
                 "--energy", "power-model", "--power-w", "5", "--quiet", "-o", str(work / "this.profile.json"),
                 "--card", str(work / "card.json")]) == 0
    (work / "network.yaml").write_text(NETWORK)
    assert main(["plan", "--model", str(work / "card.json"), "--network", str(work / "network.yaml"),
                 "--source", "device", "--max-latency", "20ms", "--min-accuracy", "0.95", "--mode", "dynamic",
                 "-o", str(work / "plan.json")]) == 0
    return work, model


def test_real_plan_emit_verify_run(embedded_plan, capsys):
    work, model = embedded_plan
    capsys.readouterr()
    plan = json.loads((work / "plan.json").read_text())
    app = plan["applications"][0]
    assert app["feasible"]
    out = work / "deploy"
    assert main(["emit", str(work / "plan.json"), "--model", str(model), "-o", str(out)]) == 0
    placed = list(dict.fromkeys(p["node"] for p in app["placement"]))
    assert json.loads((out / "deployment.json").read_text())["nodes"] == placed
    capsys.readouterr()
    assert main(["verify", str(out), "--model", str(model), "--data", "embedded", "--limit", CALIB_LIMIT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
    assert main(["run", str(out), "--data", "embedded", "--limit", CALIB_LIMIT, "--batch-size", "16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Same samples, same rule, full-precision scores in the card: plan and run must agree exactly
    # (the target is 2 points; anything but equality here means a decision flipped).
    for exit_name, rate in app["predicted"]["exit_rates"].items():
        assert report["exit_rates"].get(exit_name, 0.0) == pytest.approx(rate, abs=1e-9)
    assert report["accuracy"] == pytest.approx(app["predicted"]["accuracy"], abs=1e-9)
    rows = {row["metric"]: row for row in report["comparison"]}
    for transfer in app["transfers"]:
        key = f"bytes[{transfer['from']}->{transfer['to']}]"
        samples = report["links"][f"{transfer['from']}->{transfer['to']}"]["samples"]
        # each forwarded sample carries exactly the card's bytes; how many go follows the exit rates
        assert rows[key]["measured"] == pytest.approx(samples * transfer["bytes"] / int(CALIB_LIMIT), rel=1e-9)
        assert samples / int(CALIB_LIMIT) == pytest.approx(transfer["probability"], abs=1e-9)
