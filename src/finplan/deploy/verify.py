"""Equivalence check: the chained parts of a deployment compute what the original model computes.

Two passes over the same inputs:
1. *trace*: every stage runs on every sample (no early exit), so each active exit's logits
   from the parts can be compared with the original model's, for every input;
2. *run*: the real exit-or-forward execution; each sample's logits at the exit it took are
   compared with the original's, and its exit decision with the one computed directly from
   the original model's exit scores and the plan's thresholds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from finplan.contract import load_branchy_model, model_hash
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.node_runtime import session_options
from finplan.deploy.policy import exits_here, score
from finplan.errors import FinplanInputError

DEFAULT_ATOL = 1e-5


@dataclass
class VerifyResult:
    samples: int
    exits: list[str]
    max_abs_diff: dict[str, float]            # per exit: trace pass (every sample)
    max_abs_diff_at_exit: float               # run pass: logits at the exit each sample took
    decision_mismatches: int                  # samples whose exit differs from the direct computation
    exit_counts: dict[str, int] = field(default_factory=dict)
    atol: float = DEFAULT_ATOL

    @property
    def max_diff(self) -> float:
        return max([self.max_abs_diff_at_exit, *self.max_abs_diff.values()])

    @property
    def passed(self) -> bool:
        return self.max_diff <= self.atol and self.decision_mismatches == 0

    def to_dict(self) -> dict:
        return {"samples": self.samples, "exits": self.exits, "max_abs_diff": self.max_abs_diff,
                "max_abs_diff_at_exit": self.max_abs_diff_at_exit, "max_diff": self.max_diff,
                "decision_mismatches": self.decision_mismatches, "exit_counts": self.exit_counts,
                "atol": self.atol, "passed": self.passed}


def direct_exits(exit_logits: dict[str, np.ndarray], active: list[tuple[str, float | None]],
                 policies: dict[str, str] | None = None) -> tuple[list[str], np.ndarray]:
    """Exit decision per sample from the whole model's exit outputs: the first active exit (in
    chain order) whose max-softmax confidence reaches its threshold; the final exit otherwise."""
    n = next(iter(exit_logits.values())).shape[0]
    names: list[str | None] = [None] * n
    predictions = np.full(n, -1, dtype=np.int64)
    for name, threshold in active:
        confidence, predicted = score((policies or {}).get(name, "max_softmax"), exit_logits[name])
        leaving = exits_here(confidence, threshold)
        for i in np.flatnonzero(leaving):
            if names[i] is None:
                names[i] = name
                predictions[i] = predicted[i]
    return names, predictions


def verify(folder: str | os.PathLike, model_path: str | os.PathLike, x, *, batch_size: int = 64,
           atol: float = DEFAULT_ATOL, threads: int | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> VerifyResult:
    """Compare the chained parts with the whole model on ``x`` (name -> [N, ...] per graph input, or one
    array for a single-input model)."""
    import onnxruntime as ort

    executor = LocalExecutor(folder, threads=threads)
    deployment = executor.deployment
    model, contract = load_branchy_model(model_path)
    if deployment.model_hash is not None and model_hash(model) != deployment.model_hash:
        raise FinplanInputError(f"has hash {model_hash(model)[:19]}..., the deployment was emitted for "
                                f"{deployment.model_hash[:19]}... (another model)", file=model_path)
    x = executor.inputs_of(x)
    entry = executor.runtimes[deployment.entry_node]
    entry.check_input({k: v[:1] for k, v in x.items()}, entry=entry.manifest.entries[0].tensor)
    if list(x) != list(contract.inputs) and set(x) != set(contract.inputs):
        raise FinplanInputError(f"the deployment takes {', '.join(x)}, the model {', '.join(contract.inputs)} "
                                "(another model)", file=model_path)
    active = [(e["name"], e["threshold"]) for e in deployment.index["active_exits"]]
    policies = {e.name: e.policy for runtime in executor.runtimes.values() for s in runtime.stages for e in s.exits}
    outputs = {e.name: e.output for e in contract.exits}
    session = ort.InferenceSession(model.SerializeToString(), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    exit_names = [name for name, _ in active]
    max_diff = {name: 0.0 for name in exit_names}
    at_exit = 0.0
    mismatches = 0
    counts: dict[str, int] = {}
    n = next(iter(x.values())).shape[0]
    for begin in range(0, n, batch_size):
        batch = {name: np.ascontiguousarray(array[begin:begin + batch_size]) for name, array in x.items()}
        reference = dict(zip(exit_names, session.run([outputs[e] for e in exit_names], batch)))
        traced = trace(executor, batch)
        for name in exit_names:
            max_diff[name] = max(max_diff[name], float(np.max(np.abs(traced[name] - reference[name]))))
        outcome = executor.run_batch(batch)
        expected_names, _ = direct_exits(reference, active, policies)
        for i, name in enumerate(outcome.exit_names):
            counts[name] = counts.get(name, 0) + 1
            at_exit = max(at_exit, float(np.max(np.abs(outcome.logits[i] - reference[name][i]))))
            if name != expected_names[i]:
                mismatches += 1
        if progress is not None:
            progress("verifying", min(begin + batch_size, n), n)
    return VerifyResult(n, exit_names, max_diff, at_exit, mismatches, counts, atol)


def trace(executor: LocalExecutor, x) -> dict[str, np.ndarray]:
    """Every active exit's logits for every sample, from the chained parts with no early exit:
    each stage runs on what it receives (the live set), its outputs join it, and the next cut's
    live set goes on."""
    found: dict[str, np.ndarray] = {}
    node = executor.deployment.entry_node
    runtime = executor.runtimes[node]
    env = executor.inputs_of(x)
    stage_index = runtime.stage_for(runtime.manifest.entries[0].tensor)
    while True:
        stage = runtime.stages[stage_index]
        values = {**env, **runtime.run_stage(stage_index, env)}
        for exit_ in stage.exits:
            found[exit_.name] = values[exit_.output]
        if stage.next is None:
            return found
        env = {name: values[name] for name in stage.next.names}
        if stage.next.node == runtime.node:
            stage_index += 1  # a hop that stays on the node feeds its next stage
        else:
            runtime = executor.runtimes[stage.next.node]
            stage_index = runtime.stage_for(stage.next.tensor)


__all__ = ["verify", "VerifyResult", "direct_exits", "trace", "DEFAULT_ATOL"]
