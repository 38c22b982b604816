"""The profiler on models with several inputs of any dtype and several tensors across a cut.

A BERT-shaped toy (int64 ids, an int64 or bool mask read by every layer) and a CNN with a skip
from block 1 to block 3: calibration scores equal the whole model's, block ``output_bytes`` is
the live set's sum with the per-tensor list in profile and card, and bad data is one line.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from finplan.cli.main import main
from finplan.hardware_profiles import validate_card, validate_profile
from finplan.profiler import profile_model
from finplan.profiler.calibration import collect_scores, softmax_scores
from onnx_builders import text_inputs, tiny_branchy_model, tiny_text_model

FAST = dict(budget_s=0.2, energy="power-model", power_w=5.0, threads=1)


@pytest.fixture(scope="session")
def text_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.onnx"
    onnx.save(tiny_text_model(), str(path))
    return path


@pytest.fixture(scope="session")
def text_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("text-data") / "text.npz"
    inputs = text_inputs(30, seed=3)
    np.savez(path, **inputs, y=np.random.default_rng(3).integers(0, 3, 30))
    return path


def test_profile_and_card_of_a_two_input_model(text_path, text_npz):
    result = profile_model(text_path, calib=str(text_npz), need_card=True, **FAST)
    profile, card = validate_profile(result.profile), validate_card(result.card)
    assert profile["whole_model"]["split_check_max_abs_diff"] <= 1e-6
    blocks = {b["name"]: b for b in profile["blocks"]}
    # the int64 mask crosses every cut next to the layer output: 6 tokens x 8 bytes + 6 x 8 floats x 4 bytes
    assert [t["tensor"] for t in blocks["block1"]["live_set"]] == ["attention_mask", "layer1"]
    assert blocks["block1"]["output_bytes"] == 6 * 8 + 6 * 8 * 4 == sum(t["bytes"] for t in blocks["block1"]["live_set"])
    assert "live_set" not in blocks["block3"] and blocks["block3"]["output_bytes"] == 6 * 8 * 4
    assert card["input_bytes"] == 2 * 6 * 8
    assert card["blocks"][0]["live_set"] == [{"tensor": "attention_mask", "bytes": 48}, {"tensor": "layer1", "bytes": 192}]
    assert card["calibration"]["samples"] == 30
    assert result.summary["timing_input"].startswith("first 1 calibration sample")
    # the runtime-stage probe runs its fused first stage on both named inputs
    assert profile["stage_overhead_s"]["probe_parts"] == ["block1", "exit1"]


def test_calibration_scores_equal_the_whole_model_on_int64_inputs(text_path, text_npz):
    """The card's per-sample confidence is the whole model's softmax on the same ids and mask."""
    card = profile_model(text_path, calib=str(text_npz), need_card=True, **FAST).card
    data = dict(np.load(text_npz))
    session = ort.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
    outputs = session.run(["exit1", "exit2", "exit3"], {k: data[k] for k in ("input_ids", "attention_mask")})
    for scores, logits in zip(card["calibration"]["exits"], outputs):
        confidence, _, predicted = softmax_scores(logits)
        np.testing.assert_allclose(scores["confidence"], confidence, rtol=1e-6)
        assert scores["predicted"] == predicted.tolist()


def test_without_calib_the_inputs_are_synthesised_per_dtype_and_said(text_path, tmp_path):
    result = profile_model(text_path, **FAST)
    said = result.profile["timing"]["input"]
    assert "input_ids zeros" in said and "not knowable" in said and "attention_mask ones" in said
    bool_model = tmp_path / "bool.onnx"
    onnx.save(tiny_text_model(mask_dtype=onnx.TensorProto.BOOL), str(bool_model))
    profile = validate_profile(profile_model(bool_model, **FAST).profile)
    assert "attention_mask ones" in profile["timing"]["input"]
    assert profile["blocks"][0]["live_set"][0] == {"tensor": "attention_mask", "dtype": "bool", "shape": ["batch", 6],
                                                   "bytes": 6}


def test_a_skip_from_block_1_to_block_3_is_charged_on_both_cuts(tmp_path):
    path = tmp_path / "skip.onnx"
    onnx.save(tiny_branchy_model(skip_to_block3=True), str(path))
    profile = validate_profile(profile_model(path, **FAST).profile)
    assert profile["whole_model"]["split_check_max_abs_diff"] <= 1e-6
    block1, block2 = profile["blocks"][:2]
    assert [t["tensor"] for t in block1["live_set"]] == ["block1"] and block1["output_bytes"] == 256
    assert [t["tensor"] for t in block2["live_set"]] == ["block1", "block2"] and block2["output_bytes"] == 512


def test_collect_scores_takes_named_inputs():
    x = {"a": np.arange(10, dtype=np.int64)[:, None], "b": np.ones((10, 1), bool)}
    seen = []

    def run(batch):
        seen.append(sorted((k, len(v)) for k, v in batch.items()))
        return [np.stack([batch["a"][:, 0] * 0.0, batch["a"][:, 0] * 1.0], axis=1)]

    scores = collect_scores(run, x, None, ["e"], batch_size=4)
    assert seen == [[("a", 4), ("b", 4)], [("a", 4), ("b", 4)], [("a", 2), ("b", 2)]]
    assert scores.samples == 10 and scores.predicted[0].tolist() == [0] + [1] * 9


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


BAD_DATA = {
    "missing input": (lambda d: {"input_ids": d["input_ids"], "y": d["y"]}, ["attention_mask"]),
    "unknown array": (lambda d: {**d, "token_type_ids": d["input_ids"]}, ["token_type_ids"]),
    "sample counts differ": (lambda d: {**d, "attention_mask": d["attention_mask"][:5]}, ["sample"]),
    "float64 for an int64 input": (lambda d: {**d, "input_ids": d["input_ids"].astype(np.float64)},
                                   ["input_ids", "float64", "int64"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_calibration_data_is_one_line_and_writes_nothing(case, capsys, tmp_path, text_path, text_npz):
    change, fragments = BAD_DATA[case]
    data = tmp_path / "bad.npz"
    np.savez(data, **change(dict(np.load(text_npz))))
    out = tmp_path / "p.json"
    code, stdout, err = _cli(capsys, "profile", text_path, "--calib", data, "-o", out, "--budget-s", "0.2",
                             "--energy", "power-model", "--power-w", "5", "--quiet")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out.exists()


def test_profile_cli_json_on_a_two_input_model(capsys, text_path):
    code, stdout, err = _cli(capsys, "profile", text_path, "--json", "--budget-s", "0.2", "--energy", "power-model",
                             "--power-w", "5", "--threads", "1")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["profile"]["blocks"][1]["live_set"][0]["tensor"] == "attention_mask"


def test_profile_text_output_names_the_tensors_behind_out_bytes(capsys, text_path):
    code, stdout, err = _cli(capsys, "profile", text_path, "--budget-s", "0.2", "--energy", "power-model",
                             "--power-w", "5", "--threads", "1", "--quiet")
    assert code == 0, err
    assert "block1: out B = attention_mask (int64) 48 + layer1 (float32) 192" in stdout
    assert "timing input: synthetic: input_ids zeros (int64: valid ids are not knowable" in stdout
