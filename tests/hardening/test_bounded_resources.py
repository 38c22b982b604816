"""Class 3: bounded resources: input file size caps, YAML alias expansion capped, notes not
copied into outputs, ``--threads`` bounded by the CPUs this machine offers."""
from __future__ import annotations

import json

import pytest
from hardening_helpers import cli, refused

from finplan import fileio
from finplan.fileio import available_cpus

LAUGHS = """\
schema: finplan.scenario/1
a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
""" + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)) + """\
network: network.json
applications: []
description: *a8
"""


def test_billion_laughs_in_a_free_text_field_is_refused(capsys, world_copy):
    (world_copy / "laughs.yaml").write_text(LAUGHS)
    refused(capsys, world_copy, "plan", world_copy / "laughs.yaml", "-o", world_copy / "p.json",
            fragments=["laughs.yaml", "expands to more than 1,000,000 values"])


def test_a_yaml_alias_that_contains_itself_is_refused(capsys, world_copy):
    (world_copy / "loop.yaml").write_text("schema: finplan.scenario/1\nx-loop: &l [1, *l]\n")
    refused(capsys, world_copy, "plan", world_copy / "loop.yaml", fragments=["refers to a mapping or list that contains it"])


def test_a_moderate_use_of_anchors_is_fine(world_copy):
    from finplan.fileio import parse_text

    doc = parse_text("base: &b {x: 1}\nnodes: [*b, *b, *b]\n", "anchors.yaml")
    assert doc["nodes"] == [{"x": 1}] * 3


@pytest.mark.parametrize("cap, target, what", [
    ("MAX_YAML_BYTES", "scenario.yaml", "YAML file"),
    ("MAX_DOCUMENT_BYTES", "network.json", "JSON file"),
    ("MAX_DOCUMENT_BYTES", "device.profile.json", "JSON file"),
])
def test_an_oversized_document_is_refused_before_it_is_parsed(capsys, monkeypatch, world_copy, cap, target, what):
    monkeypatch.setattr(fileio, cap, (world_copy / target).stat().st_size - 1)
    refused(capsys, world_copy, "plan", world_copy / "scenario.yaml", "-o", world_copy / "p.json",
            fragments=[target, f"finplan reads a {what} of at most"])


def test_oversized_arrays_and_models_are_refused(capsys, monkeypatch, world_copy):
    monkeypatch.setattr(fileio, "MAX_ARRAY_BYTES", 1000)
    refused(capsys, world_copy, "run", world_copy / "deploy", "--data", world_copy / "calib.npz",
            fragments=["calib.npz", "at most"])
    monkeypatch.setattr(fileio, "MAX_ONNX_BYTES", 1000)
    refused(capsys, world_copy, "inspect", world_copy / "model.onnx", fragments=["model.onnx", "at most 1000 bytes"])


def test_notes_stay_in_the_files_a_person_wrote(capsys, world_copy):
    note = "n" * 200_000
    network = json.loads((world_copy / "network.json").read_text())
    network["description"] = note
    network["nodes"][1]["x-rack"] = {"where": note}
    network["links"][0]["description"] = note
    (world_copy / "network.json").write_text(json.dumps(network))
    scenario = world_copy / "scenario.yaml"
    scenario.write_text(scenario.read_text() + f"description: {note}\nx-owner: me\n")
    code, _, err = cli(capsys, "plan", scenario, "-o", world_copy / "noted.plan.json", "-q")
    assert code == 0, err
    text = (world_copy / "noted.plan.json").read_text()
    assert note[:1000] not in text and '"x-rack"' not in text and '"description"' not in text
    assert len(text) < len((world_copy / "plan.json").read_text()) + 1000  # the same plan, notes left out
    code, _, err = cli(capsys, "emit", world_copy / "noted.plan.json", "--model", world_copy / "model.onnx",
                       "-o", world_copy / "noted.deploy", "-q")
    assert code == 0, err
    assert note[:1000] not in (world_copy / "noted.deploy" / "network.json").read_text()


def test_a_meter_note_is_cut_to_one_short_line(tmp_path):
    from finplan.profiler.energy.external import NOTE_CHARS, ExternalMeter

    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"note": "bench\nmeter " + "x" * 10_000, "block1": 0.001}))
    meter = ExternalMeter(path)
    assert "\n" not in meter.note() and len(meter.note()) <= NOTE_CHARS + 60


@pytest.mark.parametrize("argv", [
    ["profile", "model.onnx", "--threads", "100000", "-o", "p.json"],
    ["profile", "model.onnx", "--threads", "0", "-o", "p.json"],
    ["run", "deploy", "--data", "calib.npz", "--threads", "100000"],
    ["run", "deploy", "--data", "calib.npz", "--threads", "-3"],
    ["serve", "deploy", "--threads", "100000", "--dry-run"],
])
def test_threads_are_bounded_by_the_cpus_of_this_machine(capsys, monkeypatch, world_copy, argv):
    monkeypatch.chdir(world_copy)
    line = refused(capsys, world_copy, *argv, fragments=["--threads"])
    assert f"this machine offers {available_cpus()} CPU" in line


def test_threads_up_to_the_cpus_are_taken(capsys, world):
    code, out, err = cli(capsys, "serve", world / "deploy", "--threads", str(available_cpus()), "--dry-run", "--json")
    assert code == 0, err
