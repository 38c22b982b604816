"""The branchy-ONNX contract: round trip, hash, and every way a contract can be wrong."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from finplan.contract import (
    METADATA_KEY, Block, Contract, Exit, contract_from_cli, load_branchy_model, model_hash, read_contract,
    strip_node_metadata, validate_contract, write_contract,
)
from finplan.errors import FinplanInputError
from finplan.onnx_parts import TensorInfo, boundaries, describe_branchy, split_branchy
from onnx_builders import text_contract, text_inputs, tiny_branchy_model, tiny_contract, tiny_text_model


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _with_contract(contract_dict, **kwargs):
    model = tiny_branchy_model(with_contract=False, **kwargs)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(contract_dict)
    return model


def test_round_trip_through_file(tmp_path):
    path = _save(tiny_branchy_model(), tmp_path)
    model, contract = load_branchy_model(path)
    assert contract == tiny_contract()
    assert Contract.from_dict(contract.to_dict()) == contract
    assert [b.name for b in contract.blocks] == ["block1", "block2", "block3"]
    assert contract.exits_after("block3") == (Exit("exit2", "block3", "exit2"),)


def test_write_contract_replaces_the_old_one():
    model = tiny_branchy_model()
    other = Contract(("x",), (Block("a", "block1"), Block("b", "block3")), (Exit("e", "b", "exit2"),))
    write_contract(model, other)
    assert [p.key for p in model.metadata_props].count(METADATA_KEY) == 1
    assert read_contract(model) == other
    validate_contract(model, other)  # merging blocks 2 and 3 is a valid coarser cut


def test_contract_from_cli_names_blocks_in_order(tmp_path):
    model = tiny_branchy_model(with_contract=False)
    contract = contract_from_cli(model, ["block1", "mid=block2", "block3"], ["exit1=block1:exit1"])
    assert [b.name for b in contract.blocks] == ["block1", "mid", "block3"]
    validate_contract(model, contract)
    path = _save(model, tmp_path)
    _, loaded = load_branchy_model(path, blocks=["block1", "block2", "block3"], exits=["e=block3:exit2"])
    assert loaded.exits == (Exit("e", "block3", "exit2"),)


def test_hash_ignores_node_metadata_and_contract_but_not_weights():
    model = tiny_branchy_model()
    base = model_hash(model)
    noisy = tiny_branchy_model()
    entry = noisy.graph.node[0].metadata_props.add()
    entry.key, entry.value = "pkg.torch.onnx.stack_trace", "/home/someone/model.py:12"
    noisy.graph.node[1].doc_string = "exported from /abs/path"
    write_contract(noisy, Contract(("x",), (Block("block1", "block1"),), (Exit("e", "block1", "exit1"),)))
    assert model_hash(noisy) == base
    assert model_hash(tiny_branchy_model(seed=1)) != base
    strip_node_metadata(noisy)
    assert not noisy.graph.node[0].metadata_props


def test_blocks_chained_equal_the_whole_model():
    model = tiny_branchy_model(residual=True)
    blocks, exits = split_branchy(model, tiny_contract())
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip(["exit1", "exit2"], whole.run(["exit1", "exit2"], {"x": x})))
    tensor, outputs = x, {}
    for block in blocks:
        session = ort.InferenceSession(block.model.SerializeToString(), providers=["CPUExecutionProvider"])
        tensor = session.run(None, {block.inputs[0]: tensor})[0]
        outputs[block.outputs[0]] = tensor
    for exit_ in exits:
        onnx.checker.check_model(exit_.model, full_check=True)
        session = ort.InferenceSession(exit_.model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {exit_.inputs[0]: outputs[exit_.inputs[0]]})[0]
        np.testing.assert_allclose(got, expected[exit_.name], atol=1e-6)


def test_describe_reports_shapes_and_sizes():
    summary = describe_branchy(tiny_branchy_model(), tiny_contract())
    assert summary["input_bytes"] == 1 * 8 * 8 * 4
    block1 = summary["blocks"][0]
    assert block1["output_shape"][1:] == [4, 4, 4] and block1["output_bytes"] == 4 * 4 * 4 * 4
    assert block1["params_bytes"] == (4 * 1 * 3 * 3 + 4) * 4  # one 3x3 conv, 1 -> 4 channels
    assert summary["exits"][1]["output_bytes"] == 3 * 4


# ----------------------------------------------------------------------------- bad contracts

_E1 = [{"name": "e", "after": "b1", "output": "exit1"}]
BAD_CONTRACTS = {
    "missing tensor": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "nope"}], "exits": _E1},
                       "blocks[0].output", "'nope'"),
    "missing input": ({"input": "y", "blocks": [{"name": "b1", "output": "block1"}], "exits": _E1},
                      ".inputs", "not a graph input"),
    "inputs not a list": ({"inputs": "x", "blocks": [{"name": "b1", "output": "block1"}], "exits": _E1},
                          "metadata_props[finplan]", "malformed"),
    "out of order": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "block2"}, {"name": "b2", "output": "block1"}],
                      "exits": _E1}, "blocks[1]", "execution order"),
    "exit after unknown block": ({"input": "x", "blocks": [{"name": "b1", "output": "block1"}],
                                  "exits": [{"name": "e", "after": "b9", "output": "exit1"}]},
                                 "exits[0].after", "'b9'"),
    "exit tensor missing": ({"input": "x", "blocks": [{"name": "b1", "output": "block1"}],
                             "exits": [{"name": "e", "after": "b1", "output": "zzz"}]}, "exits[0].output", "'zzz'"),
    "malformed": ({"input": "x", "blocks": [{"output": "block1"}], "exits": _E1}, "metadata_props[finplan]", "malformed"),
    "duplicate block": ({"input": "x", "blocks": [{"name": "b", "output": "block1"}, {"name": "b", "output": "block2"}],
                         "exits": [{"name": "e", "after": "b", "output": "exit1"}]}, "blocks[1].name", "duplicate"),
    "no exit": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "block1"}], "exits": []},
                "metadata_props[finplan].exits", "no exits"),
    "exit is a feature map": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "block1"}],
                               "exits": [{"name": "e", "after": "b1", "output": "block1"}]},
                              "exits[0].output", "shape ['batch', 4, 4, 4]; expected a class-score vector"),
    "exit before its block": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "block1"},
                                                           {"name": "b2", "output": "block3"}],
                               "exits": [{"name": "e", "after": "b2", "output": "exit1"}]},
                              "exits[0]", "does not depend on the output 'block3'"),
    "cut on a constant": ({"inputs": ["x"], "blocks": [{"name": "b1", "output": "b1.w"}], "exits": _E1},
                          "blocks[0]", "does not depend on the graph inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTRACTS))
def test_bad_contract_is_named(case, tmp_path):
    contract, field, words = BAD_CONTRACTS[case]
    path = _save(_with_contract(contract), tmp_path)
    with pytest.raises(FinplanInputError) as info:
        load_branchy_model(path)
    message = str(info.value)
    assert str(path) in message and field in message and words in message


def test_a_skip_across_a_cut_joins_the_live_set(tmp_path):
    """A skip from block 1 into block 2 (formerly refused) crosses cut 1 next to block 1's output."""
    path = _save(tiny_branchy_model(skip_across=True), tmp_path)
    model, contract = load_branchy_model(path)
    live = boundaries(model, contract)
    assert [[t.name for t in b] for b in live] == [["x"], ["b1.relu", "block1"], ["block2"], []]
    assert [t.bytes_per_sample for t in live[1]] == [4 * 8 * 8 * 4, 4 * 4 * 4 * 4]
    blocks, _ = split_branchy(model, contract)
    assert (blocks[0].inputs, blocks[0].outputs) == (["x"], ["block1", "b1.relu"])
    assert (blocks[1].inputs, blocks[1].outputs) == (["b1.relu", "block1"], ["block2"])


def test_residual_inside_a_block_is_fine():
    model = tiny_branchy_model(residual=True)
    validate_contract(model, tiny_contract())


def test_control_flow_is_rejected(tmp_path):
    model = tiny_branchy_model()
    then_graph = helper.make_graph([helper.make_node("Identity", ["exit1"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["out"], then_branch=then_graph, else_branch=then_graph))
    with pytest.raises(FinplanInputError, match="If/Loop/Scan"):
        validate_contract(model, tiny_contract(), "m.onnx")


def test_no_contract_and_no_blocks(tmp_path):
    path = _save(tiny_branchy_model(with_contract=False), tmp_path)
    with pytest.raises(FinplanInputError, match="--block"):
        load_branchy_model(path)


def test_bad_cli_descriptions(tmp_path):
    path = _save(tiny_branchy_model(with_contract=False), tmp_path)
    with pytest.raises(FinplanInputError, match="NAME=BLOCK:TENSOR"):
        load_branchy_model(path, blocks=["block1"], exits=["exit1"])
    with pytest.raises(FinplanInputError, match="without --block"):
        load_branchy_model(path, exits=["e=block1:exit1"])


def test_not_onnx(tmp_path):
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"\x00\x01 this is not a protobuf at all \xff" * 10)
    with pytest.raises(FinplanInputError, match="not an ONNX model"):
        load_branchy_model(path)
    with pytest.raises(FinplanInputError, match="file not found"):
        load_branchy_model(tmp_path / "absent.onnx")


# ----------------------------------------------------------------------------- the CLI

def _finplan(*args):
    return subprocess.run([sys.executable, "-m", "finplan.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_inspect_prints_blocks_and_exits(tmp_path):
    path = _save(tiny_branchy_model(), tmp_path)
    result = _finplan("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [b["name"] for b in doc["blocks"]] == ["block1", "block2", "block3"]
    assert doc["hash"] == model_hash(tiny_branchy_model())
    human = _finplan("inspect", path)
    assert "block3" in human.stdout and "exit2" in human.stdout


@pytest.mark.parametrize("make", ["not_onnx", "no_contract"])
def test_inspect_bad_input_is_one_line_exit_2(make, tmp_path):
    if make == "not_onnx":
        path = tmp_path / "x.onnx"
        path.write_text("hello")
    else:
        path = _save(tiny_branchy_model(with_contract=False), tmp_path)
    result = _finplan("inspect", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr


# ----------------------------------------------------------------------------- live sets

# the shipped model's hash as main computed it before several inputs were allowed
EMBEDDED_HASH = "sha256:2a2d781591a8d42a262af5ba5d629d49ee277436d3b9f4447da3e55637b2ad43"

LIVE_MODELS = {
    "chain": (lambda: tiny_branchy_model(), tiny_contract),
    "skip across cut 1": (lambda: tiny_branchy_model(skip_across=True), tiny_contract),
    "skip from block 1 to block 3": (lambda: tiny_branchy_model(skip_to_block3=True), tiny_contract),
    "text, int64 mask read by every layer": (lambda: tiny_text_model(), text_contract),
    "text, bool mask": (lambda: tiny_text_model(mask_dtype=onnx.TensorProto.BOOL), text_contract),
    "text, mask computed in block 1": (lambda: tiny_text_model(mask_inside=True), text_contract),
}


def _feeds(model, count=5):
    if model.graph.name == "tiny_text":
        bool_mask = model.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.BOOL
        return text_inputs(count, mask_dtype=np.bool_ if bool_mask else np.int64)
    return {"x": np.random.default_rng(0).random((count, 1, 8, 8), dtype=np.float32)}


@pytest.mark.parametrize("case", list(LIVE_MODELS))
def test_live_set_bytes_are_what_onnxruntime_returns(case):
    """Every live tensor, fetched from the whole model as an extra output: its nbytes / batch, dtype and shape."""
    build, make_contract = LIVE_MODELS[case]
    model, contract = build(), make_contract()
    validate_contract(model, contract)
    live = boundaries(model, contract)
    assert len(live) == len(contract.blocks) + 1 and live[-1] == ()
    assert [t.name for t in live[0]] == list(contract.inputs)
    names = sorted({t.name for b in live[1:] for t in b})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in known)
    feeds = _feeds(model)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(names, feeds)))
    got.update(feeds)
    for boundary in live:
        for t in boundary:
            array = got[t.name]
            assert t.bytes_per_sample == array.nbytes // len(array) and array.nbytes % len(array) == 0, t
            assert t.dtype == array.dtype.name and list(t.shape[1:]) == list(array.shape[1:]), t


@pytest.mark.parametrize("case", list(LIVE_MODELS))
def test_parts_chained_on_live_sets_equal_the_whole_model(case):
    """The runtime's loop (an environment of named tensors; send exactly the live set) gives the whole model's exits."""
    build, make_contract = LIVE_MODELS[case]
    model, contract = build(), make_contract()
    live = boundaries(model, contract)
    blocks, exits = split_branchy(model, contract)
    feeds = _feeds(model)
    whole = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip([e.output for e in contract.exits], whole.run([e.output for e in contract.exits], feeds)))

    def run(part, env):
        session = ort.InferenceSession(part.model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == part.inputs
        return dict(zip(part.outputs, session.run(part.outputs, {n: env[n] for n in part.inputs})))

    env = dict(feeds)
    for k, block in enumerate(blocks, start=1):
        assert set(block.inputs) <= {t.name for t in live[k - 1]}
        env.update(run(block, env))
        for exit_ in (e for e in exits if e.after == block.name):
            np.testing.assert_allclose(run(exit_, env)[exit_.outputs[0]], expected[exit_.outputs[0]], atol=1e-6)
        env = {t.name: env[t.name] for t in live[k]}  # a transfer carries the live set, nothing else
    for block in blocks:  # a tensor forwarded through a block is never one of its outputs
        assert not set(block.outputs) & set(block.inputs)


def test_live_set_names_the_forwarded_mask_and_the_skip():
    text = boundaries(tiny_text_model(), text_contract())
    assert [[t.name for t in b] for b in text] == [
        ["input_ids", "attention_mask"], ["attention_mask", "layer1"], ["attention_mask", "layer2"], []]
    assert text[1][0] == TensorInfo("attention_mask", "int64", ("batch", 6), 6 * 8)
    skip = boundaries(tiny_branchy_model(skip_to_block3=True), tiny_contract())
    assert [[t.name for t in b] for b in skip] == [["x"], ["block1"], ["block1", "block2"], []]
    blocks, _ = split_branchy(tiny_text_model(mask_inside=True), text_contract())
    assert blocks[0].outputs == ["layer1", "embeddings.mask3"]  # made in block 1, read by every later one
    assert blocks[1].inputs == ["embeddings.mask3", "layer1"] and blocks[1].outputs == ["layer2"]


def test_old_single_input_contract_loads_as_inputs():
    model = tiny_branchy_model(with_contract=False)
    old = {"input": "x", **{k: v for k, v in tiny_contract().to_dict().items() if k != "inputs"}}
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(old)
    assert read_contract(model) == tiny_contract() and read_contract(model).inputs == ("x",)
    assert tiny_contract().to_dict()["inputs"] == ["x"] and tiny_contract().input == "x"


def test_several_inputs_through_the_cli_contract():
    model = tiny_text_model(with_contract=False)
    contract = contract_from_cli(model, ["layer1", "layer2", "layer3"], ["e1=block1:exit1", "e3=block3:exit3"])
    assert contract.inputs == ("input_ids", "attention_mask")
    validate_contract(model, contract, where="the --block/--exit contract")


def test_contract_inputs_must_be_every_graph_input_in_order():
    model = tiny_text_model()
    wrong = Contract(("attention_mask", "input_ids"), text_contract().blocks, text_contract().exits)
    with pytest.raises(FinplanInputError, match=r"\.inputs.*graph order"):
        validate_contract(model, wrong, "m.onnx")


def test_embedded_model_keeps_its_hash_and_chain_parts():
    """The shipped model: same hash as before (nothing of it changed) and single-tensor chain parts."""
    from importlib.resources import files
    path = files("finplan") / "embedded" / "b-alexnet-digits.onnx"
    model, contract = load_branchy_model(str(path))
    assert model_hash(model) == EMBEDDED_HASH
    blocks, exits = split_branchy(model, contract)
    previous = contract.inputs[0]
    for block, spec in zip(blocks, contract.blocks):
        assert (block.inputs, block.outputs) == ([previous], [spec.output])
        previous = spec.output
    assert all(e.inputs == [contract.blocks[contract.block_index(e.after)].output] for e in exits)


def test_inspect_shows_the_live_set_tensor_by_tensor(tmp_path):
    path = _save(tiny_text_model(), tmp_path, "text.onnx")
    result = _finplan("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [t["name"] for t in doc["inputs"]] == ["input_ids", "attention_mask"] and doc["input_bytes"] == 96
    block1 = doc["blocks"][0]
    assert block1["live_set"] == [{"name": "attention_mask", "dtype": "int64", "shape": ["batch", 6], "bytes": 48},
                                  {"name": "layer1", "dtype": "float32", "shape": ["batch", 6, 8], "bytes": 192}]
    assert block1["live_set_bytes"] == 240 and doc["blocks"][-1]["live_set"] == []
    human = _finplan("inspect", path).stdout
    assert "attention_mask" in human and "int64" in human and "240" in human


def test_a_live_set_that_cannot_be_sent_by_sample_is_refused(tmp_path):
    """What stays refused: a live tensor without a batch axis, a graph input without static sizes."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("ReduceSum", ["r"], ["s"], keepdims=0),  # a scalar over the whole batch
             helper.make_node("Mul", ["r", "s"], ["block1"]),
             helper.make_node("Relu", ["block1"], ["r2"]),
             helper.make_node("Add", ["r2", "s"], ["block2"])]
    graph = helper.make_graph(nodes, "scalar", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("block1", "block2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    contract = Contract(("x",), (Block("b1", "block1"), Block("b2", "block2")),
                        (Exit("e1", "b1", "block1"), Exit("e2", "b2", "block2")))
    with pytest.raises(FinplanInputError, match=r"blocks\[0\].*live set after block 'b1' holds tensor 's'.*batch axis"):
        validate_contract(model, contract, "m.onnx")
    symbolic = tiny_text_model(tokens="seq")
    with pytest.raises(FinplanInputError, match=r"\.inputs.*'input_ids'.*\['batch', 'seq'\].*no static size"):
        validate_contract(symbolic, text_contract(), "m.onnx")
