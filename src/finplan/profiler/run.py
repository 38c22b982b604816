"""``ProfileJob.run``: time, meter and calibrate every block and exit of a prepared model.

Two phases, so that bad input never costs a measurement: ``prepare_profile`` (prepare.py)
loads and checks everything and raises FinplanInputError; ``ProfileJob.run`` measures and
returns the profile and the model card. The documents are built from the measurements by the
pure functions of documents.py; the probes timed beside the parts are in probes.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from finplan.contract import Contract, model_hash
from finplan.hardware_profiles import card_from_profile, validate_card, validate_profile
from finplan.onnx_parts import Part, TensorInfo
import finplan.profiler.calibration as calib
import finplan.profiler.documents as docs
from finplan.profiler.device import describe_device
from finplan.profiler.documents import OVERHEAD, STAGE_PROBE, WHOLE
from finplan.profiler.energy import DEFAULT_MIN_WINDOW_S, Selection, Workload, unresolved
from finplan.profiler.energy.external import ExternalMeter
from finplan.profiler.flops import FLOPS_CONVENTION
from finplan.profiler.probes import StageProbe, io_runner, overhead_probe
from finplan.profiler.timing import SessionConfig, available_cpus, cpu_utilisation, time_round_robin

DEFAULT_BUDGET_S = 15.0  # latency repetitions; the whole embedded-model profile stays under 60 s on 2 cores
DEFAULT_LIMIT = 1000  # calibration samples

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
    # option -> the name to print for it in messages (the caller's: a CLI passes its flags); the
    # option's own name when absent
    names: dict[str, str] = field(default_factory=dict)

    def name(self, option: str) -> str:
        return self.names.get(option, option)


@dataclass
class ProfileResult:
    profile: dict
    card: dict | None
    summary: dict  # what the CLI shows beyond the documents: energy choice, accuracies, table, timing


@dataclass
class ProfiledModel:
    """The model as split for profiling: its parts, their static costs and its exits' policies."""
    path: Path
    model: onnx.ModelProto
    contract: Contract
    blocks: list[Part]
    exits: list[Part]
    static: dict[str, dict]  # part name -> FLOPs, weights, bytes handed on
    inputs: tuple[TensorInfo, ...]  # the graph inputs (contract order)
    exit_policies: list[str]  # finplan.exit_policy.policy_of of each exit (contract order)

    @property
    def input_bytes(self) -> int:
        """The graph inputs' bytes per sample, summed."""
        return sum(t.bytes_per_sample for t in self.inputs)

    def kind(self, name: str) -> str:
        if name == WHOLE:
            return "whole"
        return "block" if any(b.name == name for b in self.blocks) else "exit"


@dataclass
class Sessions:
    """The onnxruntime sessions every measurement uses, all made with ``config``."""
    config: SessionConfig
    parts: dict[str, object]  # WHOLE and every part, by name
    calibration: object  # input -> every exit output
    threads_choice: dict | None = None  # how the thread count was chosen (None: given by --threads)


@dataclass
class TimingBatch:
    """The batch every part is timed on, and what it is (calibration samples or synthetic)."""
    arrays: dict[str, np.ndarray]  # graph input name -> one timing batch
    source: str


@dataclass
class ProfileJob:
    options: ProfileOptions
    model: ProfiledModel
    sessions: Sessions
    timing_input: TimingBatch
    data: object | None  # finplan.data.ModelData
    selection: Selection
    stage_probe: StageProbe | None = None

    # ------------------------------------------------------------------ measuring

    def run(self, progress: Progress | None = None) -> ProfileResult:
        progress = progress or (lambda stage, done, total: None)
        started = time.perf_counter()
        m, options = self.model, self.options
        feeds, split_diff = self._chain_parts()

        scores = None
        if self.data is not None:
            scores = calib.collect_scores(self._run_calibration_batch, self.data.inputs, self.data.y,
                                          [e.name for e in m.contract.exits], batch_size=self.calib_batch_size(),
                                          policies=m.exit_policies, progress=progress)

        runners = {name: io_runner(self.sessions.parts[name], feed) for name, feed in feeds.items()}
        timed = {**runners, OVERHEAD: overhead_probe(self.sessions.config)}
        if self.stage_probe is not None:
            timed[STAGE_PROBE] = self.stage_probe.runner(self.timing_input.arrays)
        timing = time_round_robin(timed, budget_s=options.budget_s, seed=options.seed, progress=progress,
                                  self_timed=frozenset({STAGE_PROBE}))
        meter = self.selection.meter
        energies, fallbacks = self._measure_energy(meter, runners, timing, progress)
        fallback_how = meter.fallback_watts_per_cpu()[1] if fallbacks else None

        profile = self._profile(timing, energies, split_diff, fallbacks)
        card, summary_calib = None, {}
        if scores is not None:
            summary_calib = docs.calibration_summary(scores, m.static, m.blocks, m.exits, self.data.name)
        if options.need_card and scores is not None:
            card = card_from_profile(profile, input_bytes=m.input_bytes, accuracies=summary_calib["accuracy"],
                                     calibration=summary_calib["section"])
            validate_card(card, "(model card being written)")
        validate_profile(profile, "(profile being written)")
        summary = {
            "energy": {"method": meter.method, "measured": meter.measured, "reason": self.selection.reason,
                       "skipped": self.selection.skipped, "note": meter.note(), "fallbacks": fallbacks,
                       "fallback_estimate": fallback_how},
            "timing": timing.to_dict(),
            "profiling_time_s": round(time.perf_counter() - started, 2),
            "timing_input": self.timing_input.source,
        }
        if summary_calib:
            summary["calibration"] = {k: v for k, v in summary_calib.items() if k != "section"}
        return ProfileResult(profile, card, summary)

    def _measure_energy(self, meter, runners: dict, timing, progress: Progress) -> tuple[dict, list[str]]:
        """Each part's energy reading (the meter runs it for its median latency), unresolved
        readings replaced by the meter's labelled estimate; and the list of those estimates."""
        energies, workloads = {}, {}
        try:
            meter.start()
            names = list(runners)
            for done, name in enumerate(names):
                utilisation = cpu_utilisation(runners[name]) if meter.needs_utilisation else None
                workloads[name] = Workload(name, self.model.kind(name), runners[name],
                                           timing.times[name].summary().p50, utilisation)
                reading = meter.measure(workloads[name], min_window_s=meter.window_s(self.options.min_window_s))
                if name == WHOLE and isinstance(meter, ExternalMeter) and np.isnan(reading.energy_j):
                    continue  # an energy file need not give the whole model
                energies[name] = reading
                progress("energy", done + 1, len(names))
        finally:
            meter.close()
        return energies, self._resolve_energies(meter, energies, workloads)

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
        inputs = self.model.inputs
        first = inputs[0].shape[0] if inputs and inputs[0].shape else None
        return first if isinstance(first, int) and first > 0 else None

    def calib_batch_size(self) -> int:
        return self._fixed_batch() or self.options.calib_batch_size

    def _run_calibration_batch(self, x: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = len(next(iter(x.values())))
        fixed = self._fixed_batch()
        session = self.sessions.calibration
        if fixed and count < fixed:  # a fixed-batch model: pad the last batch, drop the padding after
            padded = {k: np.concatenate([v, np.zeros((fixed - count, *v.shape[1:]), v.dtype)]) for k, v in x.items()}
            return [o[:count] for o in session.run(None, padded)]
        return session.run(None, x)

    def _chain_parts(self) -> tuple[dict[str, dict], float]:
        """Feeds for each part from real data, chaining the parts; and the largest difference between
        the chained exit outputs and the whole model's (the split must not change the numbers)."""
        x = self.timing_input.arrays
        sessions = self.sessions.parts
        values = dict(x)  # every tensor the chain has made so far, by name
        feeds = {}
        for part in self.model.blocks:
            feeds[part.name] = {name: values[name] for name in part.inputs}
            values.update(zip(part.outputs, sessions[part.name].run(part.outputs, feeds[part.name])))
        chained = []
        for part in self.model.exits:
            feeds[part.name] = {name: values[name] for name in part.inputs}
            chained.append(sessions[part.name].run(None, feeds[part.name])[0])
        feeds[WHOLE] = dict(x)
        diff = 0.0
        if self.model.exits:
            whole = self._run_calibration_batch(x)
            diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(chained, whole))
        return feeds, diff

    def _profile(self, timing, energies, split_diff: float, fallbacks: list[str] | None = None) -> dict:
        m, config, meter = self.model, self.sessions.config, self.selection.meter
        parts = [docs.part_document(p, m.static[p.name], timing, energies[p.name].to_dict())
                 for p in m.blocks + m.exits]
        threads_choice = self.sessions.threads_choice
        return docs.profile_document(
            model={"name": docs.model_name(m.path), "hash": model_hash(m.model), "file": m.path.name},
            device=describe_device(config.execution_provider, name=self.options.device_name),
            session_options={**config.to_dict(), **({"threads_choice": threads_choice} if threads_choice else {})},
            flops_convention=FLOPS_CONVENTION,
            batch_size=len(next(iter(self.timing_input.arrays.values()))),
            blocks=parts[:len(m.blocks)], exits=parts[len(m.blocks):],
            whole=docs.whole_model_document(timing, m.blocks, m.exits, split_diff,
                                            energies[WHOLE].to_dict() if WHOLE in energies else None),
            stage_overhead=docs.stage_overhead_document(
                timing, None if self.stage_probe is None else self.stage_probe.parts),
            energy=docs.energy_document(meter.describe(), meter.method, fallbacks or []),
            timing=timing, timing_input=self.timing_input.source,
            energy_window_s=meter.window_s(self.options.min_window_s) if meter.needs_window else None,
            version=_version())


def _version() -> str:
    from finplan import __version__

    return __version__
