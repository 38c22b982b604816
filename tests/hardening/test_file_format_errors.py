"""Class 2: every file format error is one line (exit 2, no traceback, nothing written): .npz,
YAML and JSON with line and column, a folder where a file is expected, ONNX, images, CSV."""
from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
from hardening_helpers import refused

from finplan import fileio
from finplan.errors import FinplanInputError


def _bad_npz(folder, kind: str):
    path = folder / f"{kind}.npz"
    if kind == "not-a-zip":
        path.write_bytes(b"this is not a zip archive at all\n" * 10)
    elif kind == "truncated":
        buffer = io.BytesIO()
        np.savez(buffer, x=np.zeros((8, 1, 32, 32), np.float32))
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "pickled":
        np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    elif kind == "member-not-npy":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", b"no npy header here")
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    return path


NPZ_KINDS = ["not-a-zip", "truncated", "pickled", "member-not-npy", "folder", "empty"]


@pytest.mark.parametrize("kind", NPZ_KINDS)
def test_a_bad_npz_as_calibration_data_is_one_line(capsys, world_copy, kind):
    bad = _bad_npz(world_copy, kind)
    line = refused(capsys, world_copy, "profile", world_copy / "model.onnx", "--calib", bad, "-o",
                   world_copy / "new.profile.json", "--budget-s", "0.1")
    assert str(bad) in line


@pytest.mark.parametrize("command", ["run", "verify"])
@pytest.mark.parametrize("kind", ["not-a-zip", "truncated", "folder"])
def test_a_bad_npz_as_run_or_verify_data_is_one_line(capsys, world_copy, command, kind):
    bad = _bad_npz(world_copy, kind)
    extra = ["--model", world_copy / "model.onnx"] if command == "verify" else []
    line = refused(capsys, world_copy, command, world_copy / "deploy", "--data", bad, *extra)
    assert ("is a folder" in line) == (kind == "folder")


def test_yaml_syntax_errors_name_the_line_and_column(capsys, world_copy):
    scenario = world_copy / "scenario.yaml"
    scenario.write_text(scenario.read_text().replace("  - name: digits", "  - name: digits: oops"))
    refused(capsys, world_copy, "plan", scenario, fragments=["not valid YAML", "line 4, column"])
    (world_copy / "tabs.yaml").write_text("schema: finplan.scenario/1\napplications:\n\t- name: x\n")
    refused(capsys, world_copy, "plan", world_copy / "tabs.yaml", fragments=["line 3, column 1"])
    (world_copy / "unclosed.yaml").write_text("schema: finplan.scenario/1\nnetwork: {nodes: [\n")
    refused(capsys, world_copy, "plan", world_copy / "unclosed.yaml", fragments=["not valid YAML", "line 3"])


def test_json_syntax_errors_name_the_line_and_column(capsys, world_copy):
    plan = world_copy / "plan.json"
    text = plan.read_text().splitlines()
    text[3] = text[3] + ","  # a trailing comma on line 4
    plan.write_text("\n".join(text) + "\n")
    line = refused(capsys, world_copy, "show", plan, fragments=["not valid JSON"])
    assert re.search(r"line \d+, column \d+: ", line), line
    (world_copy / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, world_copy, "show", world_copy / "deep.json", fragments=["nested too deeply"])


def test_a_folder_where_a_file_is_expected_says_so(capsys, world_copy):
    (world_copy / "folder.onnx").mkdir()
    refused(capsys, world_copy, "profile", world_copy / "folder.onnx", fragments=["is a folder; expected a model file"])
    network = world_copy / "network.json"
    (world_copy / "profile-folder.json").mkdir()
    network.write_text(network.read_text().replace('"device.profile.json"', '"profile-folder.json"'))
    refused(capsys, world_copy, "plan", world_copy / "scenario.yaml", fragments=["is a folder; expected a profile file"])
    network.write_text(network.read_text().replace('"profile-folder.json"', '"device.profile.json"'))
    (world_copy / "card-folder.json").mkdir()
    refused(capsys, world_copy, "plan", "--model", world_copy / "card-folder.json", "--network",
            world_copy / "network.json", "--source", "device", "--max-latency", "5ms", "--min-accuracy", "0.5",
            fragments=["is a folder; expected a JSON file"])
    (world_copy / "energy-folder.csv").mkdir()
    refused(capsys, world_copy, "profile", world_copy / "model.onnx", "--energy", "external", "--energy-file",
            world_copy / "energy-folder.csv", fragments=["is a folder"])


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 50, b"not protobuf at all, just text\n"])
def test_a_corrupt_onnx_file_is_one_line(capsys, world_copy, content):
    bad = world_copy / "bad.onnx"
    bad.write_bytes(content)
    refused(capsys, world_copy, "inspect", bad, fragments=[str(bad), "not an ONNX model"])
    refused(capsys, world_copy, "emit", world_copy / "plan.json", "--model", bad, "-o", world_copy / "out",
            fragments=["not an ONNX model"])


def test_a_corrupt_image_in_an_image_folder_is_one_line(capsys, world_copy):
    from PIL import Image

    images = world_copy / "images"
    (images / "0").mkdir(parents=True)
    (images / "1").mkdir()
    Image.new("L", (8, 8), 128).save(images / "0" / "good.png")
    (images / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    refused(capsys, world_copy, "run", world_copy / "deploy", "--data", images,
            fragments=["broken.png", "cannot read as an image"])
    (images / "1" / "broken.png").unlink()
    (images / "1" / "folder.png").mkdir()
    refused(capsys, world_copy, "run", world_copy / "deploy", "--data", images, fragments=["folder.png"])


def test_a_short_csv_row_in_an_energy_file_is_one_line(capsys, world_copy):
    energy = world_copy / "meter.csv"
    energy.write_text("name,energy_j\nblock1,0.001\nblock2\n")
    refused(capsys, world_copy, "profile", world_copy / "model.onnx", "--energy", "external", "--energy-file", energy,
            "-o", world_copy / "p.json", fragments=["line 3", "expected a name and an energy_j"])


def test_not_utf8_text_is_one_line(capsys, world_copy):
    (world_copy / "latin1.yaml").write_bytes("schema: finplan.scenario/1 # caf\xe9\n".encode("latin-1"))
    refused(capsys, world_copy, "plan", world_copy / "latin1.yaml", fragments=["not UTF-8"])


def test_load_npz_reads_every_array_and_refuses_a_zip_bomb(tmp_path, monkeypatch):
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.zeros((4, 3), np.float32), mask=np.ones(4, bool))
    arrays = fileio.load_npz(good)
    assert sorted(arrays) == ["mask", "x"] and arrays["x"].shape == (4, 3)
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros(1_000_000, np.float64))  # 8 MB inflated, a few kB on disk
    monkeypatch.setattr(fileio, "MAX_ARRAY_BYTES", 1_000_000)
    with pytest.raises(FinplanInputError, match="once inflated"):
        fileio.load_npz(bomb)
