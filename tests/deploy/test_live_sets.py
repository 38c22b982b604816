"""Deployments of models whose cuts carry several tensors (issue 11): a two-input text model
(int64 ids + an int64 mask read by every layer, or a float mask computed once in block 1) and a
conv net with a skip from block 1 to block 3, emitted on 2-3 nodes.

What must hold: the chained parts equal the whole model (verify's max abs diff <= 1e-5 and no
exit decision differs), the run's exit rates are the plan's (computed here from the whole
model's exit scores with the plan's thresholds), and every transfer carries exactly the live
set: the measured bytes per sample sent are the live set's, tensor by tensor."""
from __future__ import annotations

import json

import numpy as np
import pytest

from finplan.cli.main import main
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.manifest import load_manifest
from finplan.deploy.verify import verify

from .helpers import LIVE_SET_MODELS, LIVE_SET_SAMPLES, assert_bad_input, cli, live_set_deployment

N = LIVE_SET_SAMPLES


@pytest.fixture(scope="module", params=sorted(LIVE_SET_MODELS))
def case(request, tmp_path_factory):
    return live_set_deployment(tmp_path_factory.mktemp(request.param), request.param)


def test_the_manifests_carry_the_live_sets(case):
    live, contract = case["live"], case["contract"]
    doc = json.loads((case["folder"] / "deployment.json").read_text())
    assert [t["name"] for t in doc["inputs"]] == list(contract.inputs)
    seen_hops = 0
    for node in doc["nodes"]:
        manifest = load_manifest(case["folder"] / node)
        for stage in manifest.stages:
            last = contract.block_index(stage.blocks[-1]) + 1
            if stage.next is not None:
                seen_hops += 1
                assert stage.next.names == tuple(t.name for t in live[last])
                assert stage.next.tensor == contract.blocks[last - 1].output
        for entry in manifest.entries:
            stage = manifest.stages[entry.stage]
            first = contract.block_index(stage.blocks[0])
            assert entry.names == tuple(t.name for t in live[first])
            assert {t.name for t in stage.inputs} <= set(entry.names)
    assert seen_hops >= 2
    if case["name"] != "text-mask-inside":  # that layout keeps blocks 1-2 on one node
        assert any(len(s) > 1 for s in live[1:-1]), "the fixture should carry several tensors across a cut"


def test_chained_parts_equal_the_whole_model(case):
    result = verify(case["folder"], case["model"], case["x"], batch_size=16)
    assert result.passed and result.max_diff <= 1e-5 and result.decision_mismatches == 0, result.to_dict()
    assert result.samples == N


def test_run_exit_rates_are_the_plans_and_bytes_are_the_live_sets(case):
    executor = LocalExecutor(case["folder"])
    measured = executor.run(case["x"], batch_size=8)
    counts = {n: measured.exit_names.count(n) / N for n in case["rates"]}
    assert counts == case["rates"]
    live, contract = case["live"], case["contract"]
    app = case["doc"]["applications"][0]
    for transfer in app["transfers"]:
        key = f"{transfer['from']}->{transfer['to']}"
        k = contract.block_index(transfer["after_block"]) + 1
        sent = measured.link_samples[key]
        assert sent > 0
        assert measured.link_bytes[key] == sent * sum(t.bytes_per_sample for t in live[k]) == sent * transfer["bytes"]
        assert measured.link_tensor_bytes[key] == {t.name: sent * t.bytes_per_sample for t in live[k]}


def test_the_cli_runs_and_verifies_with_named_inputs(case, capsys):
    folder, data = str(case["folder"]), str(case["data"])
    assert main(["verify", folder, "--model", str(case["model"]), "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
    assert main(["run", folder, "--data", data, "--batch-size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exit_rates"] == case["rates"]
    for key, link in report["links"].items():
        assert link["bytes_per_sample_sent"] == link["predicted_bytes_per_sample"], (key, link)


# --------------------------------------------------------------------------- bad input, through the CLI

@pytest.fixture(scope="module")
def text_case(tmp_path_factory):
    return live_set_deployment(tmp_path_factory.mktemp("text-bad"), "text")


def _bad_npz(tmp_path, case, **change):
    arrays = {k: v for k, v in case["x"].items()}
    for name, value in change.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, fragments", [
    ({"attention_mask": None}, ["bad.npz: attention_mask: ", "no array for graph input 'attention_mask'",
                                "expected arrays input_ids, attention_mask"]),
    ({"token_type_ids": np.zeros((LIVE_SET_SAMPLES, 6), np.int64)},
     ["bad.npz: token_type_ids: ", "not a graph input", "expected arrays input_ids, attention_mask"]),
    ({"input_ids": np.zeros((LIVE_SET_SAMPLES, 6), np.int32)},
     ["bad.npz: input_ids: ", "dtype int32", "dtype int64", "never casts"]),
    ({"input_ids": np.zeros((LIVE_SET_SAMPLES, 6), np.float64)},
     ["bad.npz: input_ids: ", "dtype float64", "dtype int64"]),
    ({"attention_mask": np.ones((5, 6), np.int64)},
     ["bad.npz: attention_mask: ", "different numbers of samples", f"input_ids {LIVE_SET_SAMPLES}, attention_mask 5"]),
    ({"y": np.full(LIVE_SET_SAMPLES, 7)}, ["bad.npz: y: ", "labels out of range", "0..2"]),
])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_bad_named_inputs_are_one_line_naming_file_array_and_expectation(capsys, tmp_path, text_case, change, fragments,
                                                                        command):
    data = _bad_npz(tmp_path, text_case, **change)
    argv = [command, text_case["folder"], "--data", data] + (["--model", text_case["model"]] if command == "verify" else [])
    code, out, err = cli(capsys, *argv)
    assert_bad_input(code, out, err, *fragments)


def test_a_dataset_for_a_two_input_model_is_refused(capsys, text_case):
    code, out, err = cli(capsys, "run", text_case["folder"], "--data", "digits")
    assert_bad_input(code, out, err, "digits: --data: ", "the model has 2 inputs", "input_ids, attention_mask")


@pytest.mark.parametrize("command", ["emit", "verify"])
def test_a_model_without_a_contract_names_finplan_annotate(capsys, tmp_path, text_case, command):
    import onnx

    from onnx_builders import tiny_text_model

    bare = tmp_path / "bare.onnx"
    onnx.save(tiny_text_model(layers=3, with_contract=False), bare)
    plan = text_case["folder"] / "plan.json"
    argv = (["emit", plan, "--model", bare, "-o", tmp_path / "out"] if command == "emit" else
            ["verify", text_case["folder"], "--model", bare, "--data", text_case["data"]])
    code, out, err = cli(capsys, *argv)
    assert_bad_input(code, out, err, "bare.onnx: ", "has no finplan contract", "finplan annotate")
    assert not (tmp_path / "out").exists()


def test_a_manifest_written_before_live_sets_still_runs(capsys, deployments, tmp_path):
    """finplan.manifest/1 single-tensor manifests (``input``, ``next.tensor``, entries without
    ``tensors``) still load and run: the schema major stays 1."""
    import hashlib
    import shutil

    folder = tmp_path / "legacy"
    shutil.copytree(deployments["three-dynamic"][0], folder)
    index = json.loads((folder / "deployment.json").read_text())
    for node in index["nodes"]:
        path = folder / node / "manifest.json"
        m = json.loads(path.read_text())
        m["input"] = m.pop("inputs")[0]
        for entry in m["entries"]:
            entry.pop("tensors")
        for stage in m["stages"]:
            if stage["next"] is not None:
                stage["next"].pop("tensors")
        path.write_text(json.dumps(m))
        index["sha256"][f"{node}/manifest.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    index["input"] = index.pop("inputs")[0]
    (folder / "deployment.json").write_text(json.dumps(index))
    x = np.random.default_rng(0).standard_normal((20, 1, 8, 8)).astype(np.float32)
    legacy = LocalExecutor(folder).run(x, batch_size=4)
    fresh = LocalExecutor(deployments["three-dynamic"][0]).run(x, batch_size=4)
    assert legacy.exit_names == fresh.exit_names and legacy.link_bytes == fresh.link_bytes
    assert np.array_equal(legacy.predictions, fresh.predictions)
