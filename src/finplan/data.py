"""Training and calibration data for branchy models, as numpy arrays (no torch).

The profiler and the runtime use this module on devices without torch, so it depends on
numpy only (plus scikit-learn for ``digits`` and Pillow for image folders, both imported
when used).

Sources (``load_data(source, ...)``):

* ``digits``: scikit-learn's 8x8 handwritten digits (1797 samples, 10 classes), resized
  bilinearly to the largest square that fits the input, centred on a zero background.
* ``fashion-mnist``: the files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``); the official train file is the ``train`` split
  and the t10k file the ``calibration`` split.
* ``embedded``: the calibration split shipped with the embedded default model.
* a ``.npz`` file with ``x`` (``[N, *input_shape]``, or ``[N, H, W]`` for one channel) and
  optionally ``y`` (integer labels). Values are used as given; ``x``'s dtype is checked against
  the model input's (``dtype``): float data is cast to a float input's precision (float64 files
  are numpy's default and the values survive), integer or boolean data given to a float input is
  refused (it is almost always unnormalised pixels, 0..255: the model would see values it was
  never trained on), integer data given to an integer input must fit that type.
* a folder with one subfolder per class holding PNG/JPEG/PGM images; the class index is the
  position of the subfolder's name in sorted order.

Models with several inputs (``load_model_data(source, specs, ...)`` with one ``InputSpec`` per graph
input): a ``.npz`` whose arrays are named after the graph inputs plus optionally ``y``. Dtypes
must be the graph's exactly (int64 ids get int64; float64 for a float32 input is refused, never
cast), every array holds the same number of samples, a missing input or an unknown array is
named. A single-input model keeps accepting ``x`` (read by ``load_data`` as above, float
precision cast included) and the builtin sources and image folders.

Pixel sources (digits, fashion-mnist, image folders) and ``embedded`` give float data, cast to
the model input's float dtype. Pixel sources are scaled to [0, 1] and then
normalised the same way everywhere: ``(value - PIXEL_MEAN) / PIXEL_STD``, i.e. to [-1, 1].
One shared normalisation means a model trained on one pixel source and calibrated on
another sees the same value range.

Splits: ``train`` and ``calibration`` are disjoint and fixed by ``seed`` (a seeded
permutation; its last ``CALIBRATION_FRACTION`` goes to calibration); within them the order
is the seeded permutation, so ``limit`` takes a seeded sample. ``all`` is every sample in the
source's own order (use it for a file that already is a calibration set). The ``embedded``
source is a calibration split already: ``calibration`` and ``all`` both return it whole.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finplan.errors import FinplanInputError
from finplan.fileio import atomic_write_bytes, load_npz
from finplan.sample_files import IMAGE_SUFFIXES, PIXEL_MEAN, PIXEL_STD  # noqa: F401 (finplan.data's constants)
from finplan.sample_files import as_labels, digits, fashion_mnist, pixels_to_input, read_image_tree, read_npz
from finplan.units import shape_text

BUILTIN_SOURCES = ("digits", "fashion-mnist", "embedded")
SPLITS = ("train", "calibration", "all")
CALIBRATION_FRACTION = 0.2
FASHION_MNIST_DIR = Path(os.environ.get("FINPLAN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_MODEL_NAME = "b-alexnet-digits"
EMBEDDED_INPUT_SHAPE = (1, 32, 32)


@dataclass(frozen=True)
class Dataset:
    """``x``: ``[N, *input_shape]`` of the model input's dtype (float32 unless ``load_data`` was
    given another); ``y``: int64 ``[N]`` or None; ``name``: where it came from."""

    x: np.ndarray
    y: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


def embedded_model_path() -> Path:
    """The shipped default branchy model (B-AlexNet trained on digits, input 1x32x32)."""
    return EMBEDDED_DIR / f"{EMBEDDED_MODEL_NAME}.onnx"


def embedded_calibration_path() -> Path:
    """The calibration split (``x``, ``y``) that was held out when the embedded model was trained."""
    return EMBEDDED_DIR / f"{EMBEDDED_MODEL_NAME}.calib.npz"


def load_data(source: str, input_shape: tuple[int, ...], *, split: str = "calibration", seed: int = 0,
              limit: int | None = None, num_classes: int | None = None, dtype: str | np.dtype = "float32") -> Dataset:
    """Load ``source`` shaped for a model whose input (without the batch axis) is ``input_shape``
    and whose input dtype is ``dtype`` (a numpy name; ``x`` comes back in it).

    Raises FinplanInputError (naming the source and what was expected) for an unknown source,
    a shape or dtype that does not fit the model input (the message names both, received and
    expected), NaN or infinite values, labels outside ``[0, num_classes)``, and empty data.
    """
    source = str(source)
    input_shape = tuple(int(d) for d in input_shape)
    try:
        target = np.dtype(dtype)
    except TypeError:
        raise FinplanInputError(f"model input dtype {dtype!r} is not a numpy dtype name", file=source) from None
    if split not in SPLITS:
        raise FinplanInputError(f"split is {split!r}; expected one of {', '.join(SPLITS)}", file=source)
    if not input_shape or any(d <= 0 for d in input_shape):
        raise FinplanInputError(f"input shape {shape_text(input_shape)} is not valid; expected positive sizes such as 1x32x32",
                                file=source)
    if limit is not None and limit <= 0:
        raise FinplanInputError(f"limit is {limit}; expected a positive number of samples", file=source)

    if source == "embedded":
        x, y = read_npz(embedded_calibration_path(), input_shape, target, label="embedded")
        if split == "train":
            raise FinplanInputError("the embedded data holds only the calibration split of the embedded model; "
                                    "train on 'digits' instead", file=source)
        order = np.arange(len(x))  # already the held-out split, in its shipped order
        name = "embedded"
    elif source in ("digits", "fashion-mnist"):
        if source == "digits":
            images, labels = digits()
        else:
            images, labels = fashion_mnist(split, FASHION_MNIST_DIR)
        x = pixels_to_input(images, input_shape, source)
        y = labels
        if source == "fashion-mnist":  # the official files are the split; the seed only orders them
            order = np.random.default_rng(seed).permutation(len(x)) if split != "all" else np.arange(len(x))
        else:
            order = _split_order(len(x), split, seed)
        name = source
    else:
        path = Path(source)
        if path.is_dir() and path.suffix.lower() == ".npz":
            raise FinplanInputError("is a folder; expected a .npz file (or a folder of class subfolders not named "
                                    "*.npz)", file=source)
        if path.is_dir():
            x, y = read_image_tree(path, input_shape)
        elif path.is_file():
            if path.suffix.lower() != ".npz":
                raise FinplanInputError("is not a .npz file or a folder of class subfolders; expected a dataset "
                                        f"name ({', '.join(BUILTIN_SOURCES)}), a .npz with x (and y), or an image folder",
                                        file=source)
            x, y = read_npz(path, input_shape, target, label=source)
        elif path.suffix.lower() == ".npz" and path.exists():
            x, y = read_npz(path, input_shape, target, label=source)  # a device, a fifo...: load_npz says which
        elif path.suffix.lower() == ".npz" or os.sep in source or "/" in source:
            raise FinplanInputError("file not found", file=source)
        else:
            raise FinplanInputError(f"unknown dataset; expected one of {', '.join(BUILTIN_SOURCES)}, "
                                    "a .npz file or a folder with one subfolder per class", file=source)
        order = _split_order(len(x), split, seed)
        name = path.name or source

    if x.dtype.kind == "f" and target.kind != "f":  # pixel sources, image folders, embedded
        raise FinplanInputError(f"gives normalised float data (dtype {x.dtype}, shape {shape_text(x.shape)}); the model input "
                                f"needs dtype {target} shape [N]x{shape_text(input_shape)}: give a .npz with x of dtype "
                                f"{target} instead", file=source, field="x")
    # Checked on the whole source, so whether data is refused does not depend on the seed.
    if len(x) == 0:
        raise FinplanInputError("holds no samples; expected at least one", file=source, field="x")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise FinplanInputError(f"x holds {bad} NaN or infinite values; expected finite numbers", file=source, field="x")
    if y is not None and y.min() < 0:
        raise FinplanInputError(f"labels out of range: found {int(y.min())}; expected class indices >= 0",
                                file=source, field="y")
    if y is not None and num_classes is not None and y.max() >= num_classes:
        raise FinplanInputError(f"labels out of range: found {int(y.max())}; expected integers in "
                                f"0..{num_classes - 1} for a {num_classes}-class model", file=source, field="y")
    if target.kind == "f" and x.size and float(np.max(np.abs(x))) > float(np.finfo(target).max):
        raise FinplanInputError(f"x holds values up to {float(np.max(np.abs(x))):g} in magnitude; the model input's dtype "
                                f"{target} holds at most {float(np.finfo(target).max):g}", file=source, field="x")
    if limit is not None:
        order = order[:limit]
    # float data to the model's float precision; integer data was checked to fit the integer input
    x = np.ascontiguousarray(x[order], dtype=target)
    y = None if y is None else np.ascontiguousarray(y[order], dtype=np.int64)
    if len(x) == 0:
        raise FinplanInputError(f"the {split} split is empty; expected at least one sample", file=source)
    return Dataset(x=x, y=y, name=name)


def save_dataset(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write ``x`` (and ``y``) to a compressed ``.npz``, atomically."""
    buffer = io.BytesIO()
    arrays = {"x": dataset.x} if dataset.y is None else {"x": dataset.x, "y": dataset.y}
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x32x32"`` -> ``(1, 32, 32)``; raises FinplanInputError on anything else."""
    try:
        shape = tuple(int(part) for part in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise FinplanInputError(f"{text!r} is not a shape; expected sizes joined by 'x', e.g. 1x32x32",
                                field="--input-shape")
    return shape


# --------------------------------------------------------------------------- splits

def _split_order(count: int, split: str, seed: int) -> np.ndarray:
    permutation = np.random.default_rng(seed).permutation(count)
    calibration_count = int(round(count * CALIBRATION_FRACTION)) if count > 1 else 0
    boundary = count - calibration_count
    if split == "train":
        return permutation[:boundary]
    if split == "calibration":
        return permutation[boundary:]
    return np.arange(count)  # "all": the source's own order


# --------------------------------------------------------------------------- models with several inputs

@dataclass(frozen=True)
class InputSpec:
    """What a model expects of one graph input: ``shape`` is per sample (batch axis excluded), ints only."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelData:
    """Samples for a model with one or several inputs: ``inputs`` maps each graph input's name (in
    graph order) to ``[N, *shape]`` in that input's dtype; ``y``: int64 ``[N]`` or None."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def take(self, index) -> "ModelData":
        """The rows ``index`` (a slice or an index array) of every array."""
        return ModelData({name: array[index] for name, array in self.inputs.items()},
                         None if self.y is None else self.y[index], self.name)


LEGACY_INPUT_KEY = "x"  # the single-input .npz key of earlier versions


def input_specs(model, *, file: str | os.PathLike | None = None) -> list[InputSpec]:
    """The graph inputs of an ONNX ``model`` (a ModelProto) as InputSpecs, in graph order.

    Raises FinplanInputError naming the input when a dimension beyond the batch axis is symbolic
    or the element type has no numpy equivalent."""
    from onnx import helper

    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            raise FinplanInputError(f"graph input {value.name!r} has ONNX element type {tensor.elem_type}; expected a "
                                    "numeric or boolean tensor", file=file, field="graph.input") from None
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        specs.append(InputSpec(value.name, dtype, tuple(dims[1:])))
    return check_specs(specs, file=file)


def check_specs(specs, *, file=None, field: str = "graph.input") -> list[InputSpec]:
    """Validate InputSpecs once (names unique, numeric dtypes, static positive per-sample shapes)."""
    specs = list(specs)
    if not specs:
        raise FinplanInputError("the model has no inputs; expected at least one", file=file, field=field)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise FinplanInputError(f"input names repeat ({', '.join(names)}); expected distinct names", file=file, field=field)
    checked = []
    for spec in specs:
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise FinplanInputError(f"input {spec.name!r} has dtype {spec.dtype!r}; expected a numpy dtype name",
                                    file=file, field=field) from None
        if dtype.kind not in "biuf":
            raise FinplanInputError(f"input {spec.name!r} has dtype {dtype}; finplan feeds numeric or boolean inputs",
                                    file=file, field=field)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in spec.shape):
            raise FinplanInputError(f"input {spec.name!r} has per-sample shape {shape_text(spec.shape)} (batch axis excluded); "
                                    "finplan needs static positive sizes (no symbolic dimension) beyond the batch axis (re-export with a fixed "
                                    "sequence length / image size)", file=file, field=field)
        checked.append(InputSpec(spec.name, dtype, tuple(int(d) for d in spec.shape)))
    return checked


def load_model_data(source: str, specs, *, split: str = "calibration", seed: int = 0, limit: int | None = None,
                    num_classes: int | None = None, field: str = "--data") -> ModelData:
    """Samples for a model whose graph inputs are ``specs`` (a list of InputSpec, graph order).

    Parameters
    ----------
    source : a builtin dataset name or an image folder (single-input image models, as ``load_data``),
        or a ``.npz`` whose arrays are named after the graph inputs, plus optional ``y`` (labels).
        A single-input model keeps accepting the array ``x`` (earlier versions' format).
    split, seed, limit, num_classes : as ``load_data``.
    field : the name the caller knows the source by (a CLI option), for messages about the source itself.

    Raises
    ------
    FinplanInputError, one line per problem naming the file, the array and what was expected: a
    missing input, an unknown array, arrays with different sample counts, a per-sample shape or a
    dtype that is not the input's (exact dtypes: float64 data for a float32 input is refused, never
    cast), NaN/inf, labels out of range, no samples.

    Notes
    -----
    The legacy key ``x`` of a single-input model goes through ``load_data`` unchanged, so float
    data there is still cast to the input's float precision (float64 files are numpy's default; the
    existing single-input tests and users' files rely on it). Arrays named after the graph inputs are
    checked exactly. Cost: one read of the file, O(total array size).
    """
    source = str(source)
    specs = check_specs(specs, field="model input")
    if split not in SPLITS:
        raise FinplanInputError(f"split is {split!r}; expected one of {', '.join(SPLITS)}", file=source)
    if limit is not None and limit <= 0:
        raise FinplanInputError(f"limit is {limit}; expected a positive number of samples", file=source)
    path = Path(source)
    is_npz = path.is_file() and path.suffix.lower() == ".npz"
    # one reader for every .npz (fileio.load_npz): a corrupt, pickled or oversized file is one line
    archive = load_npz(path, label=source) if is_npz else None
    if not is_npz or _legacy_single_input(archive, specs):
        if len(specs) != 1:
            names = ", ".join(spec.name for spec in specs)
            if not path.exists() and (path.suffix.lower() == ".npz" or "/" in source):
                raise FinplanInputError("file not found", file=source, field=field)
            raise FinplanInputError(f"is not a .npz file; the model has {len(specs)} inputs: expected a .npz with "
                                    f"arrays {names} (and optionally y)", file=source, field=field)
        spec = specs[0]
        data = load_data(source, spec.shape, split=split, seed=seed, limit=limit, num_classes=num_classes,
                         dtype=spec.dtype)
        return ModelData({spec.name: data.x}, data.y, data.name)
    arrays, y = _read_model_npz(archive, specs, source)
    count = len(next(iter(arrays.values())))
    if y is not None:
        if y.min() < 0:
            raise FinplanInputError(f"labels out of range: found {int(y.min())}; expected class indices >= 0",
                                    file=source, field="y")
        if num_classes is not None and y.max() >= num_classes:
            raise FinplanInputError(f"labels out of range: found {int(y.max())}; expected integers in "
                                    f"0..{num_classes - 1} for a {num_classes}-class model", file=source, field="y")
    order = _split_order(count, split, seed)
    if limit is not None:
        order = order[:limit]
    if len(order) == 0:
        raise FinplanInputError(f"the {split} split is empty; expected at least one sample", file=source)
    inputs = {spec.name: np.ascontiguousarray(arrays[spec.name][order]) for spec in specs}
    return ModelData(inputs, None if y is None else np.ascontiguousarray(y[order]), path.name)


def _legacy_single_input(arrays: dict | None, specs: list[InputSpec]) -> bool:
    """A single-input model given an ``x`` array (earlier versions' file, or an input named x): read it as
    ``load_data`` always has."""
    return len(specs) == 1 and arrays is not None and LEGACY_INPUT_KEY in arrays


def _read_model_npz(arrays_in: dict, specs: list[InputSpec], label: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    expected = [spec.name for spec in specs]
    wanted = ", ".join(expected) + " (and optionally y)"
    keys = list(arrays_in)
    missing = [name for name in expected if name not in keys]
    if missing:
        raise FinplanInputError(f"has no array for graph input {missing[0]!r} (found: {', '.join(keys) or 'none'}); "
                                f"expected arrays {wanted}", file=label, field=missing[0])
    unknown = [key for key in keys if key not in expected and key != "y"]
    if unknown:
        raise FinplanInputError(f"array {unknown[0]!r} is not a graph input of the model; expected arrays {wanted}",
                                file=label, field=unknown[0])
    arrays = {name: arrays_in[name] for name in expected}
    y_raw = arrays_in.get("y")
    counts = {name: (int(array.shape[0]) if array.ndim else None) for name, array in arrays.items()}
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype != spec.dtype or array.ndim == 0 or tuple(array.shape[1:]) != spec.shape:
            why = ""
            if array.dtype != spec.dtype:
                why = (f" (dtype {array.dtype} given for a {spec.dtype} input; finplan never casts: save "
                       f"{spec.name} as {spec.dtype})")
            raise FinplanInputError(f"has shape {shape_text(array.shape)} dtype {array.dtype}; the graph input needs shape "
                                    f"[N]x{shape_text(spec.shape)} dtype {spec.dtype}{why}", file=label, field=spec.name)
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise FinplanInputError(f"arrays hold different numbers of samples ({listed}); expected the same N for every "
                                "input", file=label, field=expected[-1] if len(expected) > 1 else expected[0])
    count = next(iter(counts.values()))
    if count == 0:
        raise FinplanInputError("holds no samples; expected at least one", file=label, field=expected[0])
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise FinplanInputError(f"holds {bad} NaN or infinite values; expected finite numbers", file=label,
                                    field=spec.name)
    y = None
    if y_raw is not None:
        y = as_labels(y_raw, label)
        if y.shape != (count,):
            raise FinplanInputError(f"y has shape {shape_text(y.shape)}; expected one label per sample ({count})",
                                    file=label, field="y")
    return arrays, y
