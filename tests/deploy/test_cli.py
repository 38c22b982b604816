"""finplan emit / run / verify through the CLI, and every bad input: exit code 2, one line, no traceback."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from helpers import assert_bad_input, cli

from finplan.deploy.manifest import sha256_file


def test_emit_run_verify_happy_path(capsys, tiny, inputs, plan_factory, tmp_path, threshold):
    plan = plan_factory(["device", "edge", "edge"], thresholds={"exit1": threshold})
    out = tmp_path / "deploy"
    code, stdout, _ = cli(capsys, "emit", plan, "--model", tiny[0], "-o", out)
    assert code == 0 and "device" in stdout and (out / "edge" / "manifest.json").is_file()
    code, stdout, _ = cli(capsys, "verify", out, "--model", tiny[0], "--data", inputs[2], "--json")
    result = json.loads(stdout)
    assert code == 0 and result["passed"] and result["samples"] == 96
    code, stdout, _ = cli(capsys, "run", out, "--data", inputs[2], "--limit", "20", "--batch-size", "4", "--json")
    report = json.loads(stdout)
    assert code == 0 and report["samples"] == 20 and report["batch_size"] == 4
    code, stdout, _ = cli(capsys, "run", out, "--data", inputs[2], "--limit", "5", "--quiet")
    assert code == 0 and "Predicted vs measured, derived or estimated" in stdout and "exit_rate[exit1]" in stdout


def test_verify_fails_with_exit_code_1_when_a_part_computes_something_else(capsys, copy_of, tiny, inputs):
    folder = copy_of("one-static")
    manifest_path = folder / "device" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    part_path = folder / "device" / manifest["stages"][0]["part"]
    part = onnx.load(str(part_path))
    for init in part.graph.initializer:
        if init.name == "b3.b":  # shift a bias: the part still loads but computes other logits
            values = onnx.numpy_helper.to_array(init) + 1.0
            init.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), init.name))
    onnx.save(part, str(part_path))
    manifest["stages"][0]["sha256"] = sha256_file(part_path)  # a consistent but wrong deployment
    manifest_path.write_text(json.dumps(manifest))
    index_path = folder / "deployment.json"  # ... down to the manifest's hash in the index
    index = json.loads(index_path.read_text())
    index["sha256"]["device/manifest.json"] = sha256_file(manifest_path)
    index_path.write_text(json.dumps(index))
    code, stdout, _ = cli(capsys, "verify", folder, "--model", tiny[0], "--data", inputs[2])
    assert code == 1 and "FAIL" in stdout


def test_missing_part(capsys, copy_of, inputs):
    folder = copy_of()
    part = next((folder / "edge").glob("*.onnx"))
    part.unlink()
    code, out, err = cli(capsys, "run", folder, "--data", inputs[2])
    assert_bad_input(code, out, err, "edge/manifest.json", "stages[0].part", "missing")


def test_altered_part(capsys, copy_of, inputs):
    folder = copy_of()
    part = next((folder / "cloud").glob("*.onnx"))
    part.write_bytes(part.read_bytes() + b"\0")
    code, out, err = cli(capsys, "run", folder, "--data", inputs[2])
    assert_bad_input(code, out, err, "cloud/manifest.json", "stages[0].sha256", "altered")


def test_unknown_manifest_major(capsys, copy_of, inputs, tiny):
    folder = copy_of()
    path = folder / "device" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["schema"] = "finplan.manifest/2"
    path.write_text(json.dumps(doc))
    for argv in (("run", folder, "--data", inputs[2]), ("verify", folder, "--model", tiny[0], "--data", inputs[2])):
        code, out, err = cli(capsys, *argv)
        assert_bad_input(code, out, err, "device/manifest.json", "schema", "finplan.manifest/2")


def test_input_of_wrong_shape(capsys, deployments, tmp_path):
    bad = tmp_path / "wrong-shape.npz"
    np.savez(bad, x=np.zeros((4, 1, 9, 9), np.float32))
    code, out, err = cli(capsys, "run", deployments["two-static"][0], "--data", bad)
    assert_bad_input(code, out, err, "wrong-shape.npz", "x", "1x9x9")


def test_input_of_wrong_dtype(capsys, deployments, tmp_path):
    bad = tmp_path / "wrong-dtype.npz"
    np.savez(bad, x=np.full((4, 1, 8, 8), "a"))
    code, out, err = cli(capsys, "run", deployments["two-static"][0], "--data", bad)
    assert_bad_input(code, out, err, "wrong-dtype.npz", "dtype")


def test_node_runtime_names_shape_and_dtype(deployments):
    from finplan.deploy.node_runtime import NodeRuntime
    from finplan.errors import FinplanInputError

    runtime = NodeRuntime(deployments["two-static"][0] / "device")
    assert runtime.input_spec.name == "x" and runtime.input_spec.shape == ("batch", 1, 8, 8)
    with pytest.raises(FinplanInputError) as info:
        runtime.process(np.zeros((2, 1, 8, 8), np.float64), entry="x")
    assert "(2, 1, 8, 8)" in str(info.value) and "float64" in str(info.value) and "float32" in str(info.value)
    with pytest.raises(FinplanInputError, match=r"shape \(2, 1, 9, 8\)"):
        runtime.process(np.zeros((2, 1, 9, 8), np.float32), entry="x")


def test_plan_for_another_model(capsys, plan_factory, tiny, tmp_path):
    plan = plan_factory(model_hash="sha256:" + "1" * 64)
    out = tmp_path / "other"
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", out)
    assert_bad_input(code, o, err, str(plan), "applications[0].model.hash", "another model")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_plan_with_blocks_of_another_model(capsys, plan_factory, tiny, tmp_path):
    plan = plan_factory(model_hash=None)
    doc = json.loads(plan.read_text())
    doc["applications"][0]["placement"][1]["block"] = "conv2"
    plan.write_text(json.dumps(doc))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "x")
    assert_bad_input(code, o, err, "applications[0].placement[1].block", "conv2")


def test_infeasible_plan(capsys, plan_factory, tiny, tmp_path):
    plan = plan_factory(feasible=False)
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "x")
    assert_bad_input(code, o, err, "applications[0].feasible", "infeasible", "over the 1 ms limit")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_unknown_application(capsys, plan_factory, tiny, tmp_path):
    code, o, err = cli(capsys, "emit", plan_factory(), "--model", tiny[0], "-o", tmp_path / "x", "--application", "nope")
    assert_bad_input(code, o, err, "applications", "'nope'", "tiny")


def test_missing_deployment_folder(capsys, tmp_path, tiny, inputs):
    missing = tmp_path / "nowhere"
    for argv in (("run", missing, "--data", inputs[2]), ("verify", missing, "--model", tiny[0], "--data", inputs[2])):
        code, out, err = cli(capsys, *argv)
        assert_bad_input(code, out, err, str(missing), "deployment folder not found")


def test_verify_against_another_model(capsys, deployments, tmp_path, inputs):
    from onnx_builders import tiny_branchy_model

    other = tmp_path / "other.onnx"
    onnx.save(tiny_branchy_model(seed=5), other)
    code, out, err = cli(capsys, "verify", deployments["one-static"][0], "--model", other, "--data", inputs[2])
    assert_bad_input(code, out, err, "other.onnx", "another model")


def test_plan_with_several_applications_needs_a_name(capsys, plan_factory, tiny, tmp_path):
    plan = plan_factory()
    doc = json.loads(plan.read_text())
    second = json.loads(json.dumps(doc["applications"][0]))
    second["name"] = "tiny-2"
    second["placement"] = [{"block": b, "node": "device"} for b in ("block1", "block2", "block3")]
    doc["applications"].append(second)
    plan.write_text(json.dumps(doc))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "x")
    assert_bad_input(code, o, err, "applications", "--application")
    code, o, _ = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "x", "--application", "tiny-2", "--json")
    assert code == 0 and [n["node"] for n in json.loads(o)["nodes"]] == ["device"]
