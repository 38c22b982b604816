"""attach_exits turns a plain torch model into a branchy one that exports with a valid contract."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from finplan.contract import read_contract, validate_contract
from finplan.data import load_data
from finplan.errors import FinplanInputError
from finplan.exits import MAX_ABS_DIFF, AttachedExits, AttachError, BranchyNet, TokenHead, attach_exits, to_onnx


def plain_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 0..2
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 3..5
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),                      # 6..7
    )


def test_attach_exits_on_a_plain_sequential_exports_and_matches():
    model = plain_cnn()
    example = torch.from_numpy(load_data("digits", (1, 16, 16), limit=8).x)
    reference = model(example).detach()
    branchy = attach_exits(model, after=[2, "5"], example_input=example)
    assert isinstance(branchy, BranchyNet)
    assert branchy.num_classes == 10  # inferred from the model's output
    assert len(branchy.blocks) == 3 and branchy.exit_after == (0, 1, 2)
    outputs = branchy(example)
    assert [tuple(o.shape) for o in outputs[3:]] == [(8, 10)] * 3
    # the final exit is the original model's own output, unchanged
    assert torch.allclose(outputs[-1], reference)
    # head width came from the dry run: 4 channels pooled to 2x2 after block 1
    assert branchy.heads[0][-1].in_features == 4 * 2 * 2
    proto, difference = to_onnx(branchy, example.numpy())
    assert difference <= MAX_ABS_DIFF
    contract = read_contract(proto)
    validate_contract(proto, contract)
    assert [e.after for e in contract.exits] == ["block1", "block2", "block3"]


def test_attach_after_the_last_child_adds_a_new_head_everywhere():
    model = plain_cnn()[:6]  # a feature extractor: no classifier of its own
    example = torch.zeros(2, 1, 16, 16)
    branchy = attach_exits(model, after=[2, 5], example_input=example, num_classes=3)
    assert len(branchy.blocks) == 2 and all(isinstance(h, nn.Sequential) for h in branchy.heads)
    assert all(o.shape == (2, 3) for o in branchy.exit_logits(example))


class Skips(nn.Module):
    """Its forward is not its children in turn (a residual outside any child)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        return self.b(self.a(x) + x)


def test_child_indices_refuse_a_model_whose_forward_is_not_its_children_in_order():
    with pytest.raises(ValueError, match="does not reproduce"):
        attach_exits(Skips(), after=[0], example_input=torch.ones(2, 4))


def test_names_work_on_the_model_as_it_is_residual_outside_children_included():
    torch.manual_seed(0)
    model = Skips()
    example = torch.randn(5, 4)
    branchy = attach_exits(model, after=["a"], example_input=example)
    assert isinstance(branchy, AttachedExits) and branchy.num_classes == 3
    outputs = branchy(example)
    assert [tuple(o.shape) for o in outputs] == [(5, 4), (5, 3), (5, 3), (5, 3)]
    assert torch.equal(outputs[0], model.a(example)) and torch.equal(outputs[-1], model(example))
    assert not model._forward_hooks and not model.a._forward_hooks  # nothing left on the user's model
    proto, difference = to_onnx(branchy, example.numpy())
    assert difference <= MAX_ABS_DIFF
    assert read_contract(proto).exits[0].after == "block1"


def test_child_index_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        attach_exits(plain_cnn(), after=[8], example_input=torch.zeros(1, 1, 16, 16))


# --------------------------------------------------------------------------- heads fit the tensor found

class Tokens(nn.Module):
    """(N, T) int64 ids + mask -> (N, T, D) layers -> class scores, as a dict output with logits."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.layers = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6)])
        self.classifier = nn.Linear(6, 4)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        for layer in self.layers:
            hidden = torch.relu(layer(hidden))
        return {"logits": self.classifier(hidden[:, 0]), "hidden": hidden}


def token_example():
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_sequence_heads_and_dict_inputs(pooling):
    torch.manual_seed(0)
    example = token_example()
    branchy = attach_exits(Tokens(), after=["layers.0"], example_input=example, token_pooling=pooling)
    assert branchy.input_names == ("input_ids", "attention_mask") and branchy.num_classes == 4  # from logits
    assert [(str(s.dtype), s.shape) for s in branchy.inputs] == [("int64", (4,)), ("int64", (4,))]
    head = branchy.heads[0]
    assert isinstance(head, TokenHead) and head.linear.in_features == 6 and head.pooling == pooling
    block1, exit1 = branchy(*example.values())[0], branchy(*example.values())[2]
    pooled = block1[:, 0] if pooling == "first" else block1.mean(1)
    assert torch.allclose(exit1, head.linear(pooled))
    feeds = {k: v.numpy() for k, v in example.items()}
    proto, difference = to_onnx(branchy, feeds)
    assert difference <= MAX_ABS_DIFF
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == \
        [("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]


def test_tuple_inputs_are_named_after_forward_parameters():
    torch.manual_seed(0)
    example = tuple(token_example().values())
    branchy = attach_exits(Tokens(), after=["layers.0", "layers.1"], example_input=example)
    assert branchy.input_names == ("input_ids", "attention_mask") and len(branchy.heads) == 3


def test_a_feature_extractor_needs_num_classes_and_gets_a_head_on_its_output():
    features = plain_cnn()[:6]
    example = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"the model's output is 2x8x4x4 float32, not class scores"):
        attach_exits(features, after=["2"], example_input=example)  # digit string: the older form
    with pytest.raises(ValueError, match="not class scores"):
        attach_exits(nn.Sequential(features), after=["0.2"], example_input=example)
    branchy = attach_exits(nn.Sequential(features), after=["0.2"], example_input=example, num_classes=3)
    assert all(o.shape == (2, 3) for o in branchy.exit_logits(example)) and len(branchy.heads) == 2


# --------------------------------------------------------------------------- bad input

def test_a_name_that_is_not_a_submodule_lists_the_nearest_names():
    with pytest.raises(AttachError) as caught:
        attach_exits(Tokens(), after=["layer.0"], example_input=token_example())
    message = str(caught.value)
    assert "'layer.0' is not a submodule of Tokens; nearest names: layers.0" in message and "\n" not in message


def test_a_tuple_output_needs_its_element():
    class Attends(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(6, 2, batch_first=True)
            self.classifier = nn.Linear(6, 3)

        def forward(self, x):
            hidden, _ = self.attention(x, x, x)
            return self.classifier(hidden[:, 0])

    torch.manual_seed(0)
    example = torch.randn(2, 5, 6)
    with pytest.raises(AttachError, match=r"submodule 'attention' gives a tuple of 2 \(0: 2x5x6 float32, 1: 2x5x5 "
                                          r"float32\), not one tensor; say which element: "
                                          r"after=\[\('attention', 0\)\]"):
        attach_exits(Attends(), after=["attention"], example_input=example)
    branchy = attach_exits(Attends(), after=[("attention", 0)], example_input=example)
    assert branchy(example)[0].shape == (2, 5, 6)
    with pytest.raises(AttachError, match="has no element 7"):
        attach_exits(Attends(), after=[("attention", 7)], example_input=example)


def test_a_dry_run_failure_names_the_submodule_and_the_shapes():
    with pytest.raises(AttachError) as caught:
        attach_exits(plain_cnn(), after=["3"], example_input=torch.zeros(2, 1, 20, 20))
    message = str(caught.value)
    assert message.startswith("example_input: dry run failed in submodule '7' on input 2x200 float32: ")
    assert "\n" not in message
    with pytest.raises(AttachError, match="dry run failed in submodule '0' on input 2x3x16x16 float32"):
        attach_exits(plain_cnn(), after=["0", "3"], example_input=torch.zeros(2, 3, 16, 16))


def test_exits_out_of_execution_order_are_refused():
    with pytest.raises(AttachError, match="run in the order layers.0, layers.1; expected them in execution order"):
        attach_exits(Tokens(), after=["layers.1", "layers.0"], example_input=token_example())


def test_check_inputs_are_checked_against_the_model_inputs():
    torch.manual_seed(0)
    example = token_example()
    branchy = attach_exits(Tokens(), after=["layers.0"], example_input=example)
    feeds = {k: v.numpy() for k, v in example.items()}
    with pytest.raises(FinplanInputError, match="input_ids has dtype int32; the model input needs int64"):
        to_onnx(branchy, {**feeds, "input_ids": feeds["input_ids"].astype(np.int32)})
    with pytest.raises(FinplanInputError, match="the model's inputs are input_ids, attention_mask"):
        to_onnx(branchy, {"input_ids": feeds["input_ids"]})
    with pytest.raises(FinplanInputError, match="expected a dict of arrays named after them"):
        to_onnx(branchy, feeds["input_ids"])
