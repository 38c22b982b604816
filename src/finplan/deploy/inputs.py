"""Inputs for ``finplan run`` and ``finplan verify``: the data sources of ``finplan.data``,
shaped for the deployment's input and checked against it (shape and dtype)."""
from __future__ import annotations

import numpy as np

from finplan.deploy.manifest import TensorSpec
from finplan.errors import FinplanInputError

BUILTIN = ("digits", "fashion-mnist", "embedded")


def load_inputs(source: str, spec: TensorSpec, *, limit: int | None = None, seed: int = 0,
                num_classes: int | None = None):
    """(x, y or None, name) for ``spec``. Named datasets give their calibration split (the one the
    profiler measured exit rates on, and that training never saw); a user's file is used whole,
    as ``finplan profile --calib`` does."""
    from finplan.data import load_data

    shape = tuple(spec.shape[1:])
    if any(not isinstance(d, int) for d in shape):
        raise FinplanInputError(f"the deployment input {spec.describe()} has symbolic dimensions beyond the batch axis; "
                                "finplan needs static sample shapes", field="input")
    split = "calibration" if source in BUILTIN else "all"
    dataset = load_data(source, shape, split=split, seed=seed, limit=limit, num_classes=num_classes)
    x = dataset.x
    if x.dtype != np.dtype(spec.dtype):
        raise FinplanInputError(f"x has shape {tuple(x.shape)} dtype {x.dtype}; the deployment input {spec.name!r} "
                                f"needs shape (N, {', '.join(map(str, shape))}) dtype {spec.dtype}", file=source, field="x")
    spec.check(x, file=source, field="x")
    return x, dataset.y, dataset.name
