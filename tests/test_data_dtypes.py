"""finplan.data keeps a file's dtype until it is checked against the model input's: float data is
cast to the input's float precision, integer data for a float input is refused (unnormalised
pixels), and a refusal names the received and expected shape and dtype."""
from __future__ import annotations

import numpy as np
import pytest

from finplan.data import load_data
from finplan.errors import FinplanInputError


def npz(tmp_path, x, name="d.npz"):
    np.savez(tmp_path / name, x=x)
    return str(tmp_path / name)


@pytest.mark.parametrize("stored", ["float16", "float32", "float64"])
@pytest.mark.parametrize("model", ["float16", "float32", "float64"])
def test_float_files_come_in_the_model_inputs_float_dtype(tmp_path, stored, model):
    x = np.random.default_rng(0).normal(size=(5, 1, 4, 4)).astype(stored)
    d = load_data(npz(tmp_path, x), (1, 4, 4), split="all", dtype=model)
    assert d.x.dtype == np.dtype(model) and np.array_equal(d.x, x.astype(model))


@pytest.mark.parametrize("source, shape", [("embedded", (1, 32, 32)), ("digits", (1, 8, 8))])
def test_builtin_sources_come_in_a_float16_models_dtype(source, shape):
    d = load_data(source, shape, limit=8, dtype="float16")
    assert d.x.dtype == np.float16 and d.x.shape == (8, *shape)
    assert np.array_equal(d.x, load_data(source, shape, limit=8).x.astype(np.float16))


def test_image_folders_come_in_a_float16_models_dtype(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((6, 6), 255, dtype=np.uint8)).save(tmp_path / "a" / "0.png")
    d = load_data(str(tmp_path), (1, 4, 4), split="all", dtype="float16")
    assert d.x.dtype == np.float16 and np.allclose(d.x, 1.0)


@pytest.mark.parametrize("dtype", ["uint8", "int64", "bool"])
def test_integer_data_for_a_float_input_is_refused_naming_both_dtypes(tmp_path, dtype):
    x = (np.arange(5 * 16).reshape(5, 1, 4, 4) % 256).astype(dtype)
    with pytest.raises(FinplanInputError) as raised:
        load_data(npz(tmp_path, x), (1, 4, 4), split="all")
    message = str(raised.value)
    assert "\n" not in message and ": x: " in message
    assert f"shape 5x1x4x4 dtype {dtype}" in message and "needs shape [N]x1x4x4 dtype float32" in message
    assert "unnormalised pixels" in message


def test_a_wrong_shape_names_shape_and_dtype_received_and_expected(tmp_path):
    with pytest.raises(FinplanInputError, match=r"has shape 5x1x4x5 dtype float64; the model input needs shape "
                                                r"\[N\]x1x4x4 dtype float16$"):
        load_data(npz(tmp_path, np.zeros((5, 1, 4, 5))), (1, 4, 4), split="all", dtype="float16")


def test_integer_inputs_take_integer_data_that_fits(tmp_path):
    x = np.arange(5 * 16).reshape(5, 1, 4, 4)  # int64, numpy's default, values 0..79
    d = load_data(npz(tmp_path, x), (1, 4, 4), split="all", dtype="uint8")
    assert d.x.dtype == np.uint8 and np.array_equal(d.x, x)
    with pytest.raises(FinplanInputError, match=r"values 0\.\.300 do not fit uint8"):
        load_data(npz(tmp_path, x * 300 // 79, "big.npz"), (1, 4, 4), split="all", dtype="uint8")
    with pytest.raises(FinplanInputError, match=r"dtype float64; .*dtype uint8 \(float data given to an integer input"):
        load_data(npz(tmp_path, x.astype(float), "f.npz"), (1, 4, 4), split="all", dtype="uint8")
    with pytest.raises(FinplanInputError, match=r"normalised float data .* needs dtype uint8"):
        load_data("digits", (1, 8, 8), dtype="uint8")


def test_values_beyond_the_input_dtypes_range_are_refused(tmp_path):
    x = np.full((5, 1, 4, 4), 1e5, dtype=np.float32)
    with pytest.raises(FinplanInputError, match=r"up to 100000 .* float16 holds at most 65504"):
        load_data(npz(tmp_path, x), (1, 4, 4), split="all", dtype="float16")
