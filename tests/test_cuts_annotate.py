"""``finplan cuts`` (every candidate cut and its live set) and ``finplan annotate`` (a contract into a copy)."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from finplan.contract import load_branchy_model, model_hash, read_contract
from finplan.cuts import candidate_cuts
from finplan.errors import FinplanInputError
from finplan.onnx_parts import boundaries
from onnx_builders import text_contract, tiny_branchy_model, tiny_contract, tiny_text_model


def _cli(capsys, *argv):
    from finplan.cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _bad(code, out, err, *fragments):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, (code, out, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _save(model, path):
    onnx.save(model, str(path))
    return path


# ----------------------------------------------------------------------------- cuts

@pytest.fixture(scope="session")
def torch_export(tmp_path_factory):
    """A plain torch.onnx (dynamo) export: a residual stage, two named stages and a head; node metadata kept."""
    torch = pytest.importorskip("torch")

    class Stage(torch.nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
            self.act = torch.nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))

    class Residual(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = torch.nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x) + x)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = Stage(1, 4)
            self.layer2 = Residual(4)
            self.layer3 = Stage(4, 8)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.layer3(self.layer2(self.layer1(x))).mean((2, 3)))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cuts") / "plain.onnx"
    program = torch.onnx.export(Net().eval(), (torch.randn(2, 1, 8, 8),), dynamo=True, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False)
    program.save(str(path))
    return path


def test_cuts_of_a_plain_export_name_modules_and_mark_natural_cuts(torch_export, capsys):
    cuts = candidate_cuts(onnx.load(str(torch_export)))
    ends = {c.ends[-1]: c for c in cuts if c.ends}
    assert {"layer1", "layer2", "layer3", "fc"} <= set(ends)
    for name in ("layer1", "layer2", "layer3"):  # a stage's last node is a natural cut: only its output crosses
        cut = ends[name]
        assert cut.single and cut.live_set[0].name == cut.tensor and cut.op == "Relu"
        assert cut.live_set_bytes == cut.live_set[0].bytes_per_sample
    assert ends["layer1"].live_set_bytes == 4 * 8 * 8 * 4
    # inside the residual stage the stage's input crosses next to the conv output: not natural
    inside = [c for c in cuts if c.module.startswith("layer2") and c.op == "Conv"]
    assert inside and not inside[0].single
    assert [t.name for t in inside[0].live_set] == [ends["layer1"].tensor, inside[0].tensor]
    assert [c.position for c in cuts] == sorted(c.position for c in cuts)
    code, out, err = _cli(capsys, "cuts", torch_export, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["tensor"] for c in doc["cuts"]] == [c.tensor for c in cuts]
    assert doc["cuts"][0]["live_set"][0]["bytes"] == cuts[0].live_set[0].bytes_per_sample
    code, out, err = _cli(capsys, "cuts", torch_export, "--single")
    assert code == 0 and ends["layer2"].tensor in out and "end of layer2" in out


@pytest.mark.parametrize("build, contract", [
    (lambda: tiny_text_model(with_contract=False), text_contract),
    (lambda: tiny_text_model(with_contract=False, mask_inside=True), text_contract),
    (lambda: tiny_branchy_model(with_contract=False, skip_to_block3=True), tiny_contract),
])
def test_cut_live_sets_equal_the_contracts_boundaries(build, contract):
    """What `cuts` lists at a block's tensor is what crosses that cut once annotated."""
    model = build()
    by_tensor = {c.tensor: c for c in candidate_cuts(model)}
    live = boundaries(model, contract())
    for k, block in enumerate(contract().blocks[:-1], start=1):
        listed = by_tensor[block.output].live_set
        assert [(t.name, t.bytes_per_sample) for t in listed] == [(t.name, t.bytes_per_sample) for t in live[k]]


def test_text_model_cuts_forward_the_mask():
    cut = {c.tensor: c for c in candidate_cuts(tiny_text_model(with_contract=False))}["layer1"]
    assert [(t.name, t.dtype, t.bytes_per_sample) for t in cut.live_set] == [
        ("attention_mask", "int64", 6 * 8), ("layer1", "float32", 6 * 8 * 4)]
    assert not cut.single


def _long_chain(layers: int) -> onnx.ModelProto:
    """``layers`` x (Conv-free) MatMul + Relu + Add with a skip over two layers: 3 nodes per layer."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    h, skip = "x", "x"
    for k in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.1).astype(np.float32), f"w{k}")
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [h, w.name], [f"m{k}"]))
        nodes.append(helper.make_node("Relu", [f"m{k}"], [f"r{k}"]))
        nodes.append(helper.make_node("Add", [f"r{k}", skip], [f"h{k}"]))
        skip, h = (h, f"h{k}") if k % 2 == 0 else (f"h{k}", f"h{k}")
    graph = helper.make_graph(nodes, "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_cuts_of_a_graph_of_thousands_of_nodes():
    """3000 nodes in one sweep; skips over two layers cross exactly the odd-layer cuts."""
    cuts = candidate_cuts(_long_chain(1000))
    assert len(cuts) == 3000
    by_tensor = {c.tensor: c for c in cuts}
    assert by_tensor["h0"].single is False and [t.name for t in by_tensor["h0"].live_set] == ["x", "h0"]
    assert by_tensor["h1"].single and by_tensor["h999"].live_set == ()
    assert all(c.live_set_bytes in (32, 64, 96, 0) for c in cuts)


def test_cuts_bad_input(tmp_path, capsys):
    path = tmp_path / "x.onnx"
    path.write_text("hello")
    _bad(*_cli(capsys, "cuts", path), str(path), "not an ONNX model")
    _bad(*_cli(capsys, "cuts", tmp_path / "absent.onnx"), "file not found")


# ----------------------------------------------------------------------------- annotate

def test_annotate_writes_a_validated_contract_into_a_copy(tmp_path, capsys):
    plain = _save(tiny_text_model(with_contract=False), tmp_path / "plain.onnx")
    before = plain.read_bytes()
    out = tmp_path / "branchy.onnx"
    code, stdout, err = _cli(capsys, "annotate", plain, "--block", "layer1", "--block", "layer2", "--block", "layer3",
                             "--exit", "e1=block1:exit1", "--exit", "e3=block3:exit3", "-o", out)
    assert code == 0, err
    assert plain.read_bytes() == before  # the input is untouched
    model, contract = load_branchy_model(out)
    assert contract.inputs == ("input_ids", "attention_mask")
    assert [b.output for b in contract.blocks] == ["layer1", "layer2", "layer3"]
    assert [(e.name, e.after) for e in contract.exits] == [("e1", "block1"), ("e3", "block3")]
    assert model_hash(model) == model_hash(onnx.load(str(plain)))  # the graph is copied unchanged
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_model_without_contract_names_finplan_annotate(tmp_path):
    model = tiny_branchy_model(with_contract=False)
    with pytest.raises(FinplanInputError, match="finplan annotate"):
        read_contract(model, tmp_path / "m.onnx")


ANNOTATE_BAD = {
    "tensor that does not exist": (["--block", "nope", "--exit", "e=block1:exit1"],
                                   ["the --block/--exit contract.blocks[0].output", "'nope'"]),
    "cut produced after the next cut": (["--block", "block2", "--block", "block1", "--exit", "e=block1:exit1"],
                                        ["blocks[1]", "'block1'", "execution order"]),
    "exit that is a feature map": (["--block", "block1", "--block", "block3", "--exit", "e=block1:block1"],
                                   ["exits[0].output", "shape ['batch', 4, 4, 4]", "class-score vector"]),
    "exit after an unknown block": (["--block", "block1", "--exit", "e=block7:exit1"], ["exits[0].after", "'block7'"]),
    "no exit": (["--block", "block1"], ["--exit"]),
    "bad exit spec": (["--block", "block1", "--exit", "exit1"], ["NAME=BLOCK:TENSOR"]),
}


@pytest.mark.parametrize("case", list(ANNOTATE_BAD))
def test_annotate_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    plain = _save(tiny_branchy_model(with_contract=False), tmp_path / "plain.onnx")
    args, fragments = ANNOTATE_BAD[case]
    out = tmp_path / "out.onnx"
    _bad(*_cli(capsys, "annotate", plain, *args, "-o", out), *fragments)
    assert sorted(os.listdir(tmp_path)) == ["plain.onnx"]


def test_annotate_refuses_a_feature_map_model_exit(tmp_path, capsys):
    plain = _save(tiny_branchy_model(with_contract=False, feature_exit=True), tmp_path / "plain.onnx")
    _bad(*_cli(capsys, "annotate", plain, "--block", "block1", "--block", "block3", "--exit", "e1=block1:exit1",
               "--exit", "e2=block2:exit2", "-o", tmp_path / "out.onnx"),
         "exits[0].output", "'exit1'", "shape ['batch', 4, 1, 1]")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link"])
def test_annotate_never_overwrites_its_input(how, tmp_path, capsys, monkeypatch):
    plain = _save(tiny_branchy_model(with_contract=False), tmp_path / "plain.onnx")
    before = plain.read_bytes()
    if how == "same path":
        target = plain
    elif how == "relative path":
        monkeypatch.chdir(tmp_path)
        target = "./sub/../plain.onnx"
        (tmp_path / "sub").mkdir()
    elif how == "symlink":
        target = tmp_path / "link.onnx"
        target.symlink_to(plain)
    else:
        target = tmp_path / "hard.onnx"
        os.link(plain, target)
    _bad(*_cli(capsys, "annotate", plain, "--block", "block1", "--exit", "e=block1:exit1", "-o", target),
         "-o", "is the input model")
    assert plain.read_bytes() == before


def test_annotate_help_shows_an_example(capsys):
    code, out, _ = _cli(capsys, "annotate", "--help")
    assert code == 0 and "finplan annotate resnet.onnx --block" in out
    code, out, _ = _cli(capsys, "cuts", "--help")
    assert code == 0 and "finplan cuts model.onnx" in out
