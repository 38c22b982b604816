"""``profile_model``: split, count, calibrate, time and meter every block and exit of a model.

Two phases, so that bad input never costs a measurement: ``prepare_profile`` loads and checks
everything (model, onnxruntime sessions, calibration data, energy backend) and raises
FinplanInputError; ``ProfileJob.run`` measures and returns the profile and the model card.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from finplan.contract import Contract, load_branchy_model, model_hash
from finplan.errors import FinplanInputError
from finplan.exit_policy import StageRunner, run_chain
from finplan.hardware_profiles import card_from_profile, validate_card, validate_profile
from finplan.onnx_parts import (Part, TensorInfo, bytes_per_sample, compute_layout, extract_part, infer_shapes,
                                layout_boundaries, params_bytes, split_branchy, tensor_shape)
from finplan.profiler import calibration as calib
from finplan.profiler.device import describe_device
from finplan.profiler.energy import DEFAULT_MIN_WINDOW_S, Selection, Workload, select_meter, unresolved
from finplan.profiler.energy.external import ExternalMeter
from finplan.profiler.flops import FLOPS_CONVENTION, activation_bytes, count_flops
from finplan.profiler.timing import (
    THREADS_TIE, SessionConfig, available_cpus, check_provider, choose_threads, cpu_utilisation, make_session,
    thread_candidates, time_round_robin,
)

DEFAULT_BUDGET_S = 15.0  # latency repetitions; the whole embedded-model profile stays under 60 s on 2 cores
DEFAULT_LIMIT = 1000  # calibration samples
WHOLE = "whole_model"
OVERHEAD = "(call overhead)"  # timed alongside the parts, reported in whole_model
STAGE_PROBE = "(runtime stage)"  # the runtime's stage code on a fused part: stage_overhead_s
STAGE_OVERHEAD_METHOD = "runtime-stage-probe"
THREADS_BUDGET_SHARE = 0.1  # of --budget-s, to choose the thread count when --threads is not given

Progress = Callable[[str, int, int], None]


@dataclass
class ProfileOptions:
    blocks: list[str] = field(default_factory=list)  # --block/--exit for models without a contract
    exits: list[str] = field(default_factory=list)
    calib: str | None = None  # embedded | digits | fashion-mnist | file.npz | folder
    limit: int | None = DEFAULT_LIMIT
    energy: str = "auto"
    power_w: float | None = None
    idle_w: float | None = None
    busy_w: float | None = None
    energy_file: str | None = None
    threads: int | None = None
    budget_s: float = DEFAULT_BUDGET_S
    min_window_s: float = DEFAULT_MIN_WINDOW_S
    device_name: str | None = None
    batch_size: int = 1  # samples per timed run
    calib_batch_size: int = 64
    seed: int = 0
    need_card: bool = False  # fail early when a card cannot be made (no labels, no exits)
    rapl_root: str | None = None  # tests point this at a fake sysfs tree
    country_iso_code: str = "FRA"


@dataclass
class ProfileResult:
    profile: dict
    card: dict | None
    summary: dict  # what the CLI shows beyond the documents: energy choice, accuracies, table, timing


@dataclass
class ProfileJob:
    path: Path
    options: ProfileOptions
    model: onnx.ModelProto
    contract: Contract
    blocks: list[Part]
    exits: list[Part]
    static: dict[str, dict]
    sessions: dict[str, object]
    calib_session: object
    config: SessionConfig
    inputs: tuple[TensorInfo, ...]  # the graph inputs (contract order)
    input_bytes: int  # their bytes per sample, summed
    timing_input: dict[str, np.ndarray]  # graph input name -> one timing batch
    timing_input_source: str
    data: object | None  # finplan.data.ModelData
    selection: Selection
    exit_probabilities: list[bool]
    stage_probe: "StageProbe | None" = None
    threads_choice: dict | None = None  # how the thread count was chosen (None: given by --threads)

    # ------------------------------------------------------------------ measuring

    def run(self, progress: Progress | None = None) -> ProfileResult:
        progress = progress or (lambda stage, done, total: None)
        started = time.perf_counter()
        feeds, split_diff = self._chain_parts()

        scores = None
        if self.data is not None:
            scores = calib.collect_scores(self._run_calibration_batch, self.data.inputs, self.data.y,
                                          [e.name for e in self.contract.exits],
                                          batch_size=self.calib_batch_size(), probabilities=self.exit_probabilities,
                                          progress=progress)

        runners = {name: _runner(self.sessions[name], feed) for name, feed in feeds.items()}
        probe_session, probe_feed = _overhead_probe(self.config)
        timed = {**runners, OVERHEAD: _runner(probe_session, probe_feed)}
        if self.stage_probe is not None:
            timed[STAGE_PROBE] = self.stage_probe.runner(self.timing_input)
        timing = time_round_robin(timed, budget_s=self.options.budget_s, seed=self.options.seed, progress=progress,
                                  self_timed=frozenset({STAGE_PROBE}))

        meter = self.selection.meter
        energies, workloads = {}, {}
        try:
            meter.start()
            names = list(runners)
            for done, name in enumerate(names):
                times = timing.times[name]
                utilisation = cpu_utilisation(runners[name]) if meter.needs_utilisation else None
                workloads[name] = Workload(name, self._kind(name), runners[name], times.summary().p50, utilisation)
                reading = meter.measure(workloads[name], min_window_s=meter.window_s(self.options.min_window_s))
                if name == WHOLE and isinstance(meter, ExternalMeter) and np.isnan(reading.energy_j):
                    continue  # an energy file need not give the whole model
                energies[name] = reading
                progress("energy", done + 1, len(names))
        finally:
            meter.close()
        fallbacks = self._resolve_energies(meter, energies, workloads)
        fallback_how = meter.fallback_watts_per_cpu()[1] if fallbacks else None

        profile = self._profile(timing, energies, split_diff, fallbacks)
        card, summary_calib = None, {}
        if scores is not None:
            summary_calib = self._calibration_summary(scores)
        if self.options.need_card and scores is not None:
            card = card_from_profile(profile, input_bytes=self.input_bytes, accuracies=summary_calib["accuracy"],
                                     calibration=summary_calib["section"])
            validate_card(card, "(model card being written)")
        validate_profile(profile, "(profile being written)")
        summary = {
            "energy": {"method": meter.method, "measured": meter.measured, "reason": self.selection.reason,
                       "skipped": self.selection.skipped, "note": meter.note(), "fallbacks": fallbacks,
                       "fallback_estimate": fallback_how},
            "timing": timing.to_dict(),
            "profiling_time_s": round(time.perf_counter() - started, 2),
            "timing_input": self.timing_input_source,
        }
        if summary_calib:
            summary["calibration"] = {k: v for k, v in summary_calib.items() if k != "section"}
        return ProfileResult(profile, card, summary)

    @staticmethod
    def _resolve_energies(meter, energies: dict, workloads: dict) -> list[str]:
        """Replace every reading the backend could not resolve (0 J, below the idle noise, not finite) for a
        part that takes time by the meter's labelled estimate; "<part>: <estimate>; <why>" for each one.

        After all parts are measured, so the estimate can use the watts per CPU-second the backend
        gave the parts it did resolve."""
        fallbacks = []
        cpus = available_cpus()
        for name, reading in list(energies.items()):
            workload = workloads[name]
            why = unresolved(reading, workload.latency_s)
            if why is None:
                continue
            cpu_s = reading.cpu_s
            if cpu_s is None:
                utilisation = workload.cpu_utilisation
                if utilisation is None:
                    utilisation = cpu_utilisation(workload.run)
                cpu_s = utilisation * cpus * workload.latency_s
            energies[name] = meter.fallback(workload, reading, cpu_s, why)
            fallbacks.append(f"{name}: {energies[name].energy_j:.3g} J/run estimated; {why}")
        return fallbacks

    def _fixed_batch(self) -> int | None:
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        return first if isinstance(first, int) and first > 0 else None

    def calib_batch_size(self) -> int:
        return self._fixed_batch() or self.options.calib_batch_size

    def _run_calibration_batch(self, x: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = len(next(iter(x.values())))
        fixed = self._fixed_batch()
        if fixed and count < fixed:  # a fixed-batch model: pad the last batch, drop the padding after
            padded = {k: np.concatenate([v, np.zeros((fixed - count, *v.shape[1:]), v.dtype)]) for k, v in x.items()}
            return [o[:count] for o in self.calib_session.run(None, padded)]
        return self.calib_session.run(None, x)

    def _kind(self, name: str) -> str:
        if name == WHOLE:
            return "whole"
        return "block" if any(b.name == name for b in self.blocks) else "exit"

    def _chain_parts(self) -> tuple[dict[str, dict], float]:
        """Feeds for each part from real data, chaining the parts; and the largest difference between
        the chained exit outputs and the whole model's (the split must not change the numbers)."""
        x = self.timing_input
        values = dict(x)  # every tensor the chain has made so far, by name
        feeds = {}
        for part in self.blocks:
            feeds[part.name] = {name: values[name] for name in part.inputs}
            values.update(zip(part.outputs, self.sessions[part.name].run(part.outputs, feeds[part.name])))
        chained = []
        for part in self.exits:
            feeds[part.name] = {name: values[name] for name in part.inputs}
            chained.append(self.sessions[part.name].run(None, feeds[part.name])[0])
        feeds[WHOLE] = dict(x)
        diff = 0.0
        if self.exits:
            whole = self._run_calibration_batch(x)
            diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(chained, whole))
        return feeds, diff

    def _calibration_summary(self, scores: calib.ExitScores) -> dict:
        block_flops = {b.name: self.static[b.name]["flops"] for b in self.blocks}
        exit_flops = {e.name: self.static[e.name]["flops"] for e in self.exits}
        costs = calib.flops_to_exit(block_flops, exit_flops, {e.name: e.after for e in self.exits},
                                    [e.name for e in self.exits], [b.name for b in self.blocks])
        table = calib.threshold_table(scores, costs)
        out = {"samples": scores.samples, "source": self.data.name, "table": table,
               "section": calib.card_section(scores, table, self.data.name)}
        if scores.labels is not None:
            out["accuracy"] = calib.exit_accuracy(scores)
        return out

    def _profile(self, timing, energies, split_diff: float, fallbacks: list[str] | None = None) -> dict:
        def part_doc(part: Part) -> dict:
            times = timing.times[part.name]
            latency = times.summary().to_dict()
            from finplan.profiler.stats import median_ci

            interval = median_ci(times.wall_s)
            latency["ci95_p50"] = None if interval is None else list(interval)
            latency["converged"] = timing.converged[part.name]
            doc = {"name": part.name}
            if part.after:
                doc["after"] = part.after
            doc.update(self.static[part.name])
            doc["latency_s"] = latency
            doc["energy_j"] = energies[part.name].to_dict()
            return doc

        whole_times = timing.times[WHOLE]
        whole = {"latency_s": whole_times.summary().to_dict()}
        sum_blocks = sum(timing.times[b.name].summary().p50 for b in self.blocks)
        sum_parts = sum_blocks + sum(timing.times[e.name].summary().p50 for e in self.exits)
        whole_p50 = whole["latency_s"]["p50"]
        overhead = timing.times[OVERHEAD].summary().p50
        extra_calls = len(self.blocks) + len(self.exits) - 1
        whole.update({
            "sum_of_blocks_p50_s": sum_blocks,
            "sum_of_parts_p50_s": sum_parts,
            "parts_over_whole": sum_parts / whole_p50 if whole_p50 > 0 else None,
            # Each part pays onnxruntime's per-call cost once; the whole model pays it once in all.
            "call_overhead_p50_s": overhead,
            "parts_over_whole_overhead_corrected": (sum_parts - extra_calls * overhead) / whole_p50
            if whole_p50 > 0 else None,
            "split_check_max_abs_diff": split_diff,
        })
        if WHOLE in energies:
            whole["energy_j"] = energies[WHOLE].to_dict()
        meter = self.selection.meter
        energy = meter.describe()
        if fallbacks:
            parts = ", ".join(f.split(":", 1)[0] for f in fallbacks)
            energy["note"] = ((energy.get("note") + "; ") if energy.get("note") else "") + (
                f"FALLBACK: {meter.method} could not resolve {parts}; their energy_j is a labelled power-model "
                "estimate (watts per busy CPU x CPU-seconds per run), see each part's note")
        stage_overhead = self._stage_overhead(timing)
        return {
            "schema": "finplan.profile/1",
            "model": {"name": _model_name(self.path), "hash": model_hash(self.model), "file": self.path.name},
            "device": describe_device(self.config, name=self.options.device_name),
            "session_options": {**self.config.to_dict(),
                                **({"threads_choice": self.threads_choice} if self.threads_choice else {})},
            "flops_convention": FLOPS_CONVENTION,
            "batch_size": int(len(next(iter(self.timing_input.values())))),
            "blocks": [part_doc(p) for p in self.blocks],
            "exits": [part_doc(p) for p in self.exits],
            "whole_model": whole,
            **({"stage_overhead_s": stage_overhead} if stage_overhead is not None else {}),
            "energy": energy,
            "timing": {**timing.to_dict(), "input": self.timing_input_source, "warmup_runs": 3,
                       "energy_min_window_s": meter.window_s(self.options.min_window_s) if meter.needs_window else None},
            "finplan_version": _version(),
        }


    def _stage_overhead(self, timing) -> dict | None:
        """The fixed cost of one runtime stage beyond its parts' own work.

        Each profiled part is one onnxruntime call, so its median includes onnxruntime's per-call
        cost c (the "(call overhead)" probe, timed in the same rounds); a runtime stage fuses its
        parts into one call. So a part's work is max(p50 - c, 0), and a stage costs the sum of its
        parts' work plus ``value``: the runtime stage code on a fused part (one call, exit scoring
        and decision, bookkeeping, clocked as the runtime clocks a sample: entry to decision) minus
        the work of the parts it fuses. The planner applies both (``part_call_overhead_s``)."""
        probe = self.stage_probe
        if probe is None:
            return None
        stage_p50 = timing.times[STAGE_PROBE].summary().p50
        parts_p50 = sum(timing.times[name].summary().p50 for name in probe.parts)
        call_s = timing.times[OVERHEAD].summary().p50
        work_s = sum(max(timing.times[name].summary().p50 - call_s, 0.0) for name in probe.parts)
        raw = stage_p50 - work_s
        return {
            "value": max(raw, 0.0),
            "method": STAGE_OVERHEAD_METHOD,
            "measured": True,
            "part_call_overhead_s": call_s,
            "probe_parts": list(probe.parts),
            "stage_p50_s": stage_p50,
            "parts_p50_sum_s": parts_p50,
            "parts_work_sum_s": work_s,
            "difference_s": raw,
            "runs": len(timing.times[STAGE_PROBE].wall_s),
            "description": ("median of finplan's runtime stage code (one onnxruntime call on the parts fused into "
                            "one, the exit head scored and decided as the runtime does, clocked from entry to the "
                            "exit decision) minus the work of the parts it fuses (each part's median minus "
                            "part_call_overhead_s, onnxruntime's per-call cost, all timed with IO binding in the same "
                            "interleaved rounds); clipped at 0. A stage is predicted as the sum of its parts' work "
                            "plus this value"),
        }


@dataclass
class StageProbe:
    """A stage as finplan's runtime would emit it (the first blocks and the first exit head
    fused into one part), run through the runtime's own stage code."""
    session: object
    input_names: list[str]
    output_names: list[str]
    exit_name: str
    policy: str
    parts: tuple[str, ...]  # the profiled parts it fuses (blocks, then the exit)

    def runner(self, x: dict[str, np.ndarray]) -> Callable[[], object]:
        # threshold 0: every sample leaves, after the same scoring and decision as an active exit
        stages = [StageRunner(self.session, self.input_names if len(self.input_names) > 1 else self.input_names[0],
                              self.output_names, [(self.exit_name, len(self.output_names) - 1, 0.0, self.policy)],
                              next_output=0, next_stage=None)]
        # one array for a single-input stage (the runtime's fast path), else the named tensors
        tensor = (np.ascontiguousarray(x[self.input_names[0]]) if len(self.input_names) == 1
                  else {name: np.ascontiguousarray(x[name]) for name in self.input_names})
        clock = time.perf_counter

        def run() -> float:  # seconds from entry to the exit decision, as the runtime clocks a sample
            return run_chain(stages, 0, tensor, clock(), clock).offsets[0]
        return run


def _stage_probe(inferred: onnx.ModelProto, contract: Contract, config: SessionConfig, probabilities: list[bool],
                 path: Path) -> StageProbe | None:
    """The probe of ``stage_overhead_s``: input -> (first exit's block output, first exit's output)."""
    if not contract.exits:
        return None
    exit_ = contract.exits[0]
    last = contract.block_index(exit_.after)
    block_out = contract.blocks[last].output
    inputs = list(contract.inputs)
    part = extract_part(inferred, inputs, [block_out, exit_.output], name="stage_probe")
    session = make_session(part, config, what="the runtime-stage probe", file=path)
    parts = tuple(b.name for b in contract.blocks[:last + 1]) + (exit_.name,)
    return StageProbe(session, inputs, [block_out, exit_.output], exit_.name,
                      "max_probability" if probabilities[0] else "max_softmax", parts)


def _version() -> str:
    from finplan import __version__

    return __version__


def _model_name(path: Path) -> str:
    return path.name[:-5] if path.name.endswith(".onnx") else path.stem


def _runner(session, feed: dict) -> Callable[[], object]:
    """One run of ``session`` on ``feed``, through an IO binding: inputs are bound once, so a
    timed call is the part's work plus onnxruntime's own dispatch, not Python's feed handling
    (about 3 us less per call than ``session.run`` on a 2-core VM)."""
    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for output in session.get_outputs():
        binding.bind_output(output.name)

    def run():
        session.run_with_iobinding(binding)
    return run


def _overhead_probe(config: SessionConfig):
    """A session that only copies a 1-element tensor: its latency is onnxruntime's per-call cost."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call_overhead",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return make_session(model, config, what="the call-overhead probe"), {"x": np.zeros(1, np.float32)}


# ---------------------------------------------------------------------- preparing (all checks)

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


def _is_softmax_output(model: onnx.ModelProto, tensor: str) -> bool:
    for node in model.graph.node:
        if tensor in node.output:
            return node.op_type == "Softmax"
    return False


def _calibration_split(source: str) -> str:
    # Named datasets hold a train split the model may have seen; a user's file is calibration data as a whole.
    return "calibration" if source in ("digits", "fashion-mnist", "embedded") else "all"


def prepare_profile(model_path: str | os.PathLike, options: ProfileOptions | None = None) -> ProfileJob:
    """Load and check everything a profile needs; raises FinplanInputError before any measurement."""
    options = options or ProfileOptions()
    path = Path(model_path)
    if options.budget_s is None or not options.budget_s > 0:
        raise FinplanInputError(f"is {options.budget_s}; expected seconds > 0", field="--budget-s")
    if options.threads is not None and options.threads < 1:
        raise FinplanInputError(f"is {options.threads}; expected a thread count >= 1", field="--threads")
    if options.limit is not None and options.limit < 1:
        raise FinplanInputError(f"is {options.limit}; expected a number of samples >= 1", field="--limit")
    if not options.min_window_s > 0:
        raise FinplanInputError(f"is {options.min_window_s}; expected seconds > 0", field="--energy-window-s")
    if options.batch_size < 1:
        raise FinplanInputError(f"is {options.batch_size}; expected >= 1", field="--batch-size")
    model, contract = load_branchy_model(path, blocks=list(options.blocks), exits=list(options.exits))
    inferred = infer_shapes(model)
    layout = compute_layout(inferred, contract)
    live = layout_boundaries(layout, contract)  # validated: static sizes beyond the batch axis
    inputs = live[0]
    if options.need_card and not options.calib:
        raise FinplanInputError("--card needs --calib DATA: the card's per-exit accuracy comes from labelled "
                                "calibration data (e.g. --calib embedded, digits or a .npz with x and y)",
                                field="--card")

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
    probabilities = [_is_softmax_output(model, e.output) for e in contract.exits]
    try:
        probe = _stage_probe(inferred, contract, config, probabilities, path)
    except FinplanInputError:
        raise
    except Exception:  # a graph whose fused first stage cannot be cut out: no probe, no stage overhead
        probe = None
    return ProfileJob(path, options, model, contract, blocks, exits, static, sessions, calib_session, config,
                      inputs, sum(t.bytes_per_sample for t in inputs), timing_input, source,
                      data, selection, probabilities, probe, threads_choice)


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
    import dataclasses

    whole_input = dict(timing_input)

    def make_runner(threads: int):
        session = make_session(model, dataclasses.replace(config, intra_op_threads=threads), what="the model",
                               file=path)
        return _runner(session, whole_input)

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
                           seed=options.seed, limit=options.limit, num_classes=num_classes, field="--calib")


def profile_model(model_path: str | os.PathLike, *, progress: Progress | None = None, **options) -> ProfileResult:
    """Profile every block and exit of ``model_path`` on this machine.

    Keyword options are those of ``ProfileOptions`` (calib, limit, energy, power_w, idle_w,
    busy_w, energy_file, threads, budget_s, min_window_s, device_name, batch_size, seed,
    need_card, blocks, exits). Returns the profile (``finplan.profile/1``), the model card
    (``finplan.model/1``, when ``need_card`` and labelled calibration data) and a summary.
    """
    return prepare_profile(model_path, ProfileOptions(**options)).run(progress)
