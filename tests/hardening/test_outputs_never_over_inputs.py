"""Class 1: an output never destroys an input (resolved path and inode), ``emit --force``
replaces only a deployment folder, and its swap never leaves no deployment."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hardening_helpers import cli, refused

from finplan import fileio
from finplan.errors import FinplanInputError


@pytest.mark.parametrize("argv, fragments", [
    (["profile", "model.onnx", "-o", "model.onnx"], ["-o", "is the input MODEL.onnx"]),
    (["profile", "model.onnx", "--calib", "calib.npz", "--card", "model.onnx"], ["--card", "is the input MODEL.onnx"]),
    (["profile", "model.onnx", "--calib", "calib.npz", "-o", "calib.npz"], ["-o", "is the input --calib"]),
    (["profile", "model.onnx", "--calib", "embedded", "-o", "./sub/../model.onnx"], ["is the input MODEL.onnx"]),
    (["plan", "scenario.yaml", "-o", "scenario.yaml"], ["-o", "is the input SCENARIO"]),
    (["plan", "scenario.yaml", "-o", "model.card.json"], ["-o", "model card of digits"]),
    (["plan", "scenario.yaml", "-o", "network.json"], ["-o", "the network"]),
    (["plan", "scenario.yaml", "-o", "device.profile.json"], ["-o", "the profile of node device"]),
    (["plan", "scenario.yaml", "--export-graph", "model.card.json"], ["--export-graph", "model card"]),
    (["plan", "--model", "model.card.json", "--network", "network.json", "--source", "device", "--max-latency", "5ms",
      "--min-accuracy", "0.8", "-o", "network.json"], ["-o", "the network"]),
    (["show", "plan.json", "--png", "plan.json"], ["--png", "is the input PLAN"]),
    (["emit", "plan.json", "--model", "model.onnx", "-o", ".", "--force"], ["-o", "holds the input"]),
    (["emit", "deploy/plan.json", "--model", "model.onnx", "-o", "deploy", "--force"], ["-o", "holds the input PLAN.json"]),
])
def test_an_output_that_is_or_holds_an_input_is_refused(capsys, monkeypatch, world_copy, argv, fragments):
    (world_copy / "sub").mkdir()
    monkeypatch.chdir(world_copy)
    refused(capsys, world_copy, *argv, fragments=fragments)


def test_a_hard_link_or_a_symbolic_link_to_an_input_is_the_input(capsys, monkeypatch, world_copy):
    monkeypatch.chdir(world_copy)
    os.link("model.onnx", "alias.onnx")            # same inode, another path
    os.symlink("model.card.json", "card-link.json")  # another path, resolves to the card
    refused(capsys, world_copy, "profile", "model.onnx", "-o", "alias.onnx", fragments=["is the input MODEL.onnx"])
    refused(capsys, world_copy, "plan", "scenario.yaml", "-o", "card-link.json", fragments=["model card of digits"])


def test_emit_refuses_a_folder_holding_the_model_or_a_profile(capsys, world_copy, tmp_path):
    """The parent of everything: -o the world folder (absolute) holds the model, the card, the profile."""
    line = refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx",
                   "-o", world_copy, "--force")
    assert "holds the input" in line
    # a deployment folder in which the user keeps the model
    target = world_copy / "deploy"
    shutil.copyfile(world_copy / "model.onnx", target / "model.onnx")
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", target / "model.onnx", "-o", target,
            "--force", fragments=["holds the input --model"])


def test_force_replaces_only_a_deployment_folder(capsys, world_copy):
    notes = world_copy / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("months of work\n")
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx", "-o", notes,
            "--force", fragments=["is not a deployment folder finplan wrote"])
    a_file = world_copy / "deploy-file"
    a_file.write_text("not a folder\n")
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx", "-o", a_file,
            "--force", fragments=["is a file"])  # click says so first
    empty = world_copy / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx", "-o", empty,
                       "--force", "-q")
    assert code == 0, err and (empty / "deployment.json").is_file()
    before = (world_copy / "deploy" / "deployment.json").read_bytes()
    (world_copy / "deploy" / "stale.txt").write_text("left by an older emit\n")
    code, _, err = cli(capsys, "emit", world_copy / "plan.json", "--model", world_copy / "model.onnx",
                       "-o", world_copy / "deploy", "--force", "-q")
    assert code == 0, err
    assert (world_copy / "deploy" / "deployment.json").read_bytes() == before  # same plan, same bytes
    assert not (world_copy / "deploy" / "stale.txt").exists()
    assert not [p for p in world_copy.iterdir() if p.name.startswith(".deploy.")]  # no temporary left


def test_emit_dot_force_without_inputs_inside_replaces_the_current_deployment(capsys, monkeypatch, world_copy):
    """``-o .`` (no name, no parent in the path as written) works when '.' is a deployment."""
    monkeypatch.chdir(world_copy / "deploy")
    code, _, err = cli(capsys, "emit", "../plan.json", "--model", "../model.onnx", "-o", ".", "--force", "-q")
    assert code == 0, err
    assert "Traceback" not in err
    assert json.loads((world_copy / "deploy" / "deployment.json").read_text())["schema"] == "finplan.deployment/1"


def _folder(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / "deployment.json").write_text(marker)
    return path


def test_replace_folder_swaps_in_one_step_and_deletes_the_old(tmp_path):
    target, new = _folder(tmp_path / "deploy", "old"), _folder(tmp_path / ".deploy.tmp", "new")
    fileio.replace_folder(new, target)
    assert (target / "deployment.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]


@pytest.mark.parametrize("exchange", [True, False])
@pytest.mark.parametrize("fail", [KeyboardInterrupt, OSError])
def test_an_interrupted_swap_leaves_a_deployment(tmp_path, monkeypatch, exchange, fail):
    """Interrupted at the rename that puts the new folder in place: the old deployment stays
    (atomic exchange: nothing happened; two renames: the first is undone)."""
    target, new = _folder(tmp_path / "deploy", "old"), _folder(tmp_path / ".deploy.tmp", "new")
    real_rename = os.rename

    def interrupted_exchange(a, b):
        raise fail("interrupted")

    def rename(a, b):
        if Path(a) == new:
            raise fail("interrupted")
        real_rename(a, b)

    if exchange:
        monkeypatch.setattr(fileio, "exchange_paths", interrupted_exchange)
    else:
        monkeypatch.setattr(fileio, "exchange_paths", lambda a, b: False)
        monkeypatch.setattr(fileio.os, "rename", rename)
    with pytest.raises(fail):
        fileio.replace_folder(new, target)
    assert (target / "deployment.json").read_text() == "old"


def test_exchange_paths_swaps_two_folders_or_says_it_cannot(tmp_path):
    a, b = _folder(tmp_path / "a", "A"), _folder(tmp_path / "b", "B")
    if fileio.exchange_paths(a, b):
        assert (a / "deployment.json").read_text() == "B" and (b / "deployment.json").read_text() == "A"
    else:  # a file system without RENAME_EXCHANGE: nothing changed, the fallback renames run
        assert (a / "deployment.json").read_text() == "A"


def test_the_guard_itself_compares_paths_inodes_and_parents(tmp_path):
    model = tmp_path / "in" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"x")
    for output in (model, tmp_path / "in" / "." / "model.onnx", tmp_path / "in", tmp_path):
        with pytest.raises(FinplanInputError) as error:
            fileio.refuse_outputs_over_inputs({"-o": output}, {"MODEL": model})
        assert error.value.field == "-o"
    fileio.refuse_outputs_over_inputs({"-o": tmp_path / "in" / "other.onnx", "--x": None}, {"MODEL": model, "y": None})
