"""Reading samples into model inputs: scikit-learn's digits, Fashion-MNIST's IDX files, image
folders, .npz files.

Apart from ``finplan.data`` (which chooses a source, splits it and hands out datasets): every
function here turns one file or folder into arrays, or refuses it with one line naming the
file and what was expected.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from finplan.errors import EnvironmentFault, FinplanInputError
from finplan.fileio import load_npz
from finplan.units import shape_text

PIXEL_MEAN = 0.5
PIXEL_STD = 0.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pnm", ".bmp")


def digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EnvironmentFault("the digits dataset needs scikit-learn, which this Python does not have",
                               check="pip install scikit-learn") from None
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # digits pixels are 0..16
    return images, bunch.target.astype(np.int64)


def fashion_mnist(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    prefixes = {"train": ["train"], "calibration": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels = [], []
    for prefix in prefixes:
        image_file = folder / f"{prefix}-images-idx3-ubyte.gz"
        label_file = folder / f"{prefix}-labels-idx1-ubyte.gz"
        for needed in (image_file, label_file):
            if not needed.is_file():
                raise EnvironmentFault(f"fashion-mnist: {needed} not found",
                                       check="apt-get install dataset-fashion-mnist (or set FINPLAN_FASHION_MNIST_DIR "
                                             "to the folder holding its files)")
        images.append(read_idx(image_file).astype(np.float32) / 255.0)
        labels.append(read_idx(label_file).astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic 0x0000 08 ndim, big-endian sizes, uint8 data."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
        if raw[:3] != b"\x00\x00\x08":
            raise ValueError("not an unsigned-byte IDX file")
        ndim = raw[3]
        sizes = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(sizes)
    except (OSError, ValueError, EOFError) as exc:
        raise FinplanInputError(f"cannot read as an IDX file ({exc})", file=path) from None


def pixels_to_input(images: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """Grey images ``[N, h, w]`` in [0, 1] -> normalised ``[N, C, H, W]`` for ``input_shape``."""
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise FinplanInputError(f"holds grey images; the model input {shape_text(input_shape)} does not fit: expected "
                                "CxHxW with 1 or 3 channels (e.g. 1x32x32)", file=source)
    channels, height, width = input_shape
    side = min(height, width)
    resized = resize_bilinear(images, side, side)
    canvas = np.zeros((len(images), height, width), dtype=np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    canvas[:, top:top + side, left:left + side] = resized
    x = (canvas - PIXEL_MEAN) / PIXEL_STD
    return np.repeat(x[:, None], channels, axis=1)


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``[N, h, w]`` (align-corners=False, like PIL/torch), numpy only."""
    def weights(size_in: int, size_out: int):
        centre = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        centre = np.clip(centre, 0, size_in - 1)
        low = np.floor(centre).astype(int)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (centre - low).astype(np.float32)

    if images.shape[1:] == (height, width):
        return images.astype(np.float32)
    r0, r1, rw = weights(images.shape[1], height)
    c0, c1, cw = weights(images.shape[2], width)
    rows = images[:, r0, :] * (1 - rw)[None, :, None] + images[:, r1, :] * rw[None, :, None]
    return (rows[:, :, c0] * (1 - cw) + rows[:, :, c1] * cw).astype(np.float32)


def read_image_tree(root: Path, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise FinplanInputError(f"holds images; the model input {shape_text(input_shape)} does not fit: expected CxHxW with "
                                "1 or 3 channels", file=root)
    try:
        from PIL import Image
    except ImportError:
        raise EnvironmentFault(f"{root}: reading an image folder needs Pillow, which this Python does not have",
                               check="pip install pillow") from None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FinplanInputError("has no class subfolders; expected one subfolder per class holding images", file=root)
    channels, height, width = input_shape
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(image.convert(mode).resize((width, height), Image.BILINEAR), dtype=np.float32)
            except Exception as exc:  # noqa: BLE001 (PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...)
                raise FinplanInputError(f"cannot read as an image ({exc.__class__.__name__})", file=file) from None
            pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
            images.append((pixels / 255.0 - PIXEL_MEAN) / PIXEL_STD)
            labels.append(index)
    if not images:
        raise FinplanInputError(f"has no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders", file=root)
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)


def read_npz(path: Path, input_shape: tuple[int, ...], target: np.dtype, *,
              label: str) -> tuple[np.ndarray, np.ndarray | None]:
    arrays = load_npz(path, label=label)  # one line for a folder, a corrupt zip, pickles, a zip bomb
    keys = set(arrays)
    if "x" not in keys:
        raise FinplanInputError(f"has no array 'x' (found: {', '.join(sorted(keys)) or 'none'}); expected x "
                                "[N, *input_shape] and optionally y [N]", file=label, field="x")
    x_raw = arrays["x"]
    y_raw = arrays.get("y")
    x = x_raw
    if x.ndim >= 1 and x.shape[1:] != input_shape and len(input_shape) >= 2 and input_shape[0] == 1 \
            and x.shape[1:] == input_shape[1:]:
        x = x[:, None]  # [N, H, W] for a one-channel model
    check_x(x, input_shape, target, label)
    y = None
    if y_raw is not None:
        y = as_labels(y_raw, label)
        if y.shape != (len(x),):
            raise FinplanInputError(f"y has shape {shape_text(y.shape)}; expected one label per sample ({len(x)})",
                                    file=label, field="y")
    return x, y


def check_x(x: np.ndarray, input_shape: tuple[int, ...], target: np.dtype, label: str) -> None:
    """Refuse ``x`` unless its shape is ``[N, *input_shape]`` and its dtype can feed a ``target``
    input without changing what the values mean. One message names the received and the expected
    shape and dtype, whichever of them is wrong, plus why for a dtype."""
    kind, why = x.dtype.kind, None
    if kind not in "biuf":
        why = "expected numbers"
    elif target.kind == "f" and kind in "biu":
        low, high = (int(x.min()), int(x.max())) if x.size else (0, 0)
        why = (f"integer data, values {low}..{high}, given to a float input is usually unnormalised pixels: "
               "normalise it as the model was trained (finplan's pixel sources use (pixel / 255 - 0.5) / 0.5) "
               "and save x as float")
    elif target.kind in "iu":
        if kind not in "biu":
            why = f"float data given to an integer input; save x as {target}"
        elif x.size and not (np.iinfo(target).min <= int(x.min()) and int(x.max()) <= np.iinfo(target).max):
            why = f"values {int(x.min())}..{int(x.max())} do not fit {target}"
    elif target.kind == "b" and kind != "b":
        why = "expected booleans"
    elif target.kind not in "biuf":
        why = f"finplan feeds numeric inputs only, not {target}"
    if why is not None or x.ndim == 0 or x.shape[1:] != input_shape:
        raise FinplanInputError(f"has shape {shape_text(x.shape)} dtype {x.dtype}; the model input needs shape "
                                f"[N]x{shape_text(input_shape)} dtype {target}" + (f" ({why})" if why else ""),
                                file=label, field="x")


def as_labels(array: np.ndarray, label: str) -> np.ndarray:
    if array.dtype.kind in "iub":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise FinplanInputError(f"y has dtype {array.dtype} with non-integer values; expected integer class labels",
                            file=label, field="y")
