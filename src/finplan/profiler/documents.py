"""The profile document (``finplan.profile/1``) built from measurements by pure functions.

Apart from the timing probes and the meters (``run.py``, ``probes.py``): everything here takes
what was measured (a ``timing.TimingResult``, energy readings, static costs) and returns plain
dicts, so the document's shape is testable without running a model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from finplan.onnx_parts import Part
import finplan.profiler.calibration as calib
from finplan.profiler.stats import median_ci
from finplan.profiler.timing import TimingResult

PROFILE_SCHEMA = "finplan.profile/1"
WHOLE = "whole_model"
OVERHEAD = "(call overhead)"  # timed alongside the parts, reported in whole_model
STAGE_PROBE = "(runtime stage)"  # the runtime's stage code on a fused part: stage_overhead_s
STAGE_OVERHEAD_METHOD = "runtime-stage-probe"
WARMUP_RUNS = 3  # time_round_robin's default, recorded in the profile


def part_document(part: Part, static: dict, timing: TimingResult, energy: dict) -> dict:
    """One block or exit: its static costs, latency summary (with the median's 95% interval and
    whether it converged) and energy reading (``energy``: the reading's ``to_dict()``)."""
    times = timing.times[part.name]
    latency = times.summary().to_dict()
    interval = median_ci(times.wall_s)
    latency["ci95_p50"] = None if interval is None else list(interval)
    latency["converged"] = timing.converged[part.name]
    doc = {"name": part.name}
    if part.after:
        doc["after"] = part.after
    doc.update(static)
    doc["latency_s"] = latency
    doc["energy_j"] = energy
    return doc


def whole_model_document(timing: TimingResult, blocks: Sequence[Part], exits: Sequence[Part], split_diff: float,
                         energy: dict | None) -> dict:
    """The whole model's latency beside the sum of its parts', corrected for onnxruntime's
    per-call cost (each part pays it once; the whole model pays it once in all)."""
    whole = {"latency_s": timing.times[WHOLE].summary().to_dict()}
    sum_blocks = sum(timing.times[b.name].summary().p50 for b in blocks)
    sum_parts = sum_blocks + sum(timing.times[e.name].summary().p50 for e in exits)
    whole_p50 = whole["latency_s"]["p50"]
    overhead = timing.times[OVERHEAD].summary().p50
    extra_calls = len(blocks) + len(exits) - 1
    whole.update({
        "sum_of_blocks_p50_s": sum_blocks,
        "sum_of_parts_p50_s": sum_parts,
        "parts_over_whole": sum_parts / whole_p50 if whole_p50 > 0 else None,
        "call_overhead_p50_s": overhead,
        "parts_over_whole_overhead_corrected": (sum_parts - extra_calls * overhead) / whole_p50
        if whole_p50 > 0 else None,
        "split_check_max_abs_diff": split_diff,
    })
    if energy is not None:
        whole["energy_j"] = energy
    return whole


def stage_overhead_document(timing: TimingResult, probe_parts: Sequence[str] | None) -> dict | None:
    """The fixed cost of one runtime stage beyond its parts' own work (None without a probe).

    Each profiled part is one onnxruntime call, so its median includes onnxruntime's per-call
    cost c (the "(call overhead)" probe, timed in the same rounds); a runtime stage fuses its
    parts into one call. So a part's work is max(p50 - c, 0), and a stage costs the sum of its
    parts' work plus ``value``: the runtime stage code on a fused part (one call, exit scoring
    and decision, bookkeeping, clocked as the runtime clocks a sample: entry to decision) minus
    the work of the parts it fuses. The planner applies both (``part_call_overhead_s``)."""
    if probe_parts is None:
        return None
    stage_p50 = timing.times[STAGE_PROBE].summary().p50
    parts_p50 = sum(timing.times[name].summary().p50 for name in probe_parts)
    call_s = timing.times[OVERHEAD].summary().p50
    work_s = sum(max(timing.times[name].summary().p50 - call_s, 0.0) for name in probe_parts)
    raw = stage_p50 - work_s
    return {
        "value": max(raw, 0.0),
        "method": STAGE_OVERHEAD_METHOD,
        "measured": True,
        "part_call_overhead_s": call_s,
        "probe_parts": list(probe_parts),
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


def energy_document(described: dict, method: str, fallbacks: Sequence[str]) -> dict:
    """The meter's description (``meter.describe()``), its note saying which parts' energies are
    labelled estimates when the backend could not resolve them (``fallbacks``: "<part>: ...")."""
    energy = dict(described)
    if fallbacks:
        parts = ", ".join(f.split(":", 1)[0] for f in fallbacks)
        energy["note"] = ((energy.get("note") + "; ") if energy.get("note") else "") + (
            f"FALLBACK: {method} could not resolve {parts}; their energy_j is a labelled power-model "
            "estimate (watts per busy CPU x CPU-seconds per run), see each part's note")
    return energy


def profile_document(*, model: dict, device: dict, session_options: dict, flops_convention: str, batch_size: int,
                     blocks: list[dict], exits: list[dict], whole: dict, stage_overhead: dict | None, energy: dict,
                     timing: TimingResult, timing_input: str, energy_window_s: float | None, version: str) -> dict:
    """The profile document, keys in the order finplan has always written them (byte-for-byte
    determinism of what is not measured)."""
    return {
        "schema": PROFILE_SCHEMA,
        "model": model,
        "device": device,
        "session_options": session_options,
        "flops_convention": flops_convention,
        "batch_size": int(batch_size),
        "blocks": blocks,
        "exits": exits,
        "whole_model": whole,
        **({"stage_overhead_s": stage_overhead} if stage_overhead is not None else {}),
        "energy": energy,
        "timing": {**timing.to_dict(), "input": timing_input, "warmup_runs": WARMUP_RUNS,
                   "energy_min_window_s": energy_window_s},
        "finplan_version": version,
    }


def calibration_summary(scores: calib.ExitScores, static: dict[str, dict], blocks: Sequence[Part],
                        exits: Sequence[Part], source: str) -> dict:
    """Samples, threshold table (with FLOPs to exit), the card's calibration section and, with
    labels, each exit's accuracy."""
    block_flops = {b.name: static[b.name]["flops"] for b in blocks}
    exit_flops = {e.name: static[e.name]["flops"] for e in exits}
    costs = calib.flops_to_exit(block_flops, exit_flops, {e.name: e.after for e in exits},
                                [e.name for e in exits], [b.name for b in blocks])
    table = calib.threshold_table(scores, costs)
    out = {"samples": scores.samples, "source": source, "table": table,
           "section": calib.card_section(scores, table, source)}
    if scores.labels is not None:
        out["accuracy"] = calib.exit_accuracy(scores)
    return out


def model_name(path: Path) -> str:
    """The model's name in a profile: its file name without ``.onnx``."""
    return path.name[:-5] if path.name.endswith(".onnx") else path.stem
