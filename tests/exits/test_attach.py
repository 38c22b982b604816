"""attach_exits turns a plain torch model into a branchy one that exports with a valid contract."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from finplan.contract import read_contract, validate_contract
from finplan.data import load_data
from finplan.exits import MAX_ABS_DIFF, BranchyNet, attach_exits, to_onnx


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


def test_attach_refuses_a_model_whose_forward_is_not_its_children_in_order():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x) + x)  # the residual is not a child

    with pytest.raises(ValueError, match="does not reproduce"):
        attach_exits(Skips(), after=["a"], example_input=torch.ones(2, 4))


def test_attach_names_the_child_it_cannot_find():
    with pytest.raises(ValueError, match="no child named 'pool9'"):
        attach_exits(plain_cnn(), after=["pool9"], example_input=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="out of range"):
        attach_exits(plain_cnn(), after=[8], example_input=torch.zeros(1, 1, 16, 16))
