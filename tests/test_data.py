"""finplan.data: the loaders' shapes, normalisation and seeded splits, and every bad input."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import finplan.data as data_module
from finplan.data import (CALIBRATION_FRACTION, Dataset, embedded_calibration_path, embedded_model_path,
                          load_data, parse_shape, save_dataset)
from finplan.errors import EnvironmentFault, FinplanInputError

DIGITS = 1797


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 28, 28), (1, 8, 8), (1, 20, 12)])
def test_digits_fit_the_input_shape(shape):
    d = load_data("digits", shape, split="all")
    assert d.x.shape == (DIGITS, *shape) and d.x.dtype == np.float32
    assert d.y.shape == (DIGITS,) and d.y.dtype == np.int64 and set(np.unique(d.y)) == set(range(10))
    assert d.x.min() == pytest.approx(-1.0) and d.x.max() <= 1.0  # [0, 1] pixels normalised to [-1, 1]
    if shape[0] == 3:
        assert np.array_equal(d.x[:, 0], d.x[:, 2])  # grey replicated to every channel


def test_digits_split_is_disjoint_complete_and_fixed_by_the_seed():
    shape = (1, 8, 8)
    train = load_data("digits", shape, split="train", seed=0)
    calibration = load_data("digits", shape, split="calibration", seed=0)
    assert len(train) + len(calibration) == DIGITS
    assert len(calibration) == round(DIGITS * CALIBRATION_FRACTION)
    rows = lambda d: {row.tobytes() + label.tobytes() for row, label in zip(d.x, d.y)}  # noqa: E731
    everything = load_data("digits", shape, split="all", seed=0)
    assert rows(train) | rows(calibration) == rows(everything)
    again = load_data("digits", shape, split="calibration", seed=0)
    assert np.array_equal(again.x, calibration.x) and np.array_equal(again.y, calibration.y)
    other = load_data("digits", shape, split="calibration", seed=1)
    assert not np.array_equal(other.y, calibration.y)
    limited = load_data("digits", shape, split="calibration", seed=0, limit=10)
    assert np.array_equal(limited.x, calibration.x[:10])


def test_npz_round_trip_with_and_without_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 1, 4, 4)).astype(np.float64)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6) % 3)
    d = load_data(str(tmp_path / "a.npz"), (1, 4, 4), split="all", num_classes=3)
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64 and len(d) == 6
    assert sorted(map(tuple, d.x.reshape(6, -1).round(5))) == sorted(map(tuple, x.reshape(6, -1).astype(np.float32).round(5)))
    np.savez(tmp_path / "b.npz", x=x[:, 0])  # [N, H, W] for a one-channel model
    d = load_data(str(tmp_path / "b.npz"), (1, 4, 4), split="all")
    assert d.x.shape == (6, 1, 4, 4) and d.y is None
    saved = save_dataset(Dataset(x=d.x, y=None, name="b"), tmp_path / "c.npz")
    assert np.array_equal(load_data(str(saved), (1, 4, 4), split="all", seed=0).x,
                          load_data(str(tmp_path / "b.npz"), (1, 4, 4), split="all", seed=0).x)


def test_image_folder_tree(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for label, value in (("cat", 0), ("dog", 255)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((10, 12), value, dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    Image.fromarray(np.full((10, 12), 255, dtype=np.uint8)).save(tmp_path / "dog" / "x.pgm")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    d = load_data(str(tmp_path), (3, 8, 8), split="all", num_classes=2)
    assert d.x.shape == (7, 3, 8, 8) and sorted(d.y.tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert np.allclose(d.x[d.y == 0], -1.0) and np.allclose(d.x[d.y == 1], 1.0)


def test_fashion_mnist_when_installed():
    if not (data_module.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    d = load_data("fashion-mnist", (1, 28, 28), limit=100)
    assert d.x.shape == (100, 1, 28, 28) and d.y.max() <= 9
    assert -1.0 <= d.x.min() and d.x.max() <= 1.0


def test_fashion_mnist_absent_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(EnvironmentFault, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", (1, 28, 28))


def test_embedded_source_is_the_shipped_calibration_split():
    assert embedded_model_path().is_file() and embedded_calibration_path().is_file()
    d = load_data("embedded", (1, 32, 32))
    assert d.x.shape[1:] == (1, 32, 32) and d.y is not None and len(d) > 100
    with pytest.raises(FinplanInputError, match="only the calibration split"):
        load_data("embedded", (1, 32, 32), split="train")
    with pytest.raises(FinplanInputError, match="1x28x28"):
        load_data("embedded", (1, 28, 28))


def test_data_module_does_not_import_torch():
    import subprocess

    code = "import sys; sys.modules['torch'] = None; import finplan.data as d; d.load_data('embedded', (1, 32, 32))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


# --------------------------------------------------------------------------- bad input

def _npz(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


X = np.zeros((10, 1, 4, 4), dtype=np.float32)
Y = np.arange(10) % 3


@pytest.mark.parametrize("make, shape, kwargs, needles", [
    (lambda p: "mnist-ish", (1, 4, 4), {}, ["mnist-ish", "unknown dataset", "digits, fashion-mnist, embedded"]),
    (lambda p: _npz(p, x=np.zeros((10, 1, 5, 5))), (1, 4, 4), {}, ["10x1x5x5", "1x4x4"]),
    (lambda p: _npz(p, x=np.array([["a", "b"]] * 10)), (2,), {}, ["dtype <U1", "float32"]),
    (lambda p: _npz(p, x=X, y=Y + 5), (1, 4, 4), {"num_classes": 3}, ["labels out of range", "0..2"]),
    (lambda p: _npz(p, x=X, y=Y), (1, 4, 4), {"num_classes": 2}, ["labels out of range", "found 2"]),
    (lambda p: _npz(p, x=X, y=Y - 1), (1, 4, 4), {}, ["labels out of range", ">= 0"]),
    (lambda p: _npz(p, x=X, y=Y + 0.25), (1, 4, 4), {}, ["integer class labels"]),
    (lambda p: _npz(p, x=X, y=Y[:5]), (1, 4, 4), {}, ["one label per sample"]),
    (lambda p: _npz(p, x=X[:0]), (1, 4, 4), {"split": "all"}, ["no samples"]),
    (lambda p: _npz(p, x=X[:1]), (1, 4, 4), {}, ["calibration split is empty"]),
    (lambda p: _npz(p, x=np.where(X == 0, np.nan, X)), (1, 4, 4), {"split": "all"}, ["NaN"]),
    (lambda p: _npz(p, z=X), (1, 4, 4), {}, ["no array 'x'"]),
    (lambda p: str(p / "missing.npz"), (1, 4, 4), {}, ["missing.npz", "not found"]),
    (lambda p: (p / "x.csv").write_text("1,2") and str(p / "x.csv"), (1, 4, 4), {}, ["not a .npz"]),
    (lambda p: (p / "broken.npz").write_bytes(b"garbage") and str(p / "broken.npz"), (1, 4, 4), {}, ["cannot read"]),
    (lambda p: str(p), (1, 4, 4), {}, ["no class subfolders"]),
    (lambda p: "digits", (1, 32), {}, ["grey images", "1x32"]),
    (lambda p: "digits", (1, 8, 8), {"split": "test"}, ["expected one of train, calibration, all"]),
    (lambda p: "digits", (1, 8, 8), {"limit": 0}, ["limit"]),
])
def test_bad_data_is_one_clear_input_error(tmp_path, make, shape, kwargs, needles):
    source = make(tmp_path)
    with pytest.raises(FinplanInputError) as raised:
        load_data(source, shape, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_parse_shape():
    assert parse_shape("1x32x32") == (1, 32, 32)
    with pytest.raises(FinplanInputError, match="1x32x32"):
        parse_shape("32 by 32")
