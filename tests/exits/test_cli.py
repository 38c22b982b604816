"""`finplan exits train/export` through the real entry point: happy paths and every bad input
(one line on stderr, exit code 2, no traceback, nothing written)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from finplan.cli.main import main
from finplan.contract import model_hash, read_contract, validate_contract

TINY_LENET = ["--model", "b-lenet", "--input-shape", "1x16x16", "--channels", "4,8,16"]


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, out, err, *needles):
    assert code == 2, (out, err)
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def digits_like(n=20, shape=(1, 16, 16), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, 10, size=n)


def test_train_then_export_from_the_checkpoint_gives_the_same_model(tmp_path, capsys):
    model_path, ckpt, calib = tmp_path / "m.onnx", tmp_path / "m.pt", tmp_path / "calib.npz"
    code, out, err = run(["exits", "train", *TINY_LENET, "--epochs", "1", "--limit", "64", "--seed", "3",
                          "--exit-weights", "1,0.5", "-o", str(model_path), "--checkpoint-out", str(ckpt),
                          "--calib-out", str(calib), "--quiet"], capsys)
    assert code == 0, err
    assert "exit2 after block3: accuracy" in out and "max abs diff" in out
    trained = onnx.load(str(model_path))
    validate_contract(trained, read_contract(trained))
    with np.load(calib) as archive:
        assert archive["x"].shape == (359, 1, 16, 16) and archive["y"].dtype == np.int64
    again = tmp_path / "again.onnx"
    code, out, err = run(["exits", "export", "--model", "b-lenet", "--checkpoint", str(ckpt), "-o", str(again)], capsys)
    assert code == 0, err
    assert model_hash(onnx.load(str(again))) == model_hash(trained)


def test_export_an_untrained_zoo_model(tmp_path, capsys):
    path = tmp_path / "lenet.onnx"
    code, out, err = run(["exits", "export", *TINY_LENET, "-o", str(path)], capsys)
    assert code == 0, err
    model = onnx.load(str(path))
    validate_contract(model, read_contract(model))
    assert "blocks: block1, block2, block3" in out


@pytest.mark.parametrize("sub", ["train", "export"])
def test_help_shows_a_real_example(sub, capsys):
    code, out, _ = run(["exits", sub, "--help"], capsys)
    assert code == 0 and f"finplan exits {sub} --model" in out


# --------------------------------------------------------------------------- bad input

def bad_train_inputs(tmp_path):
    x, y = digits_like()
    cases = {
        "unknown model": (["--model", "b-vgg"], ["unknown model 'b-vgg'", "b-alexnet"]),
        "unknown dataset": (["--data", "imagenet"], ["imagenet", "unknown dataset", "digits, fashion-mnist"]),
        "missing npz": (["--data", str(tmp_path / "nope.npz")], ["nope.npz", "not found"]),
        "shape mismatch": (["--data", write_npz(tmp_path / "s.npz", x=digits_like(shape=(1, 28, 28))[0], y=y)],
                           ["20x1x28x28", "1x16x16"]),
        "labels out of range": (["--data", write_npz(tmp_path / "l.npz", x=x, y=y + 5), "--num-classes", "10"],
                                ["labels out of range", "0..9"]),
        "negative labels": (["--data", write_npz(tmp_path / "n.npz", x=x, y=y - 20)], ["labels out of range"]),
        "float labels": (["--data", write_npz(tmp_path / "f.npz", x=x, y=y + 0.5)], ["integer class labels"]),
        "string dtype": (["--data", write_npz(tmp_path / "d.npz", x=np.array([["a"] * 4] * 20), y=y)],
                         ["dtype <U1", "float32", "expected numbers"]),
        "nan": (["--data", write_npz(tmp_path / "nan.npz", x=np.where(x > 2, np.nan, x), y=y)], ["NaN"]),
        "empty": (["--data", write_npz(tmp_path / "e.npz", x=x[:0], y=y[:0])], ["no samples"]),
        "no labels": (["--data", write_npz(tmp_path / "u.npz", x=x)], ["no labels"]),
        "not npz": (["--data", str(tmp_path / "notes.txt")], ["not a .npz"]),
        "bad shape text": (["--input-shape", "32by32"], ["--input-shape", "1x32x32"]),
        "weights count": (["--exit-weights", "1,0.5,0.3"], ["--exit-weights", "2 non-negative weights"]),
        "unwritable output": (["-o", str(tmp_path / "missing" / "m.onnx")], ["missing/m.onnx", "does not exist"]),
        "unwritable calib": (["--calib-out", str(tmp_path / "missing" / "c.npz")], ["c.npz", "does not exist"]),
    }
    (tmp_path / "notes.txt").write_text("hello")
    return cases


TRAIN_CASE_NAMES = ["unknown model", "unknown dataset", "missing npz", "shape mismatch", "labels out of range",
                    "negative labels", "float labels", "string dtype", "nan", "empty", "no labels", "not npz",
                    "bad shape text", "weights count", "unwritable output", "unwritable calib"]


@pytest.mark.parametrize("case", TRAIN_CASE_NAMES)
def test_train_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    extra, needles = bad_train_inputs(tmp_path)[case]
    output = tmp_path / "model.onnx"
    before = set(tmp_path.iterdir())
    argv = ["exits", "train", *TINY_LENET, "--epochs", "1", "--quiet", "-o", str(output)]
    code, out, err = run(argv + extra, capsys)
    assert_one_line_error(code, out, err, *needles)
    assert not output.exists()
    assert set(tmp_path.iterdir()) == before  # no model, no calibration file, no temporary file


def test_export_bad_checkpoint_and_model(tmp_path, capsys):
    output = tmp_path / "m.onnx"
    fake = tmp_path / "fake.pt"
    fake.write_text("not a checkpoint")
    code, out, err = run(["exits", "export", "--checkpoint", str(fake), "-o", str(output)], capsys)
    assert_one_line_error(code, out, err, "fake.pt", "not a finplan checkpoint")
    code, out, err = run(["exits", "export", "--model", "lenet", "-o", str(output)], capsys)
    assert_one_line_error(code, out, err, "unknown model 'lenet'")
    code, out, err = run(["exits", "export", "--model", "b-lenet", "-o", str(tmp_path)], capsys)
    assert_one_line_error(code, out, err, "a folder stands at this path")
    assert not output.exists()


def test_exits_without_torch_is_one_clear_line(tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from finplan.cli.main import main; "
            f"sys.exit(main(['exits', 'export', '-o', {str(tmp_path / 'm.onnx')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1  # a missing package is the installation's fault (EnvironmentFault), not the input's
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "[torch]" in result.stderr
    assert not (tmp_path / "m.onnx").exists()
