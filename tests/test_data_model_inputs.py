"""load_model_data: .npz arrays named after the graph inputs (several, any numeric dtype), checked
exactly against the graph's dtypes and shapes; a single-input model keeps its x files and datasets."""
from __future__ import annotations

import numpy as np
import pytest

from finplan.data import InputSpec, ModelData, load_model_data
from finplan.errors import FinplanInputError

SPECS = [InputSpec("input_ids", np.dtype("int64"), (6,)), InputSpec("attention_mask", np.dtype("int64"), (6,))]
IDS = np.arange(60, dtype=np.int64).reshape(10, 6) % 7
MASK = np.ones((10, 6), dtype=np.int64)
Y = np.arange(10) % 2


def npz(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


def test_two_int64_inputs_come_whole_in_graph_order_with_labels(tmp_path):
    data = load_model_data(npz(tmp_path, attention_mask=MASK, y=Y, input_ids=IDS), SPECS, split="all")
    assert list(data.inputs) == ["input_ids", "attention_mask"] and len(data) == 10
    assert data.inputs["input_ids"].dtype == np.int64 and np.array_equal(data.inputs["input_ids"], IDS)
    assert np.array_equal(data.y, Y) and data.name == "d.npz"
    part = data.take(slice(2, 5))
    assert isinstance(part, ModelData) and len(part) == 3 and np.array_equal(part.inputs["attention_mask"], MASK[2:5])
    rows = data.take(np.array([9, 0]))
    assert np.array_equal(rows.inputs["input_ids"], IDS[[9, 0]]) and np.array_equal(rows.y, Y[[9, 0]])


def test_splits_and_limit_take_the_same_rows_of_every_array(tmp_path):
    ids = np.arange(50, dtype=np.int64)[:, None].repeat(6, axis=1)
    data = load_model_data(npz(tmp_path, input_ids=ids, attention_mask=ids.copy()), SPECS, split="calibration",
                           seed=3, limit=4)
    assert len(data) == 4 and np.array_equal(data.inputs["input_ids"], data.inputs["attention_mask"])
    again = load_model_data(npz(tmp_path, input_ids=ids, attention_mask=ids.copy()), SPECS, split="calibration",
                            seed=3, limit=4)
    assert np.array_equal(data.inputs["input_ids"], again.inputs["input_ids"])


def test_bool_and_float_inputs_keep_their_dtypes(tmp_path):
    specs = [InputSpec("image", np.dtype("float32"), (2, 2)), InputSpec("keep", np.dtype("bool"), (2,))]
    data = load_model_data(npz(tmp_path, image=np.zeros((3, 2, 2), np.float32), keep=np.ones((3, 2), bool)), specs,
                           split="all")
    assert data.inputs["image"].dtype == np.float32 and data.inputs["keep"].dtype == np.bool_ and data.y is None


def test_a_single_input_model_keeps_x_and_the_builtin_datasets(tmp_path):
    spec = [InputSpec("pixels", np.dtype("float32"), (1, 8, 8))]
    legacy = load_model_data(npz(tmp_path, x=np.zeros((5, 1, 8, 8)), y=np.zeros(5, int)), spec, split="all")
    # the earlier versions' x: float64 cast to the input's float32, as load_data always did (tests/test_data_dtypes.py)
    assert list(legacy.inputs) == ["pixels"] and legacy.inputs["pixels"].dtype == np.float32 and len(legacy) == 5
    named = load_model_data(npz(tmp_path, "n.npz", pixels=np.zeros((5, 1, 8, 8), np.float32)), spec, split="all")
    assert named.inputs["pixels"].shape == (5, 1, 8, 8)
    digits = load_model_data("digits", spec, limit=7)
    assert digits.inputs["pixels"].shape == (7, 1, 8, 8) and digits.y.shape == (7,)


@pytest.mark.parametrize("arrays, specs, kwargs, needles", [
    ({"input_ids": IDS}, SPECS, {}, ["d.npz: attention_mask: ", "no array for graph input 'attention_mask'",
                                     "expected arrays input_ids, attention_mask"]),
    ({"input_ids": IDS, "attention_mask": MASK, "token_type_ids": MASK}, SPECS, {},
     ["d.npz: token_type_ids: ", "not a graph input", "expected arrays input_ids, attention_mask"]),
    ({"input_ids": IDS.astype(np.int32), "attention_mask": MASK}, SPECS, {},
     ["d.npz: input_ids: ", "dtype int32", "dtype int64", "never casts"]),
    ({"input_ids": IDS, "attention_mask": MASK[:7]}, SPECS, {},
     ["d.npz: attention_mask: ", "different numbers of samples", "input_ids 10, attention_mask 7"]),
    ({"input_ids": IDS[:, :5], "attention_mask": MASK}, SPECS, {}, ["d.npz: input_ids: ", "shape 10x5", "[N]x6"]),
    ({"input_ids": IDS, "attention_mask": MASK, "y": Y[:4]}, SPECS, {}, ["d.npz: y: ", "one label per sample (10)"]),
    ({"input_ids": IDS, "attention_mask": MASK, "y": Y + 3}, SPECS, {"num_classes": 2},
     ["d.npz: y: ", "labels out of range", "0..1"]),
    ({"input_ids": IDS[:0], "attention_mask": MASK[:0]}, SPECS, {}, ["d.npz: input_ids: ", "no samples"]),
    ({"image": np.zeros((4, 3)), "keep": np.ones((4, 3), bool)},
     [InputSpec("image", np.dtype("float32"), (3,)), InputSpec("keep", np.dtype("bool"), (3,))], {},
     ["d.npz: image: ", "dtype float64", "dtype float32", "never casts"]),
    ({"image": np.full((4, 3), np.nan, np.float32), "keep": np.ones((4, 3), bool)},
     [InputSpec("image", np.dtype("float32"), (3,)), InputSpec("keep", np.dtype("bool"), (3,))], {},
     ["d.npz: image: ", "NaN"]),
    ({"z": IDS}, [InputSpec("ids", np.dtype("int64"), (6,))], {}, ["d.npz: ids: ", "no array for graph input 'ids'"]),
])
def test_bad_model_data_is_one_line_naming_file_array_and_expectation(tmp_path, arrays, specs, kwargs, needles):
    with pytest.raises(FinplanInputError) as raised:
        load_model_data(npz(tmp_path, **arrays), specs, split="all", **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("source, specs, needles", [
    ("digits", SPECS, ["digits: --data: ", "the model has 2 inputs", "input_ids, attention_mask"]),
    ("nowhere/d.npz", SPECS, ["nowhere/d.npz: --data: ", "file not found"]),
    ("digits", [InputSpec("ids", np.dtype("int64"), ("seq",))], ["symbolic", "ids"]),
])
def test_sources_that_do_not_fit_the_model_are_refused(source, specs, needles):
    with pytest.raises(FinplanInputError) as raised:
        load_model_data(source, specs)
    for needle in needles:
        assert needle in str(raised.value), str(raised.value)
