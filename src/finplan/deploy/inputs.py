"""Inputs for ``finplan run`` and ``finplan verify``: the data sources of ``finplan.data``,
shaped for the deployment's input and checked against it (shape and dtype)."""
from __future__ import annotations

from finplan.deploy.manifest import TensorSpec
from finplan.errors import FinplanInputError

BUILTIN = ("digits", "fashion-mnist", "embedded")


def load_inputs(source: str, spec: TensorSpec, *, limit: int | None = None, seed: int = 0,
                num_classes: int | None = None):
    """(x, y or None, name) for ``spec``. Named datasets give their calibration split (the one the
    profiler measured exit rates on, and that training never saw); a user's file is used whole,
    as ``finplan profile --calib`` does.

    ``x`` comes in the deployment's input dtype: ``load_data`` checks the file's dtype against it
    (float data is cast to the input's float precision; integer data for a float input is
    refused) and names the received and expected shape and dtype when they do not fit."""
    from finplan.data import load_data

    shape = tuple(spec.shape[1:])
    if any(not isinstance(d, int) for d in shape):
        raise FinplanInputError(f"the deployment input {spec.describe()} has symbolic dimensions beyond the batch axis; "
                                "finplan needs static sample shapes", field="input")
    split = "calibration" if source in BUILTIN else "all"
    dataset = load_data(source, shape, split=split, seed=seed, limit=limit, num_classes=num_classes, dtype=spec.dtype)
    spec.check(dataset.x, file=source, field="x")  # load_data's contract; a wrong x here is finplan's bug
    return dataset.x, dataset.y, dataset.name
