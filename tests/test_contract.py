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
from finplan.onnx_parts import boundaries, describe_branchy, split_branchy
from onnx_builders import tiny_branchy_model, tiny_contract


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
