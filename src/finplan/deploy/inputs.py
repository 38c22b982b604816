"""Inputs for ``finplan run``, ``finplan verify`` and ``finplan infer``: the data sources of
``finplan.data``, shaped for the deployment's graph inputs and checked against them (names,
shapes and dtypes)."""
from __future__ import annotations

from finplan.deploy.manifest import TensorSpec
from finplan.errors import FinplanInputError

BUILTIN = ("digits", "fashion-mnist", "embedded")


def input_specs_of(specs: TensorSpec | tuple[TensorSpec, ...] | list[TensorSpec]):
    """finplan.data InputSpecs (per-sample shapes) for the deployment's graph inputs."""
    from finplan.data import InputSpec

    specs = (specs,) if isinstance(specs, TensorSpec) else tuple(specs)
    result = []
    for spec in specs:
        shape = tuple(spec.shape[1:])
        if any(not isinstance(d, int) for d in shape):
            raise FinplanInputError(f"the deployment input {spec.describe()} has symbolic dimensions beyond the batch "
                                    "axis; finplan needs static sample shapes", field="inputs")
        result.append(InputSpec(spec.name, spec.np_dtype, shape))
    return result


def load_inputs(source: str, specs, *, limit: int | None = None, seed: int = 0, num_classes: int | None = None,
                field: str = "--data"):
    """(inputs: name -> [N, ...] in graph order, y or None, name) for the graph inputs ``specs``
    (one TensorSpec or several). Named datasets give their calibration split (the one the
    profiler measured exit rates on, and that training never saw); a user's file is used whole,
    as ``finplan profile --calib`` does.

    A ``.npz`` holds one array per graph input (named after it) plus optionally ``y``; a
    single-input model also takes ``x``. Dtypes must be the graph's (``load_model_data``); the
    legacy ``x`` keeps ``load_data``'s rules (float data cast to the input's float precision)."""
    from finplan.data import load_model_data

    specs = (specs,) if isinstance(specs, TensorSpec) else tuple(specs)
    split = "calibration" if source in BUILTIN else "all"
    data = load_model_data(source, input_specs_of(specs), split=split, seed=seed, limit=limit,
                           num_classes=num_classes, field=field)
    for spec in specs:  # load_model_data's contract; a wrong array here is finplan's bug
        spec.check(data.inputs[spec.name], file=source, field=spec.name)
    return data.inputs, data.y, data.name
