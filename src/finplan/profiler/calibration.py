"""Exit behaviour on a calibration set: per-sample scores, per-exit accuracy, threshold table.

The scores do not depend on the device, so they go into the model card; from them any
threshold setting yields exit rates and accuracy without running the model again. The
default policy: a sample leaves at the first exit (in contract order) whose max-softmax
confidence reaches the threshold; the last exit takes every sample still in the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from finplan.exit_policy import class_probabilities, score

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
SCORE_DECIMALS = 6  # card size and byte-for-byte determinism across thread counts


@dataclass
class ExitScores:
    """Per exit (rows, contract order) and per sample (columns)."""

    names: list[str]
    confidence: np.ndarray  # float64 [E, N], max softmax probability
    entropy: np.ndarray  # float64 [E, N], entropy / log(classes), in [0, 1]
    predicted: np.ndarray  # int64 [E, N]
    labels: np.ndarray | None  # int64 [N]

    @property
    def samples(self) -> int:
        return int(self.confidence.shape[1])


def exit_scores(outputs: np.ndarray, policy: str = "max_softmax") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, normalised entropy, predicted class) per row of an exit head's ``outputs``
    [N, classes] under ``policy`` (``finplan.exit_policy.policy_of``).

    The confidence and class are the runtime's scorer's (``finplan.exit_policy.score``), the one
    scorer of finplan, so planned and run exit rates agree.
    """
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    confidence, predicted = score(policy, outputs)
    probs = class_probabilities(policy, outputs)
    classes = probs.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    entropy = -plogp.sum(axis=1) / np.log(classes) if classes > 1 else np.zeros(len(probs))
    return confidence, np.clip(entropy, 0.0, 1.0), predicted


def softmax_scores(outputs: np.ndarray, *, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exit_scores`` of logits, or of probabilities (the exit already ends in Softmax)."""
    return exit_scores(outputs, "max_probability" if probabilities else "max_softmax")


def collect_scores(run_batch: Callable, x: np.ndarray | dict[str, np.ndarray], labels: np.ndarray | None,
                   names: list[str], *, batch_size: int = 64, policies: list[str] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> ExitScores:
    """Run ``run_batch`` (input batch -> one output per exit, in ``names`` order) over ``x`` in batches.

    ``x`` is one array, or a dict input name -> array (every array with the same number of
    samples): ``run_batch`` then gets a dict of the same rows of each."""
    policies = policies or ["max_softmax"] * len(names)
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in names]
    total = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    for start in range(0, total, batch_size):
        rows = slice(start, start + batch_size)
        outputs = run_batch({k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows])
        for index, output in enumerate(outputs):
            parts[index].append(exit_scores(output, policies[index]))
        if progress is not None:
            progress("calibration", min(start + batch_size, total), total)
    confidence = np.stack([np.concatenate([p[0] for p in rows]) for rows in parts])
    entropy = np.stack([np.concatenate([p[1] for p in rows]) for rows in parts])
    predicted = np.stack([np.concatenate([p[2] for p in rows]) for rows in parts])
    return ExitScores(list(names), confidence, entropy, predicted, None if labels is None else np.asarray(labels))


def exit_accuracy(scores: ExitScores) -> dict[str, float]:
    """Accuracy of each exit if every sample left there."""
    if scores.labels is None:
        raise ValueError("no labels")
    return {name: float(np.mean(scores.predicted[i] == scores.labels)) for i, name in enumerate(scores.names)}


def exit_assignment(confidence: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """Index of the exit each sample leaves at, under per-exit ``thresholds`` for all exits but the last."""
    exits, samples = confidence.shape
    chosen = np.full(samples, exits - 1, dtype=np.int64)
    undecided = np.ones(samples, dtype=bool)
    for index in range(exits - 1):
        leave = undecided & (confidence[index] >= thresholds[index])
        chosen[leave] = index
        undecided &= ~leave
    return chosen


def policy_outcome(scores: ExitScores, thresholds: list[float], flops_to_exit: list[float] | None = None) -> dict:
    """Exit rates, accuracy (when labelled) and expected FLOPs per sample for one threshold setting."""
    chosen = exit_assignment(scores.confidence, thresholds)
    counts = np.bincount(chosen, minlength=len(scores.names))
    row = {
        "thresholds": {name: float(t) for name, t in zip(scores.names[:-1], thresholds)},
        "exit_rates": {name: float(c / scores.samples) for name, c in zip(scores.names, counts)},
    }
    if scores.labels is not None:
        final = scores.predicted[chosen, np.arange(scores.samples)]
        row["accuracy"] = float(np.mean(final == scores.labels))
    if flops_to_exit is not None:
        row["expected_flops"] = float(np.dot(counts, flops_to_exit) / scores.samples)
    return row


def threshold_table(scores: ExitScores, flops_to_exit: list[float] | None = None,
                    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> list[dict]:
    """The default policy (one threshold for every early exit) at each of ``thresholds``."""
    early = len(scores.names) - 1
    return [{"threshold": float(t), **policy_outcome(scores, [t] * early, flops_to_exit)} for t in thresholds]


def flops_to_exit(block_flops: dict[str, float], exit_flops: dict[str, float], exit_after: dict[str, str],
                  exit_order: list[str], block_order: list[str]) -> list[float]:
    """FLOPs spent on a sample that leaves at each exit: its blocks so far plus every head evaluated on the way."""
    costs = []
    for position, name in enumerate(exit_order):
        last_block = block_order.index(exit_after[name])
        blocks = sum(block_flops[b] for b in block_order[:last_block + 1])
        heads = sum(exit_flops[e] for e in exit_order[:position + 1])
        costs.append(float(blocks + heads))
    return costs


def card_section(scores: ExitScores, table: list[dict], source: str) -> dict:
    """The model card's ``calibration`` entry (see model.schema.json)."""
    # Confidence stays at full precision: the planner puts thresholds on observed scores and the
    # runtime compares its own float64 softmax with them, so a rounded score could flip a decision.
    def rounded(values: np.ndarray) -> list[float]:
        return [float(v) for v in np.round(values, SCORE_DECIMALS)]

    section = {
        "score": "max_softmax",
        "policy": "first exit whose max-softmax confidence >= its threshold; the last exit takes the rest",
        "source": source,
        "samples": scores.samples,
    }
    if scores.labels is not None:
        section["labels"] = [int(v) for v in scores.labels]
    section["exits"] = [
        {"name": name, "confidence": [float(v) for v in scores.confidence[i]], "entropy": rounded(scores.entropy[i]),
         "predicted": [int(v) for v in scores.predicted[i]]}
        for i, name in enumerate(scores.names)
    ]
    section["table"] = table
    return section
