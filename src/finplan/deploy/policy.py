"""Exit policies: when does a sample leave at an exit head.

One scorer per policy, used by the runtime, the verifier and the tests' direct computation, so
that every place decides the same way (``confidence >= threshold``; ties exit). The formulas
are the profiler's (finplan.profiler.calibration.softmax_scores), bit for bit, so the exit
rates the planner predicts from calibration scores are the ones the runtime produces.
"""
from __future__ import annotations

import numpy as np


def max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) per sample of ``logits [N, classes]``.

    Computed in float64 with the max subtracted, so large logits cannot overflow and the
    decision does not depend on float32 rounding of the normaliser.
    """
    flat = np.array(logits, dtype=np.float64).reshape(logits.shape[0], -1)  # a copy, changed in place below
    predicted = flat.argmax(axis=1).astype(np.int64)
    flat -= flat.max(axis=1, keepdims=True)
    np.exp(flat, out=flat)
    # the largest term is exp(0) = 1 exactly, so max/sum is 1/sum
    return 1.0 / flat.sum(axis=1), predicted


def max_probability(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) for an exit head that already ends in Softmax: its largest
    probability (negatives clipped, rows renormalised), as the profiler scores such exits."""
    values = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(probabilities.shape[0], -1), 0.0, None)
    values = values / np.maximum(values.sum(axis=1, keepdims=True), 1e-300)
    return values.max(axis=1), values.argmax(axis=1).astype(np.int64)


SCORERS = {"max_softmax": max_softmax, "max_probability": max_probability}


def score(policy: str, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) of an exit head's outputs under ``policy``."""
    return SCORERS[policy](outputs)


def exits_here(confidence: np.ndarray, threshold: float | None) -> np.ndarray:
    """Boolean mask of the samples that leave: all of them at the final exit (threshold None)."""
    if threshold is None:
        return np.ones(confidence.shape[0], dtype=bool)
    return confidence >= threshold
