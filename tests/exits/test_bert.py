"""B-BERT and the keywords task: deterministic numpy data, int64 ids and mask kept through
training and export, `finplan exits train/export --model b-bert`."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from finplan import textdata
from finplan.cli.exits import MODEL_NAMES, TEXT_MODEL_NAMES
from finplan.cli.main import main
from finplan.contract import model_hash, read_contract
from finplan.data import ModelData
from finplan.exits import MODELS, TEXT_MODELS, build_model, evaluate, to_onnx, train

TINY_BERT = ("16", "16,2,2")  # sequence length, (width, layers, heads)


def test_the_cli_lists_the_zoo():
    assert MODEL_NAMES == tuple(MODELS) and TEXT_MODEL_NAMES == TEXT_MODELS


def test_keywords_are_deterministic_and_follow_their_rule():
    a, b = textdata.keywords(300, seed=4), textdata.keywords(300, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["input_ids"],
                                                                              textdata.keywords(300, seed=5)["input_ids"])
    ids, mask, y = a["input_ids"], a["attention_mask"], a["y"]
    assert ids.dtype == mask.dtype == y.dtype == np.int64 and ids.shape == mask.shape == (300, textdata.SEQ_LEN)
    assert np.array_equal(mask, (ids != textdata.PAD).astype(np.int64))  # padding exactly where the mask is 0
    assert len(set(mask.sum(1))) > 5 and set(y) == set(range(textdata.NUM_CLASSES))
    for row, label in zip(ids, y):
        counted = [kw for kw in textdata.KEYWORDS
                   if any(row[i] == kw and row[i - 1] != textdata.NOT for i in range(1, len(row)))]
        assert label == sum(2 ** bit for bit, kw in enumerate(textdata.KEYWORDS) if kw in counted)
    negated = [(row[:-1] == textdata.NOT).any() for row in ids]
    assert 0.2 < np.mean(negated) < 0.6  # the hard samples are there


def test_textdata_needs_no_torch():
    code = "import sys, finplan.textdata as t; t.keywords(3); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module")
def tiny_bert():
    model = build_model("b-bert", input_shape=(16,), num_classes=4, channels=(16, 2, 2), seed=0)
    arrays = textdata.keywords(256, seed=0)
    data = ModelData({k: arrays[k] for k in textdata.INPUT_NAMES}, arrays["y"], "keywords")
    train(model, data, epochs=1, seed=0, batch_size=64)
    return model, data


def test_b_bert_has_an_exit_after_every_layer_and_exports_int64(tiny_bert):
    model, data = tiny_bert
    assert len(model.heads) == 2 and model.points == (("layers.0", None),)
    assert evaluate(model, data).samples == 256
    proto, difference = to_onnx(model, data.inputs)
    assert difference <= 1e-4
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == \
        [("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    assert read_contract(proto).inputs == ("input_ids", "attention_mask")


def test_bad_b_bert_widths():
    from finplan.errors import FinplanInputError

    with pytest.raises(FinplanInputError, match="3 positive widths"):
        build_model("b-bert", input_shape=(16,), num_classes=4, channels=(16, 1, 2))
    with pytest.raises(FinplanInputError, match="one sequence length"):
        build_model("b-bert", input_shape=(1, 16, 16), num_classes=4)


def test_exits_train_and_export_b_bert(tmp_path, capsys):
    onnx_path, calib, ckpt = tmp_path / "b.onnx", tmp_path / "c.npz", tmp_path / "b.pt"
    code = main(["exits", "train", "--model", "b-bert", "--input-shape", TINY_BERT[0], "--channels", TINY_BERT[1],
                 "--epochs", "1", "--limit", "128", "-o", str(onnx_path), "--calib-out", str(calib),
                 "--checkpoint-out", str(ckpt), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "trained b-bert on keywords (128 samples" in out and "exit2 after block2" in out
    with np.load(calib) as archive:
        assert {k: (str(archive[k].dtype), archive[k].shape) for k in archive.files} == {
            "input_ids": ("int64", (400, 16)), "attention_mask": ("int64", (400, 16)), "y": ("int64", (400,))}
    # the checkpoint rebuilds the same model; the calibration file is accepted back as --data
    again = tmp_path / "again.onnx"
    assert main(["exits", "export", "--model", "b-bert", "--checkpoint", str(ckpt), "--data", str(calib),
                 "-o", str(again)]) == 0
    assert model_hash(onnx.load(str(again))) == model_hash(onnx.load(str(onnx_path)))


def test_b_bert_refuses_image_data(tmp_path, capsys):
    x = np.zeros((10, 16), dtype=np.float32)
    path = tmp_path / "floats.npz"
    np.savez(path, input_ids=x, attention_mask=x.astype(np.int64), y=np.zeros(10, dtype=np.int64))
    code = main(["exits", "train", "--model", "b-bert", "--channels", TINY_BERT[1], "--data", str(path),
                 "-o", str(tmp_path / "m.onnx"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "input_ids" in err and "float32" in err and "int64" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
