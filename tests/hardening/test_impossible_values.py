"""Class 4: impossible values are refused where they enter: 0 s / 0 J parts in a profile,
max_utilization > 1, NaN anywhere in a plan read by show or emit (every document is checked
against its schema where it is read), infer's out-of-range labels, power-model without watts."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hardening_helpers import cli, refused


def _edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


@pytest.mark.parametrize("group, index, key, field", [
    ("blocks", 0, "latency", "blocks[0].latency_s.p50"),
    ("blocks", 2, "energy", "blocks[2].energy_j.value"),
    ("exits", 1, "latency", "exits[1].latency_s.p50"),
    ("exits", 0, "energy", "exits[0].energy_j.value"),
])
def test_a_part_of_zero_seconds_or_joules_is_refused(capsys, world_copy, group, index, key, field):
    def zero(doc):
        part = doc[group][index]
        if key == "latency":
            part["latency_s"]["p50"] = 0.0
        else:
            part["energy_j"]["value"] = 0.0

    _edit_json(world_copy / "device.profile.json", zero)
    refused(capsys, world_copy, "plan", world_copy / "scenario.yaml", "-o", world_copy / "p.json",
            fragments=["device.profile.json", field, "expected"])


@pytest.mark.parametrize("where, key, value", [
    ("nodes", "max_utilization", 5), ("nodes", "capacity", 1.5), ("links", "max_utilization", 2.0),
    ("nodes", "max_utilization", 0),
])
def test_a_utilisation_limit_above_one_or_at_zero_is_refused(capsys, world_copy, where, key, value):
    _edit_json(world_copy / "network.json", lambda doc: doc[where][1 if where == "nodes" else 0].update({key: value}))
    refused(capsys, world_copy, "plan", world_copy / "scenario.yaml", "-o", world_copy / "p.json",
            fragments=["network.json", key, "<= 1" if value else "> 0"])


@pytest.mark.parametrize("literal, field", [
    ('"energy_j": NaN', "predicted.energy_j"), ('"latency_s": Infinity', "predicted.latency_s"),
    ('"accuracy": -Infinity', "predicted.accuracy"),
])
def test_a_plan_with_non_finite_numbers_is_refused_by_show_and_emit(capsys, world_copy, literal, field):
    plan = world_copy / "plan.json"
    doc = json.loads(plan.read_text())
    predicted = doc["applications"][0]["predicted"]
    key = literal.split('"')[1]
    text = plan.read_text().replace(f'"{key}": {json.dumps(predicted[key])}', literal, 1)
    assert literal in text
    plan.write_text(text)
    refused(capsys, world_copy, "show", plan, fragments=[field, "expected a finite number"])
    refused(capsys, world_copy, "emit", plan, "--model", world_copy / "model.onnx", "-o", world_copy / "d2",
            fragments=[field, "expected a finite number"])


def test_emit_checks_the_plan_against_its_schema(capsys, world_copy):
    _edit_json(world_copy / "plan.json", lambda doc: doc["applications"][0].update(feasible="yes"))
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx",
            "-o", world_copy / "d2", fragments=["plan.json", "applications[0].feasible"])
    _edit_json(world_copy / "plan.json", lambda doc: doc["applications"][0].update(feasible=True, predicted="cheap"))
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx",
            "-o", world_copy / "d2", fragments=["plan.json", "applications[0].predicted"])


def test_a_nan_in_a_yaml_scenario_is_refused(capsys, world_copy):
    scenario = world_copy / "scenario.yaml"
    scenario.write_text(scenario.read_text() + "x-note: .nan\n")  # even in a note: no NaN enters
    refused(capsys, world_copy, "plan", scenario, fragments=["x-note", "expected a finite number"])


def _served(monkeypatch, world):
    """``finplan infer`` against a stand-in for the served description (no Ray needed): the
    served heads' classes come from the same graph ``finplan serve`` describes."""
    from finplan.deploy.ray_serve import client
    from finplan.deploy.ray_serve.graph import build_graph

    info = build_graph(world / "deploy").describe()
    monkeypatch.setattr(client, "describe", lambda url, timeout_s=10.0: info)
    monkeypatch.setattr(client, "infer_many", lambda *a, **k: pytest.fail("labels were not checked before sending"))
    return info


@pytest.mark.parametrize("label", [10, 255, -1])
def test_infer_refuses_labels_out_of_range_as_run_does(capsys, monkeypatch, world, world_copy, label):
    info = _served(monkeypatch, world)
    assert info["num_classes"] == 10
    calib = np.load(world / "calib.npz")
    y = calib["y"].copy()
    y[3] = label
    bad = world_copy / "bad-labels.npz"
    np.savez(bad, x=calib["x"], y=y)
    run_line = refused(capsys, world_copy, "run", world_copy / "deploy", "--data", bad, fragments=["labels out of range"])
    infer_line = refused(capsys, world_copy, "infer", "http://127.0.0.1:1/digits", "--data", bad,
                         fragments=["labels out of range"])
    assert infer_line == run_line


def test_power_model_without_watts_warns_and_the_summary_says_so(capsys, world_copy):
    out_profile = world_copy / "pm.profile.json"
    code, out, err = cli(capsys, "profile", world_copy / "model.onnx", "--energy", "power-model", "--budget-s", "0.2",
                         "--threads", "1", "-o", out_profile, "-q")
    assert code == 0, err
    assert "warning: --energy power-model without --power-w" in err and "default 4 W per busy CPU" in err
    assert "ESTIMATED" in out and "no power given: default 4 W per CPU" in out
    energy = json.loads(out_profile.read_text())["energy"]
    assert "no power given" in json.dumps(energy)
    code, out, err = cli(capsys, "profile", world_copy / "model.onnx", "--energy", "power-model", "--power-w", "3",
                         "--budget-s", "0.2", "--threads", "1", "-q")
    assert code == 0 and "warning" not in err
