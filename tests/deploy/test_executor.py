"""The local executor and NodeRuntime: exit decisions, per-sample batch splitting, links."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import LAYOUTS
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.node_runtime import NodeRuntime
from finplan.deploy.policy import max_softmax
from finplan.deploy.verify import verify


def _softmax_max(logits):
    """max softmax probability and argmax, written out here (not the library's scorer)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return p.max(axis=1), p.argmax(axis=1)


def expected_exits(whole, threshold):
    """Direct computation from the whole model's exit scores: exit1 when its max softmax reaches the
    threshold, else exit2 (with the argmax of that exit's logits)."""
    confidence, predicted1 = _softmax_max(whole["exit1"])
    _, predicted2 = _softmax_max(whole["exit2"])
    early = confidence >= threshold if threshold is not None else np.zeros(len(confidence), bool)
    return np.where(early, "exit1", "exit2"), np.where(early, predicted1, predicted2)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("batch_size", [1, 7, 96])
def test_exit_decisions_match_direct_computation(deployments, layout, batch_size, inputs, whole_model_outputs):
    folder, _, thresholds = deployments[layout]
    x, y, _ = inputs
    m = LocalExecutor(folder).run(x, y, batch_size=batch_size)
    names, predictions = expected_exits(whole_model_outputs, thresholds.get("exit1"))
    assert m.exit_names == list(names)
    np.testing.assert_array_equal(m.predictions, predictions)
    assert np.all(np.isfinite(m.latency_s)) and np.all(m.latency_s > 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_equivalence_check_passes(deployments, layout, tiny, inputs):
    folder, _, _ = deployments[layout]
    result = verify(folder, tiny[0], inputs[0], batch_size=32)
    assert result.passed, result.to_dict()
    assert result.max_diff <= 1e-5 and result.decision_mismatches == 0
    assert set(result.max_abs_diff) == ({"exit1", "exit2"} if LAYOUTS[layout][1] else {"exit2"})


def test_batch_is_split_per_sample(deployments, inputs, whole_model_outputs, threshold):
    """In one batch some samples exit at exit1 and some do not: the downstream part runs only on the rest."""
    folder, _, _ = deployments["one-dynamic"]
    runtime = NodeRuntime(folder / "device")
    x = inputs[0]
    confidence, _ = max_softmax(whole_model_outputs["exit1"])
    early = int(np.sum(confidence >= threshold))
    assert 0 < early < len(x)  # the fixture's threshold makes this a mixed batch
    result = runtime.process(x, entry="x")
    assert result.stage_samples == [(runtime.stages[0].part, len(x)), (runtime.stages[1].part, len(x) - early)]
    assert result.block_samples == {"block1": len(x), "block2": len(x) - early, "block3": len(x) - early}
    assert result.exit_samples == {"exit1": len(x), "exit2": len(x) - early}
    assert result.forward is None and sum(n == "exit1" for n in result.exit_names) == early


def test_forward_carries_only_the_remaining_samples(deployments, inputs, whole_model_outputs, threshold):
    folder, _, _ = deployments["three-dynamic"]
    runtime = NodeRuntime(folder / "device")
    x = inputs[0][:40]
    result = runtime.process(x, entry="x")
    confidence, _ = max_softmax(whole_model_outputs["exit1"][:40])
    staying = np.flatnonzero(confidence < threshold)
    np.testing.assert_array_equal(result.forward.indices, staying)
    assert result.forward.tensor.shape[0] == staying.size and result.forward.node == "edge"
    assert result.forward.tensor_name == "block1"
    assert result.bytes_out == result.forward.tensor.nbytes == staying.size * 256
    assert all(result.exit_names[i] is None for i in staying)
    assert np.isnan(result.confidences[staying]).all() and (result.predictions[staying] == -1).all()


def test_all_exit_early_skips_downstream_nodes(deployments, inputs, whole_model_outputs, threshold):
    folder, _, _ = deployments["three-dynamic"]
    confidence, _ = max_softmax(whole_model_outputs["exit1"])
    confident = inputs[0][confidence >= threshold]
    executor = LocalExecutor(folder)
    m = executor.run(confident, batch_size=len(confident))
    assert set(m.exit_names) == {"exit1"}
    assert m.node_calls == {"device": 1, "edge": 0, "cloud": 0}
    assert m.block_samples["edge"] == {} and m.link_bytes == {}


def test_counts_and_bytes_per_link(deployments, inputs):
    folder, _, _ = deployments["three-dynamic"]
    x, y, _ = inputs
    m = LocalExecutor(folder).run(x, y, batch_size=8)
    forwarded = sum(n == "exit2" for n in m.exit_names)
    assert m.block_samples == {"device": {"block1": 96}, "edge": {"block2": forwarded}, "cloud": {"block3": forwarded}}
    assert m.link_bytes == {"device->edge": forwarded * 256, "edge->cloud": forwarded * 256}
    assert m.link_samples == {"device->edge": forwarded, "edge->cloud": forwarded}


def test_link_emulation_delays_by_the_link_model(deployments, inputs):
    folder, _, _ = deployments["three-static"]
    x = inputs[0][:4]
    plain = LocalExecutor(folder).run(x, batch_size=1)
    emulated = LocalExecutor(folder, emulate_links=True).run(x, batch_size=1)
    # two hops of 256 bytes on 1e8 bit/s links with 1 ms latency each, per sample
    per_hop = 256 * 8 / 1e8 + 0.001
    assert emulated.link_delay_s["device->edge"] == pytest.approx(4 * per_hop)
    assert plain.link_delay_s["device->edge"] == 0.0
    assert np.all(emulated.latency_s >= 2 * per_hop)


def test_softmax_headed_exit_uses_max_probability(tmp_path, plan_factory, inputs):
    """An exit head that already ends in Softmax is scored on its probabilities (as the profiler does)."""
    import onnx
    from onnx import helper

    from finplan.contract import Contract, Exit, model_hash, read_contract, write_contract
    from finplan.deploy.emit import emit
    from finplan.deploy.manifest import load_manifest
    from finplan.deploy.policy import max_probability
    from onnx_builders import tiny_branchy_model

    model = tiny_branchy_model()
    model.graph.node.append(helper.make_node("Softmax", ["exit1"], ["exit1_prob"], axis=1, name="exit1/Softmax"))
    model.graph.output.append(helper.make_tensor_value_info("exit1_prob", onnx.TensorProto.FLOAT, ["batch", 3]))
    contract = read_contract(model)
    exits = (Exit("exit1", "block1", "exit1_prob"), contract.exits[1])
    write_contract(model, Contract(contract.input, contract.blocks, exits))
    path = tmp_path / "softmax-head.onnx"
    onnx.save(model, path)
    x = inputs[0]
    import onnxruntime as ort

    probs, final = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["exit1_prob", "exit2"], {"x": x})
    confidence, _ = max_probability(probs)
    threshold = float(np.median(confidence))
    out = tmp_path / "deploy"
    emit(plan_factory(["device", "edge", "edge"], model_hash=model_hash(model), thresholds={"exit1": threshold}), path, out)
    assert load_manifest(out / "device").stages[0].exits[0].policy == "max_probability"
    m = LocalExecutor(out).run(x, batch_size=16)
    assert m.exit_names == ["exit1" if c >= threshold else "exit2" for c in confidence]
    assert verify(out, path, x).passed


def test_input_sent_from_a_source_that_runs_no_block(plan_factory, tmp_path, tiny, inputs):
    """--raw-offload plans: the source only sends the raw input; the transfer is counted and emulated."""
    import json

    from finplan.deploy.emit import emit

    plan = plan_factory(["edge", "edge", "cloud"])
    doc = json.loads(plan.read_text())
    doc["applications"][0]["source"] = "device"
    plan.write_text(json.dumps(doc))
    out = tmp_path / "raw"
    emit(plan, tiny[0], out)
    assert json.loads((out / "deployment.json").read_text())["nodes"] == ["edge", "cloud"]
    m = LocalExecutor(out, emulate_links=True).run(inputs[0][:5], batch_size=5)
    assert m.link_bytes == {"device->edge": 5 * 256, "edge->cloud": 5 * 256}
    assert m.link_delay_s["device->edge"] == pytest.approx(5 * 256 * 8 / 1e8 + 0.001)


def test_every_stage_is_warmed_up_on_zeros_at_load(deployments):
    """Loading a node runs each stage on a batch-1 zero tensor (first runs allocate memory
    arenas; the plan predicts the steady state); a stage with a symbolic non-batch size is skipped."""
    import dataclasses

    from finplan.deploy.manifest import TensorSpec

    runtime = NodeRuntime(deployments["one-dynamic"][0] / "device")

    class Recording:
        def __init__(self):
            self.feeds = []

        def run(self, outputs, feed):
            self.feeds.append(feed)

    runtime._sessions = [Recording() for _ in runtime._sessions]
    runtime.warm_up(runs=2)
    for stage, session in zip(runtime.manifest.stages, runtime._sessions):
        spec = stage.inputs[0]
        assert len(session.feeds) == 2
        tensor = session.feeds[0][spec.name]
        assert tensor.shape == (1, *spec.shape[1:]) and tensor.dtype == spec.np_dtype and not tensor.any()
    first = runtime.manifest.stages[0]
    symbolic = dataclasses.replace(first, inputs=(TensorSpec(first.inputs[0].name, ("batch", "length"), "float32"),))
    runtime.manifest = dataclasses.replace(runtime.manifest, stages=(symbolic, *runtime.manifest.stages[1:]))
    runtime._sessions = [Recording() for _ in runtime._sessions]
    runtime.warm_up(runs=1)
    assert runtime._sessions[0].feeds == [] and all(len(s.feeds) == 1 for s in runtime._sessions[1:])
