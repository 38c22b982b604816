"""``prepare_profile``: load and check everything a profile needs before any measurement.

Bad input never costs a measurement: the model, onnxruntime sessions, calibration data and
energy backend are loaded and checked here (raising FinplanInputError); ``ProfileJob.run``
(run.py) then measures.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx

from finplan.contract import Contract, load_branchy_model
from finplan.errors import FinplanInputError
from finplan.exit_policy import policy_of
from finplan.onnx_graph import bytes_per_sample, extract_part, infer_shapes, params_bytes, tensor_shape
from finplan.onnx_parts import Part, TensorInfo, compute_layout, layout_boundaries, split_branchy
from finplan.profiler.documents import WHOLE
from finplan.profiler.energy import select_meter
from finplan.profiler.energy.external import ExternalMeter
from finplan.profiler.flops import activation_bytes, count_flops
from finplan.profiler.probes import io_runner, stage_probe
from finplan.profiler.run import (Progress, ProfileJob, ProfileOptions, ProfileResult, ProfiledModel, Sessions,
                                  TimingBatch)
from finplan.profiler.timing import THREADS_TIE, SessionConfig, check_provider, choose_threads, make_session, \
    thread_candidates

THREADS_BUDGET_SHARE = 0.1  # of --budget-s, to choose the thread count when --threads is not given


def _static_costs(part: Part, inferred: onnx.ModelProto, crossing: tuple[TensorInfo, ...] = ()) -> dict:
    """FLOPs, weights and the bytes a part hands on per sample: for a block with a cut after it, its
    live set (every tensor crossing that cut, listed in ``live_set``); else its output's size."""
    counted = count_flops(part.model)
    doc = {
        "flops": counted.flops,
        "params_bytes": params_bytes(part.model),
        "output_bytes": (sum(t.bytes_per_sample for t in crossing) if crossing
                         else bytes_per_sample(inferred, part.outputs[0])),
    }
    if crossing:
        doc["live_set"] = [{"tensor": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.bytes_per_sample}
                           for t in crossing]
    memory = activation_bytes(part.model)
    if memory is not None:
        doc["activation_bytes"] = memory
    doc["unknown_ops"] = counted.unknown_ops
    return doc


def _calibration_split(source: str) -> str:
    # Named datasets hold a train split the model may have seen; a user's file is calibration data as a whole.
    return "calibration" if source in ("digits", "fashion-mnist", "embedded") else "all"


def prepare_profile(model_path: str | os.PathLike, options: ProfileOptions | None = None) -> ProfileJob:
    """Load and check everything a profile needs; raises FinplanInputError before any measurement."""
    options = options or ProfileOptions()
    path = Path(model_path)
    if options.budget_s is None or not options.budget_s > 0:
        raise FinplanInputError(f"is {options.budget_s}; expected seconds > 0", field=options.name("budget_s"))
    if options.threads is not None and options.threads < 1:
        raise FinplanInputError(f"is {options.threads}; expected a thread count >= 1", field=options.name("threads"))
    if options.limit is not None and options.limit < 1:
        raise FinplanInputError(f"is {options.limit}; expected a number of samples >= 1", field=options.name("limit"))
    if not options.min_window_s > 0:
        raise FinplanInputError(f"is {options.min_window_s}; expected seconds > 0", field=options.name("min_window_s"))
    if options.batch_size < 1:
        raise FinplanInputError(f"is {options.batch_size}; expected >= 1", field=options.name("batch_size"))
    model, contract = load_branchy_model(path, blocks=list(options.blocks), exits=list(options.exits))
    inferred = infer_shapes(model)
    layout = compute_layout(inferred, contract)
    live = layout_boundaries(layout, contract)  # validated: static sizes beyond the batch axis
    inputs = live[0]
    if options.need_card and not options.calib:
        calib = options.name("calib")
        raise FinplanInputError(f"{options.name('need_card')} needs {calib} DATA: the card's per-exit accuracy comes "
                                f"from labelled calibration data (e.g. {calib} embedded, digits or a .npz with x and y)",
                                field=options.name("need_card"))

    config = SessionConfig.default(options.threads)
    check_provider(config)
    threads_choice = None
    selection = select_meter(options.energy, execution_provider=config.execution_provider, power_w=options.power_w,
                             idle_w=options.idle_w, busy_w=options.busy_w, energy_file=options.energy_file,
                             rapl_root=options.rapl_root, country_iso_code=options.country_iso_code)

    # onnxruntime must load the whole model and every part before we spend time measuring.
    whole_session = make_session(model, config, what="the model", file=path)
    try:
        blocks, exits = split_branchy(model, contract)
    except Exception as exc:  # a contract that validates but whose parts onnx cannot type
        raise FinplanInputError(f"cannot split into blocks and exits ({exc})", file=path) from None
    calib_model = extract_part(inferred, list(contract.inputs), [e.output for e in contract.exits], name="calibration")
    fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None
    if fixed_batch is not None:  # a fixed batch axis: keep it, reshapes inside may depend on it
        for value in calib_model.graph.input:
            value.type.tensor_type.shape.dim[0].dim_value = fixed_batch
    sessions, calib_session = _sessions(model, blocks + exits, calib_model, config, path, whole_session)
    if isinstance(selection.meter, ExternalMeter):
        selection.meter.check_parts([p.name for p in blocks + exits])

    crossing = {b.name: live[k] for k, b in enumerate(blocks, start=1)}
    static = {p.name: _static_costs(p, inferred, crossing.get(p.name, ())) for p in blocks + exits}
    data = None
    if options.calib:
        data = _load_calibration(options, model, contract, inferred, path)
        if options.need_card and data.y is None:
            raise FinplanInputError("has no labels (y); the model card's per-exit accuracy needs them",
                                    file=options.calib, field="y")
    batch = fixed_batch or options.batch_size
    if data is not None and len(data) >= batch:
        timing_input = {name: array[:batch] for name, array in data.inputs.items()}
        source = f"first {batch} calibration sample(s) of {data.name}"
    else:
        timing_input, source = synthetic_inputs(inputs, batch, seed=options.seed)
    if options.threads is None and config.intra_op_threads > 1:
        config, threads_choice = _choose_threads(model, config, timing_input, options, path)
        sessions, calib_session = _sessions(model, blocks + exits, calib_model, config, path)
    policies = [policy_of(model, e.output) for e in contract.exits]
    try:
        probe = stage_probe(inferred, contract, config, policies, path)
    except FinplanInputError:
        raise
    except Exception:  # a graph whose fused first stage cannot be cut out: no probe, no stage overhead
        probe = None
    return ProfileJob(options, ProfiledModel(path, model, contract, blocks, exits, static, inputs, policies),
                      Sessions(config, sessions, calib_session, threads_choice), TimingBatch(timing_input, source),
                      data, selection, probe)


def synthetic_inputs(inputs: tuple[TensorInfo, ...], batch: int, *, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """A timing batch when no calibration data is given, per input dtype, and what was used.

    Floats: standard normal (seeded). Booleans, and integers whose name says mask: ones (every
    position attended). Other integers: zeros, since the valid range of token ids or indices is
    not knowable from the graph (0 is valid for any vocabulary); give --calib for real ones.
    Latency of most models does not depend on the values; data-dependent ops (e.g. NonZero) may.
    """
    rng = np.random.default_rng(seed)
    arrays, said = {}, []
    for tensor in inputs:
        shape, dtype = (batch, *tensor.shape[1:]), np.dtype(tensor.dtype)
        if dtype.kind == "f":
            arrays[tensor.name] = rng.standard_normal(shape).astype(dtype)
            said.append(f"{tensor.name} standard normal (seed {seed})")
        elif dtype.kind == "b" or (dtype.kind in "iu" and "mask" in tensor.name.lower()):
            arrays[tensor.name] = np.ones(shape, dtype)
            said.append(f"{tensor.name} ones (a mask: every position on)")
        else:
            arrays[tensor.name] = np.zeros(shape, dtype)
            said.append(f"{tensor.name} zeros ({dtype.name}: valid ids are not knowable from the graph; "
                        "--calib gives real ones)")
    return arrays, "synthetic: " + "; ".join(said)


def _sessions(model: onnx.ModelProto, parts: list[Part], calib_model: onnx.ModelProto, config: SessionConfig,
              path: Path, whole_session=None) -> tuple[dict[str, object], object]:
    """Sessions of the whole model (``whole_session`` when already made with ``config``) and
    every part (by name), and of the calibration model."""
    sessions = {WHOLE: whole_session or make_session(model, config, what="the model", file=path)}
    for part in parts:
        sessions[part.name] = make_session(part.model, config, what=f"{part.kind} {part.name!r}", file=path)
    return sessions, make_session(calib_model, config, what="the exit outputs", file=path)


def _choose_threads(model: onnx.ModelProto, config: SessionConfig, timing_input: dict[str, np.ndarray],
                    options: ProfileOptions, path: Path) -> tuple[SessionConfig, dict]:
    """The session config with the fastest thread count for the whole model at the timing batch
    (``choose_threads``; a tenth of the timing budget), and how it was chosen."""
    whole_input = dict(timing_input)

    def make_runner(threads: int):
        session = make_session(model, dataclasses.replace(config, intra_op_threads=threads), what="the model",
                               file=path)
        return io_runner(session, whole_input)

    candidates = thread_candidates(config.intra_op_threads)
    chosen, p50 = choose_threads(make_runner, candidates, budget_s=THREADS_BUDGET_SHARE * options.budget_s,
                                 seed=options.seed)
    return dataclasses.replace(config, intra_op_threads=chosen), {
        "method": "fastest whole-model p50 at the timing batch, fewest threads within "
                  f"{THREADS_TIE:.0%} (--threads N sets it instead)",
        "whole_model_p50_s": {str(c): p50[c] for c in candidates},
    }


def _load_calibration(options: ProfileOptions, model: onnx.ModelProto, contract: Contract,
                      inferred: onnx.ModelProto, path: Path):
    """Calibration samples for every graph input (``finplan.data.load_model_data``), dtypes checked."""
    from finplan.data import input_specs, load_model_data

    widths = []
    for exit_ in contract.exits:
        shape = tensor_shape(inferred, exit_.output)
        if shape and isinstance(shape[-1], int):
            widths.append(shape[-1])
    num_classes = min(widths) if widths else None  # a label must be a valid class at every exit
    return load_model_data(options.calib, input_specs(model, file=path), split=_calibration_split(options.calib),
                           seed=options.seed, limit=options.limit, num_classes=num_classes, field=options.name("calib"))


def profile_model(model_path: str | os.PathLike, *, progress: Progress | None = None, **options) -> ProfileResult:
    """Profile every block and exit of ``model_path`` on this machine.

    Keyword options are those of ``ProfileOptions`` (calib, limit, energy, power_w, idle_w,
    busy_w, energy_file, threads, budget_s, min_window_s, device_name, batch_size, seed,
    need_card, blocks, exits). Returns the profile (``finplan.profile/1``), the model card
    (``finplan.model/1``, when ``need_card`` and labelled calibration data) and a summary.
    """
    return prepare_profile(model_path, ProfileOptions(**options)).run(progress)
