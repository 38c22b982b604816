"""A small finplan world built once per session: the embedded model, a real profile and card
of it (examples/profiles), a network with that profiled device and two analytic servers, a
dynamic scenario, its plan and its deployment. Tests that could change files work on a copy
(``world_copy``), and CLI cases check that a refused command wrote nothing (``snapshot``)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "deploy", HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


REPO = HERE.parent.parent
PROFILE = REPO / "examples" / "profiles" / "this-machine-2core.profile.json"
CARD = REPO / "examples" / "profiles" / "b-alexnet-digits.card.json"

NETWORK = {
    "schema": "finplan.network/1",
    "nodes": [{"name": "device", "tier": "mobile", "profile": "device.profile.json"},
              {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 153.4e9, "power_w": 140.0}},
              {"name": "cloud", "tier": "cloud", "compute": {"ops_per_s": 312e9, "power_w": 400.0}}],
    "links": [
        {"from": "device", "to": "edge", "bandwidth_bps": 1 / 1.78e-12, "latency_s": 0.0, "energy_j_per_bit": 67e-9},
        {"from": "device", "to": "cloud", "bandwidth_bps": 1 / 0.22e-12, "latency_s": 0.0, "energy_j_per_bit": 42.6e-9},
        {"from": "edge", "to": "cloud", "bandwidth_bps": 1 / 0.22e-12, "latency_s": 0.0, "energy_j_per_bit": 49.6e-9}],
}

SCENARIO_YAML = """\
schema: finplan.scenario/1
network: network.json
applications:
  - name: digits
    model: model.card.json
    source: device
    max_latency_s: {max_latency_s}
    min_accuracy: 0.95
options: {{mode: dynamic, first_block_at_source: true, strict: true}}
"""


def build_world(folder: Path) -> Path:
    from finplan.data import embedded_calibration_path, embedded_model_path

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(embedded_model_path(), folder / "model.onnx")
    shutil.copyfile(embedded_calibration_path(), folder / "calib.npz")
    shutil.copyfile(PROFILE, folder / "device.profile.json")
    shutil.copyfile(CARD, folder / "model.card.json")
    (folder / "network.json").write_text(json.dumps(NETWORK, indent=2) + "\n")
    profile = json.loads(PROFILE.read_text())
    device_s = sum(b["latency_s"]["mean"] for b in profile["blocks"])
    (folder / "scenario.yaml").write_text(SCENARIO_YAML.format(max_latency_s=round(0.6 * device_s, 6)))
    return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """The world folder with plan.json and deploy/ made by the real CLI (do not change it)."""
    from finplan.cli.main import main

    folder = build_world(tmp_path_factory.mktemp("hardening") / "world")
    assert main(["plan", str(folder / "scenario.yaml"), "-o", str(folder / "plan.json"), "-q"]) == 0
    assert main(["emit", str(folder / "plan.json"), "--model", str(folder / "model.onnx"),
                 "-o", str(folder / "deploy"), "-q"]) == 0
    return folder


@pytest.fixture()
def world_copy(world, tmp_path) -> Path:
    target = tmp_path / "world"
    shutil.copytree(world, target)
    return target


