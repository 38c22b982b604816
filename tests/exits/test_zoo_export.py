"""Every zoo model exports to a checked, contract-valid ONNX that computes what torch computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from finplan.contract import model_hash, read_contract, validate_contract
from finplan.data import load_data
from finplan.errors import FinplanInputError
from finplan.exits import MAX_ABS_DIFF, MODELS, TEXT_MODELS, build_model, max_difference, to_onnx
from finplan.exits.zoo import DEFAULT_INPUT_SHAPES

from exits_tiny import TINY

EXPECTED = {  # BranchyNet structure: (blocks, exit positions as block names)
    "b-lenet": (3, ["block1", "block3"]),
    "b-alexnet": (5, ["block1", "block3", "block5"]),
    "b-resnet": (5, ["block1", "block3", "block5"]),
}


@pytest.mark.parametrize("name", list(TINY))
def test_export_is_checked_valid_and_matches_torch(tiny_exports, name):
    exported = tiny_exports[name]
    proto = exported.proto
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    contract = read_contract(proto)
    validate_contract(proto, contract)
    blocks, exits_after = EXPECTED[name]
    assert [b.name for b in contract.blocks] == [f"block{i}" for i in range(1, blocks + 1)]
    assert [e.after for e in contract.exits] == exits_after
    assert [o.name for o in proto.graph.output] == [b.output for b in contract.blocks] + [e.output for e in contract.exits]
    assert exported.max_abs_diff <= MAX_ABS_DIFF
    # dynamic batch axis: another batch size than the export check, on real inputs
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert max_difference(proto, exported.model, exported.inputs[:5]) <= MAX_ABS_DIFF
    assert not {n.op_type for n in proto.graph.node} & {"If", "Loop", "Scan"}


@pytest.mark.parametrize("name", list(TINY))
def test_export_carries_no_source_paths(tiny_exports, name):
    data = tiny_exports[name].proto.SerializeToString()
    assert b"/work/" not in data and b"site-packages" not in data and b"stack_trace" not in data
    assert all(len(n.metadata_props) == 0 for n in tiny_exports[name].proto.graph.node)


def test_reexport_gives_the_same_hash(tiny_exports):
    exported = tiny_exports["b-lenet"]
    again, _ = to_onnx(exported.model, exported.inputs)
    assert model_hash(again) == model_hash(exported.proto)


def test_resnet_block_boundaries_sit_between_residual_blocks(tiny_exports):
    # Each of blocks 2..5 contains a whole residual add; the contract validates (no skip crosses a cut).
    proto = tiny_exports["b-resnet"].proto
    assert sum(n.op_type == "Add" for n in proto.graph.node) >= 4
    validate_contract(proto, read_contract(proto))


def test_export_fails_when_onnx_and_torch_disagree(tiny_exports):
    exported = tiny_exports["b-lenet"]
    with pytest.raises(FinplanInputError, match="differs from torch"):
        to_onnx(exported.model, exported.inputs, max_abs_diff=0.0 if exported.max_abs_diff > 0 else -1.0)


def test_seed_fixes_the_weights_and_the_model_keeps_the_global_rng():
    shape, channels = TINY["b-lenet"]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("b-lenet", input_shape=shape, channels=channels, seed=1)
    assert torch.equal(torch.rand(1), before)  # build_model does not consume the caller's RNG
    b = build_model("b-lenet", input_shape=shape, channels=channels, seed=1)
    c = build_model("b-lenet", input_shape=shape, channels=channels, seed=2)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not all(torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize("name", [m for m in MODELS if m not in TEXT_MODELS])
def test_configurable_shape_channels_and_classes(name):
    channels = TINY[name][1]
    model = build_model(name, input_shape=(3, 20, 24), num_classes=7, channels=channels)
    outputs = model(torch.zeros(2, 3, 20, 24))
    assert len(outputs) == len(model.blocks) + len(model.heads)
    assert all(out.shape == (2, 7) for out in model.exit_logits(torch.zeros(2, 3, 20, 24)))
    assert DEFAULT_INPUT_SHAPES[name] == tuple(build_model(name, input_shape=DEFAULT_INPUT_SHAPES[name]).input_shape)


def test_bad_model_arguments_are_input_errors():
    with pytest.raises(FinplanInputError, match="unknown model 'b-vgg'.*b-lenet"):
        build_model("b-vgg", input_shape=(1, 28, 28))
    with pytest.raises(FinplanInputError, match="too small"):
        build_model("b-alexnet", input_shape=(1, 4, 4))
    with pytest.raises(FinplanInputError, match="6 positive channel widths"):
        build_model("b-alexnet", input_shape=(1, 32, 32), channels=(4, 8))


def test_check_inputs_of_the_wrong_shape_are_refused(tiny_exports):
    exported = tiny_exports["b-lenet"]
    wrong = load_data("digits", (1, 20, 20), limit=4).x
    with pytest.raises(FinplanInputError, match="1x16x16"):
        to_onnx(exported.model, wrong)
    assert np.isfinite(exported.max_abs_diff)
