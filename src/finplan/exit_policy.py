"""Exit policies and one runtime stage, shared by the runtime (deploy) and the profiler.

Why here, below both: the runtime decides with these scorers, and the profiler measures what
one runtime stage costs (``stage_overhead_s``) by running this very code on a probe part, so
the plan's per-stage cost is the cost of the code that runs. Neither package imports the
other (the import rules checked by tests/test_layering.py).

Scoring: one scorer per policy, used by the runtime, the verifier, the profiler's calibration
scores (finplan.profiler.calibration.exit_scores calls ``score``) and the tests' direct
computation, so every place decides the same way (``confidence >= threshold``; ties exit) and
the exit rates the planner predicts from calibration scores are the ones the runtime produces.
``policy_of`` names the policy of an exit head, for emit (the manifests) and the profiler alike.
The single-row variants are the same floating-point operations on one row (cheaper at
batch 1); ``max_softmax_reported`` is not: it is for a final exit, whose confidence is only
reported, never compared with a threshold.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np


def policy_of(model, tensor: str) -> str:
    """The policy of the exit head whose output is ``tensor`` in ``model`` (an onnx.ModelProto):
    ``max_probability`` for a head that already ends in Softmax, else ``max_softmax``."""
    for node in model.graph.node:
        if tensor in node.output:
            return "max_probability" if node.op_type == "Softmax" else "max_softmax"
    return "max_softmax"


def _float64_rows(outputs: np.ndarray) -> np.ndarray:
    """A float64 copy of ``outputs`` as [N, classes] (changed in place by the callers)."""
    return np.array(outputs, dtype=np.float64).reshape(outputs.shape[0], -1)


def _shifted_exp(flat: np.ndarray) -> np.ndarray:
    """exp(row - max(row)) in place: large logits cannot overflow, the top term is exactly 1."""
    flat -= flat.max(axis=1, keepdims=True)
    np.exp(flat, out=flat)
    return flat


def _renormalised(probabilities: np.ndarray) -> np.ndarray:
    values = np.clip(_float64_rows(np.asarray(probabilities)), 0.0, None)
    return values / np.maximum(values.sum(axis=1, keepdims=True), 1e-300)


def max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) per sample of ``logits [N, classes]``.

    Computed in float64 with the max subtracted, so large logits cannot overflow and the
    decision does not depend on float32 rounding of the normaliser.
    """
    flat = _float64_rows(logits)
    predicted = flat.argmax(axis=1).astype(np.int64)
    # the largest term is exp(0) = 1 exactly, so max/sum is 1/sum
    return 1.0 / _shifted_exp(flat).sum(axis=1), predicted


def max_probability(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) for an exit head that already ends in Softmax: its largest
    probability (negatives clipped, rows renormalised)."""
    values = _renormalised(probabilities)
    return values.max(axis=1), values.argmax(axis=1).astype(np.int64)


def class_probabilities(policy: str, outputs: np.ndarray) -> np.ndarray:
    """float64 [N, classes]: the class distribution ``policy`` scores (the softmax of logits, or
    the head's own probabilities clipped and renormalised); its row maxima are ``score``'s
    confidences (for the profiler's entropy)."""
    if policy == "max_probability":
        return _renormalised(outputs)
    flat = _shifted_exp(_float64_rows(outputs))
    return flat / flat.sum(axis=1, keepdims=True)


def max_softmax_one(logits: np.ndarray) -> tuple[float, int]:
    """``max_softmax`` of a batch of one sample, as Python numbers: the same float64 operations
    on the one row (float32 -> float64 is exact, so the float32 argmax is the float64 one)."""
    flat = logits.astype(np.float64).ravel()
    flat -= flat.max()
    np.exp(flat, out=flat)
    return 1.0 / float(flat.sum()), int(logits.argmax())


def max_probability_one(probabilities: np.ndarray) -> tuple[float, int]:
    confidence, predicted = max_probability(probabilities)
    return float(confidence[0]), int(predicted[0])


def max_softmax_reported(logits: np.ndarray) -> tuple[float, int]:
    """Max-softmax confidence and class of one sample in plain Python, for a final exit whose
    confidence is only reported (every sample leaves there). Within a few ulps of
    ``max_softmax`` (libm's exp and a sequential sum instead of numpy's); falls back to it
    when the row is not finite."""
    row = logits.ravel().tolist()
    top = max(row)
    total = 0.0
    for value in row:
        total += math.exp(value - top)
    if not math.isfinite(total) or total != total or top != top:
        confidence, predicted = max_softmax(logits.reshape(1, -1))
        return float(confidence[0]), int(predicted[0])
    return 1.0 / total, row.index(top)


SCORERS = {"max_softmax": max_softmax, "max_probability": max_probability}
# batch of one: bit-identical to SCORERS (for decisions)
SCORERS_ONE = {"max_softmax": max_softmax_one, "max_probability": max_probability_one}
# batch of one at a final exit (reported only)
REPORTERS_ONE = {"max_softmax": max_softmax_reported, "max_probability": max_probability_one}


def score(policy: str, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) of an exit head's outputs under ``policy``."""
    return SCORERS[policy](outputs)


def exits_here(confidence: np.ndarray, threshold: float | None) -> np.ndarray:
    """Boolean mask of the samples that leave: all of them at the final exit (threshold None)."""
    if threshold is None:
        return np.ones(confidence.shape[0], dtype=bool)
    return confidence >= threshold


# ---------------------------------------------------------------------- one runtime stage

class StageRunner:
    """One stage as the runtime runs it: one session call (output names resolved once), then
    its exit heads in order. The stage works on an environment of named tensors: it feeds the
    part ``input_names`` (a name, or several) from what it received, and hands on ``carry`` (the
    live set of the next cut: tensors it computed or received and passes through).

    ``heads``: (exit name, output index, threshold or None, policy); ``next_output``: for a
    single-tensor hop, the output handed on (``carry`` defaults to its name; None when the stage
    ends with the final exit); ``next_stage``: the stage that follows on the same node (None: the
    tensors leave)."""

    __slots__ = ("run", "input_name", "input_names", "output_names", "heads", "next_output", "next_stage",
                 "carry", "carry_from")

    def __init__(self, session, input_names: str | Sequence[str], output_names: Sequence[str],
                 heads: Sequence[tuple[str, int, float | None, str]], next_output: int | None,
                 next_stage: int | None, carry: Sequence[str] | None = None):
        self.run = session.run
        self.input_names = [input_names] if isinstance(input_names, str) else list(input_names)
        self.input_name = self.input_names[0]
        self.output_names = list(output_names)
        self.heads = tuple((e, i, t, SCORERS[p], SCORERS_ONE[p], REPORTERS_ONE[p]) for e, i, t, p in heads)
        self.next_output = next_output
        self.next_stage = next_stage
        if carry is None:
            carry = [] if next_output is None else [self.output_names[next_output]]
        self.carry = list(carry)
        # per carried tensor: the output index that computes it, or None when it passes through
        self.carry_from = tuple((name, self.output_names.index(name) if name in self.output_names else None)
                                for name in self.carry)


class ChainOutcome:
    """What ``run_chain`` did: per sample of the batch, the exit taken (None: not here),
    predicted class, confidence, logits row and seconds from ``start`` to its decision; the
    stages run with how many samples each; and the samples that go on (``alive``, positions in
    the batch), their tensors (``remaining``: name -> rows of the samples that go on; None when
    none do) and the stage that produced them (``last``)."""

    __slots__ = ("exits", "predictions", "confidences", "logits", "offsets", "stage_samples", "alive",
                 "remaining", "last")

    def __init__(self, exits, predictions, confidences, logits, offsets, stage_samples, alive, remaining, last):
        self.exits = exits
        self.predictions = predictions
        self.confidences = confidences
        self.logits = logits
        self.offsets = offsets
        self.stage_samples = stage_samples
        self.alive = alive
        self.remaining = remaining
        self.last = last


def _environment(stages: Sequence[StageRunner], first: int, tensors) -> dict:
    return {stages[first].input_name: tensors} if isinstance(tensors, np.ndarray) else tensors


def _handed_on(stage: StageRunner, env: dict, values: list) -> dict:
    return {name: env[name] if index is None else values[index] for name, index in stage.carry_from}


def run_chain(stages: Sequence[StageRunner], first: int, tensors, start: float,
              clock: Callable[[], float] = time.perf_counter) -> ChainOutcome:
    """Run ``stages`` from ``first`` on ``tensors`` (a dict name -> array, or one array for a
    single-input stage) while they stay on this node, exiting samples at the first head that is
    confident (the final head takes all). Samples that exit leave the batch; the rest go on
    together, and downstream stages run only on them, with every tensor of the live set."""
    env = _environment(stages, first, tensors)
    n = next(iter(env.values())).shape[0]
    if n == 1:
        return _run_one(stages, first, env, start, clock)
    exits: list = [None] * n
    predictions = [-1] * n
    confidences = [math.nan] * n
    logits: list = [None] * n
    offsets = [math.nan] * n
    stage_samples: list[tuple[int, int]] = []
    alive = list(range(n))  # batch positions of the samples in ``env``
    index = first
    while True:
        stage = stages[index]
        values = stage.run(stage.output_names, {name: env[name] for name in stage.input_names})
        count = len(alive)
        stage_samples.append((index, count))
        staying = range(count)  # positions in ``env`` still undecided
        for exit_name, output_index, threshold, scorer, _one, _reported in stage.heads:
            if not staying:
                break
            head = values[output_index]
            confidence, predicted = scorer(head)
            passed = None if threshold is None else (confidence >= threshold).tolist()
            confidence_list, predicted_list = confidence.tolist(), predicted.tolist()
            now = clock() - start
            undecided = []
            for local in staying:
                if passed is None or passed[local]:
                    sample = alive[local]
                    exits[sample] = exit_name
                    predictions[sample] = predicted_list[local]
                    confidences[sample] = confidence_list[local]
                    logits[sample] = head[local]
                    offsets[sample] = now
                else:
                    undecided.append(local)
            staying = undecided
        if not staying:
            return ChainOutcome(exits, predictions, confidences, logits, offsets, stage_samples, [], None, index)
        if not stage.carry:  # a valid manifest has no last stage without a final exit
            raise RuntimeError(f"{len(staying)} samples reached the end of the chain without exiting")
        remaining = _handed_on(stage, env, values)
        if len(staying) < count:  # per-sample split: only these go on, every tensor of the live set
            rows = list(staying)
            remaining = {name: np.ascontiguousarray(array[rows]) for name, array in remaining.items()}
        alive = [alive[local] for local in staying]
        if stage.next_stage is None:
            return ChainOutcome(exits, predictions, confidences, logits, offsets, stage_samples, alive, remaining,
                                index)
        env, index = remaining, stage.next_stage


def _run_one(stages, index, env, start, clock) -> ChainOutcome:
    """``run_chain`` for one sample: no per-sample lists to filter, scalar scores."""
    stage_samples = []
    while True:
        stage = stages[index]
        values = stage.run(stage.output_names, {name: env[name] for name in stage.input_names})
        stage_samples.append((index, 1))
        for exit_name, output_index, threshold, _scorer, one, reported in stage.heads:
            head = values[output_index]
            if threshold is None:
                confidence, predicted = reported(head)
            else:
                confidence, predicted = one(head)
                if not confidence >= threshold:
                    continue
            return ChainOutcome([exit_name], [predicted], [confidence], [head[0]], [clock() - start],
                                stage_samples, [], None, index)
        if not stage.carry:
            raise RuntimeError("1 sample reached the end of the chain without exiting")
        env = _handed_on(stage, env, values)
        if stage.next_stage is None:
            return ChainOutcome([None], [-1], [math.nan], [None], [math.nan], stage_samples, [0], env, index)
        index = stage.next_stage
