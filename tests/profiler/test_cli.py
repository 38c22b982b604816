"""`finplan profile` and `finplan profiles show` through the CLI entry point: output and every bad input.

Bad input must give exit code 2, one line on stderr, no traceback, and no output file; a fault of the
machine (an energy counter that is missing or reads NaN) the same with exit code 1.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from finplan.cli.main import main

FAST = ["--budget-s", "0.2", "--energy", "power-model", "--power-w", "5", "--quiet"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments, exit_code=2):
    assert code == exit_code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("finplan: error:") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_one_line_fault(code, err, *fragments):
    """An EnvironmentFault: the machine, not the inputs (exit code 1), still one line."""
    assert_one_line_error(code, err, *fragments, exit_code=1)


def no_files_left(folder: Path, *names):
    for name in names:
        assert not (folder / name).exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_profile_writes_both_documents_and_prints_tables(capsys, tmp_path, tiny_path, tiny_npz):
    out, card = tmp_path / "p.json", tmp_path / "c.json"
    code, stdout, err = run_cli(capsys, "profile", tiny_path, "--calib", tiny_npz, "-o", out, "--card", card, *FAST)
    assert code == 0, err
    assert "block1" in stdout and "exit2" in stdout and "threshold" in stdout
    assert "energy: ESTIMATED (method power-model)" in stdout
    from finplan.hardware_profiles import load_card, load_profile

    assert load_profile(out)["model"]["hash"] == load_card(card)["hash"]


def test_profile_json_output(capsys, tmp_path, tiny_path):
    code, stdout, _ = run_cli(capsys, "profile", tiny_path, "--json", *FAST)
    assert code == 0
    doc = json.loads(stdout)
    assert doc["profile"]["schema"] == "finplan.profile/1" and doc["summary"]["energy"]["measured"] is False


def test_calibration_shape_mismatch_names_both_shapes(capsys, tmp_path, tiny_path):
    data = tmp_path / "wrong.npz"
    np.savez(data, x=np.zeros((4, 1, 28, 28), np.float32), y=np.zeros(4, np.int64))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--calib", data, "-o", tmp_path / "p.json", *FAST)
    assert_one_line_error(code, err, "1x28x28", "1x8x8")
    no_files_left(tmp_path, "p.json")


def test_calibration_dtype_that_is_not_numbers(capsys, tmp_path, tiny_path):
    data = tmp_path / "text.npz"
    np.savez(data, x=np.array([["a"] * 64] * 2).reshape(2, 1, 8, 8))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--calib", data, "-o", tmp_path / "p.json", *FAST)
    assert_one_line_error(code, err, "dtype")
    no_files_left(tmp_path, "p.json")


def test_labels_out_of_range_for_the_exit_width(capsys, tmp_path, tiny_path):
    data = tmp_path / "labels.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 7]))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--calib", data, "-o", tmp_path / "p.json", *FAST)
    assert_one_line_error(code, err, "labels out of range", "7", "3-class")
    no_files_left(tmp_path, "p.json")


def test_model_onnxruntime_cannot_load(capsys, tmp_path, tiny_path):
    model = onnx.load(str(tiny_path))
    for node in model.graph.node:
        if node.op_type == "Relu" and node.name.startswith("b3"):
            node.op_type, node.domain = "Frobnicate", "com.example"  # no runtime implements it
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    # In a subprocess: onnxruntime could write to file descriptor 2 behind Python's back.
    result = subprocess.run([sys.executable, "-m", "finplan.cli.main", "profile", str(bad), "-o",
                             str(tmp_path / "p.json"), *FAST], capture_output=True, text=True)
    assert_one_line_error(result.returncode, result.stderr, "onnxruntime cannot load", "bad.onnx")
    no_files_left(tmp_path, "p.json")


def test_not_an_onnx_file(capsys, tmp_path):
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"\x00\x01 not protobuf at all")
    code, _, err = run_cli(capsys, "profile", bad, *FAST)
    assert_one_line_error(code, err, "junk.onnx")


def test_unavailable_backend_says_why_and_what_to_use(capsys, tmp_path, tiny_path, monkeypatch):
    monkeypatch.setenv("FINPLAN_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--energy", "rapl", "-o", tmp_path / "p.json",
                           "--budget-s", "0.2", "--quiet")
    assert_one_line_fault(code, err, "rapl is unavailable here", "power-model")
    no_files_left(tmp_path, "p.json")


def _fake_powercap(root: Path, value: str) -> Path:
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(value + "\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def test_counter_reading_nan_stops_without_output(capsys, tmp_path, tiny_path, monkeypatch):
    monkeypatch.setenv("FINPLAN_POWERCAP_ROOT", str(_fake_powercap(tmp_path / "powercap", "nan")))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--energy", "rapl", "-o", tmp_path / "p.json",
                           "--budget-s", "0.2", "--energy-window-s", "0.05", "--quiet")
    assert_one_line_fault(code, err, "energy_uj", "nan")
    no_files_left(tmp_path, "p.json")


def test_counter_reading_backwards_stops_without_output(capsys, tmp_path, tiny_path, monkeypatch):
    root = _fake_powercap(tmp_path / "powercap", "9000000")
    monkeypatch.setenv("FINPLAN_POWERCAP_ROOT", str(root))
    from finplan.profiler.energy.rapl import RaplMeter

    original = RaplMeter._read_zone
    readings = iter(range(9_000_000, 0, -1000))  # each read 1 mJ lower than the last

    def backwards(self, zone, name):
        return next(readings) if name == "energy_uj" else original(self, zone, name)
    monkeypatch.setattr(RaplMeter, "_read_zone", backwards)
    code, _, err = run_cli(capsys, "profile", tiny_path, "--energy", "rapl", "-o", tmp_path / "p.json",
                           "--budget-s", "0.2", "--energy-window-s", "0.05", "--quiet")
    assert_one_line_fault(code, err, "backwards")
    no_files_left(tmp_path, "p.json")


@pytest.mark.parametrize("target", ["missing-folder/p.json", "."])
def test_output_path_that_cannot_be_written(capsys, tmp_path, tiny_path, target):
    code, _, err = run_cli(capsys, "profile", tiny_path, "-o", tmp_path / target, *FAST)
    assert_one_line_error(code, err, "cannot write")


def test_card_without_labels_or_calibration(capsys, tmp_path, tiny_path):
    code, _, err = run_cli(capsys, "profile", tiny_path, "--card", tmp_path / "c.json", *FAST)
    assert_one_line_error(code, err, "--card needs --calib")
    data = tmp_path / "nolabels.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32))
    code, _, err = run_cli(capsys, "profile", tiny_path, "--calib", data, "--card", tmp_path / "c.json", *FAST)
    assert_one_line_error(code, err, "no labels")
    no_files_left(tmp_path, "c.json")


def test_external_file_missing_a_part(capsys, tmp_path, tiny_path):
    energies = tmp_path / "lab.csv"
    energies.write_text("name,energy_j\nblock1,0.1\n")
    code, _, err = run_cli(capsys, "profile", tiny_path, "--energy", "external", "--energy-file", energies,
                           "-o", tmp_path / "p.json", "--budget-s", "0.2", "--quiet")
    assert_one_line_error(code, err, "has no energy for block2")
    no_files_left(tmp_path, "p.json")


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory, tiny_path):
    folder = tmp_path_factory.mktemp("profiles")
    from finplan.hardware_profiles import save_profile
    from finplan.profiler import profile_model

    result = profile_model(tiny_path, budget_s=0.2, energy="power-model", power_w=5.0)
    first = folder / "a.profile.json"
    save_profile(result.profile, first)
    second_doc = json.loads(first.read_text())
    second_doc["device"]["name"] = "edge-box"
    second = folder / "b.profile.json"
    save_profile(second_doc, second)
    other_doc = json.loads(first.read_text())
    other_doc["model"]["hash"] = "sha256:" + "0" * 64
    other = folder / "other.profile.json"
    save_profile(other_doc, other)
    return first, second, other


def test_profiles_show_side_by_side(capsys, two_profiles):
    first, second, _ = two_profiles
    code, stdout, err = run_cli(capsys, "profiles", "show", first, second)
    assert code == 0, err
    assert "edge-box" in stdout and "block3" in stdout and "ESTIMATED" in stdout
    code, stdout, _ = run_cli(capsys, "profiles", "show", first, second, "--json")
    devices = json.loads(stdout)["devices"]
    assert [d["label"] for d in devices][1] == "edge-box"
    profile = json.loads(first.read_text())
    assert devices[0]["intra_op_threads"] == profile["session_options"]["intra_op_threads"]
    assert devices[0]["stage_overhead_s"] == (profile.get("stage_overhead_s") or {}).get("value")


def test_profiles_show_refuses_different_models(capsys, two_profiles):
    first, _, other = two_profiles
    code, _, err = run_cli(capsys, "profiles", "show", first, other)
    assert_one_line_error(code, err, "different models", first.name, other.name)


def test_help_shows_real_examples():
    for argv in (["profile", "--help"], ["profiles", "show", "--help"]):
        result = subprocess.run([sys.executable, "-m", "finplan.cli.main", *argv], capture_output=True, text=True)
        assert result.returncode == 0 and "finplan profile" in result.stdout


def test_energy_a_backend_cannot_resolve_is_a_labelled_estimate_never_0(capsys, tmp_path, tiny_path, monkeypatch):
    """A RAPL counter that does not move gave 0 J per part in silence: compute looked free to the planner."""
    monkeypatch.setenv("FINPLAN_POWERCAP_ROOT", str(_fake_powercap(tmp_path / "powercap", "5000000")))
    code, out, err = run_cli(capsys, "profile", tiny_path, "--energy", "auto", "-o", tmp_path / "p.json",
                             "--budget-s", "0.2", "--energy-window-s", "0.05", "--quiet")
    assert code == 0, err
    profile = json.loads((tmp_path / "p.json").read_text())
    for part in profile["blocks"] + profile["exits"] + [profile["whole_model"]]:
        energy = part["energy_j"]
        assert energy["value"] > 0, energy
        assert energy["method"] == "power-model" and energy["measured"] is False
        assert energy["fallback_from"] == "rapl" and energy["note"].startswith("ESTIMATED")
    assert "FALLBACK" in profile["energy"]["note"]
    assert "warning: rapl could not resolve" in err and "block1" in err and "ESTIMATE" in err
    assert "ESTIMATED by the fallback power model" in out


def test_codecarbon_profile_gives_every_part_a_positive_labelled_energy(capsys, tmp_path, tiny_path, monkeypatch):
    pytest.importorskip("codecarbon", reason="codecarbon is not installed")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "profile", tiny_path, "--energy", "codecarbon", "-o", tmp_path / "p.json",
                             "--budget-s", "0.2", "--energy-window-s", "0.1", "--quiet")
    assert code == 0, err
    profile = json.loads((tmp_path / "p.json").read_text())
    for part in profile["blocks"] + profile["exits"]:
        energy = part["energy_j"]
        assert energy["value"] > 0, energy
        if not energy["measured"]:  # codecarbon's estimate, or the fallback's: either says so
            assert "ESTIMATED" in (energy.get("note") or profile["energy"]["note"])
    assert list(tmp_path.iterdir()) == [tmp_path / "p.json"]  # no emissions.csv
