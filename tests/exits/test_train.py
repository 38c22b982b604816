"""Joint training is deterministic and reports per-exit accuracy; the embedded recipe still runs."""
from __future__ import annotations

import re
import shlex

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from finplan.cli.main import main
from finplan.contract import read_contract, validate_contract
from finplan.data import Dataset, embedded_calibration_path, embedded_model_path, load_data
from finplan.exits import build_model, evaluate, train

from exits_tiny import TINY

README = embedded_model_path().parent / "README.md"


def tiny_lenet(seed: int = 0):
    shape, channels = TINY["b-lenet"]
    return build_model("b-lenet", input_shape=shape, channels=channels, seed=seed)


def test_training_is_deterministic_and_reports_every_exit():
    data = load_data("digits", TINY["b-lenet"][0], split="train", seed=0, limit=128)
    runs = []
    for _ in range(2):
        model = tiny_lenet()
        batches, epochs_seen = [], []
        reports = train(model, data, epochs=2, seed=0, batch_size=32, eval_data=data,
                        on_batch=lambda e, done, total: batches.append((e, done, total)),
                        on_epoch=epochs_seen.append)
        runs.append((model.state_dict(), reports))
        assert batches[-1] == (2, 4, 4) and len(batches) == 8
        assert epochs_seen == reports and [r.epoch for r in reports] == [1, 2]
        assert all(len(r.train_accuracy) == 2 and len(r.eval_accuracy) == 2 for r in reports)
        assert all(0.0 <= a <= 1.0 for r in reports for a in r.train_accuracy + r.eval_accuracy)
    (first, first_reports), (second, second_reports) = runs
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert first_reports == second_reports
    other = tiny_lenet()
    train(other, data, epochs=1, seed=1, batch_size=32)
    assert not all(torch.equal(first[k], other.state_dict()[k]) for k in first)


def test_training_learns_and_weights_steer_the_exits():
    data = load_data("digits", TINY["b-lenet"][0], split="train", seed=0, limit=256)
    model = tiny_lenet()
    before = evaluate(model, data).accuracy
    train(model, data, epochs=10, seed=0, batch_size=32, lr=1e-2)
    after = evaluate(model, data).accuracy
    assert min(after) > max(before) and min(after) > 0.5
    # a zero weight on exit 1 leaves its head untrained (its parameters do not move)
    model = tiny_lenet()
    head_before = [p.detach().clone() for p in model.heads[0].parameters()]
    train(model, data, epochs=1, seed=0, exit_weights=(0.0, 1.0))
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.heads[0].parameters()))


def test_training_refuses_bad_weights_and_labels():
    data = load_data("digits", TINY["b-lenet"][0], limit=16)
    with pytest.raises(ValueError, match="2 non-negative exit weights"):
        train(tiny_lenet(), data, epochs=1, seed=0, exit_weights=(1.0, 0.5, 0.3))
    bad = Dataset(x=data.x, y=np.full(len(data.x), 10, dtype=np.int64), name="bad")
    with pytest.raises(ValueError, match="labels out of range"):
        train(tiny_lenet(), bad, epochs=1, seed=0)
    with pytest.raises(ValueError, match="no labels"):
        train(tiny_lenet(), Dataset(x=data.x, y=None, name="unlabelled"), epochs=1, seed=0)


def _recipe_argv() -> list[str]:
    text = README.read_text()
    block = re.search(r"```\n(finplan exits train.*?)```", text, re.S).group(1)
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:3] == ["finplan", "exits", "train"]
    return argv[1:]


def test_the_documented_embedded_recipe_runs(tmp_path, capsys):
    argv = _recipe_argv()
    assert argv[argv.index("--seed") + 1] == "0" and argv[argv.index("--model") + 1] == "b-alexnet"
    # one epoch on a few samples, written to tmp: proves the command still runs, not the accuracy
    argv[argv.index("--epochs") + 1] = "1"
    argv[argv.index("-o") + 1] = str(tmp_path / "model.onnx")
    argv[argv.index("--calib-out") + 1] = str(tmp_path / "calib.npz")
    assert main(argv + ["--limit", "64", "--quiet"]) == 0, capsys.readouterr().err
    model = onnx.load(str(tmp_path / "model.onnx"))
    validate_contract(model, read_contract(model))
    assert [e.after for e in read_contract(model).exits] == ["block1", "block3", "block5"]
    # the recipe's held-out split is exactly the shipped calibration split
    with np.load(tmp_path / "calib.npz") as ours, np.load(embedded_calibration_path()) as shipped:
        assert np.array_equal(ours["x"], shipped["x"]) and np.array_equal(ours["y"], shipped["y"])
    assert "exit3 after block5: accuracy" in capsys.readouterr().out


def test_embedded_model_matches_its_readme_and_its_exits_differ():
    model = onnx.load(str(embedded_model_path()))
    contract = read_contract(model)
    validate_contract(model, contract)
    data = load_data("embedded", (1, 32, 32))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run([e.output for e in contract.exits], {contract.input: data.x})
    accuracy, confident = [], []
    for logits in outputs:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        accuracy.append(float(np.mean(probabilities.argmax(axis=1) == data.y)))
        confident.append(float(np.mean(probabilities.max(axis=1) >= 0.9)))
    documented = [float(v) for v in re.findall(r"\| exit\d \| block\d \| (0\.\d+)", README.read_text())]
    assert len(documented) == 3
    assert np.allclose(accuracy, documented, atol=3e-3)  # one borderline sample may flip between runtimes
    assert accuracy[0] < accuracy[2] and confident[0] < confident[1] < confident[2]
    assert confident[0] >= 0.3  # early exits matter: the first exit is sure of a good share of inputs
    assert embedded_model_path().stat().st_size + embedded_calibration_path().stat().st_size < 3_000_000
