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
import onnx
import onnxruntime as ort
import pytest

from finplan.cli.main import main
from finplan.contract import model_hash, read_contract
from finplan.deploy.emit import emit
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.manifest import load_manifest
from finplan.deploy.verify import direct_exits, verify
from finplan.onnx_parts import boundaries
from onnx_builders import text_inputs, tiny_branchy_model, tiny_text_model

from .helpers import plan_doc, write_json

N = 48


def _skip_inputs(n, seed=3):
    return {"x": np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)}


MODELS = {
    # name -> (builder, inputs, placement, exits made active before the final one)
    "text": (lambda: tiny_text_model(layers=3), lambda n: text_inputs(n, seed=5), ["device", "edge", "cloud"],
             ["exit1", "exit2"]),
    "text-mask-inside": (lambda: tiny_text_model(layers=3, mask_inside=True), lambda n: text_inputs(n, seed=6),
                         ["device", "device", "edge"], ["exit1", "exit2"]),
    "skip": (lambda: tiny_branchy_model(skip_to_block3=True), _skip_inputs, ["device", "edge", "cloud"], ["exit1"]),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request, tmp_path_factory):
    """(folder, model path, inputs, plan doc, live sets) of one model emitted with thresholds at the
    median confidence of each early exit (so that samples leave at every exit)."""
    from finplan.deploy.policy import max_softmax

    builder, make_inputs, placement, early = MODELS[request.param]
    work = tmp_path_factory.mktemp(request.param)
    model = builder()
    path = work / "model.onnx"
    onnx.save(model, path)
    contract = read_contract(model)
    x = make_inputs(N)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [e.name for e in contract.exits]
    outputs = dict(zip(names, session.run([e.output for e in contract.exits], x)))
    thresholds = {name: float(np.median(max_softmax(outputs[name])[0])) for name in early}
    final = contract.exits[-1].name
    active = [(n, thresholds[n]) for n in early] + [(final, None)]
    expected_names, _ = direct_exits(outputs, active)
    rates = {n: expected_names.count(n) / N for n, _ in active}
    live = boundaries(model, contract)
    blocks = tuple(b.name for b in contract.blocks)
    bytes_after = {"input": sum(t.bytes_per_sample for t in live[0]),
                   **{b: sum(t.bytes_per_sample for t in live[k]) for k, b in enumerate(blocks, start=1)}}
    doc = plan_doc(placement, model_hash=model_hash(model), thresholds=thresholds, final_exit=final, exit_rates=rates,
                   blocks=blocks, exits_after={e.name: e.after for e in contract.exits}, bytes_after=bytes_after)
    plan = write_json(work / "plan.json", doc)
    folder = work / "deploy"
    emit(plan, path, folder)
    np.savez(work / "data.npz", **x)
    return {"folder": folder, "model": path, "x": x, "doc": doc, "live": live, "contract": contract,
            "data": work / "data.npz", "rates": rates, "name": request.param}


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
