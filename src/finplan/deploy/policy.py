"""Exit policies: when does a sample leave at an exit head.

One function, used by the runtime, the verifier and the tests' direct computation, so that
every place decides the same way (``confidence >= threshold``; ties exit).
"""
from __future__ import annotations

import numpy as np


def max_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) per sample of ``logits [N, classes]``.

    Computed in float64 with the max subtracted, so large logits cannot overflow and the
    decision does not depend on float32 rounding of the normaliser.
    """
    flat = np.asarray(logits, dtype=np.float64).reshape(logits.shape[0], -1)
    shifted = flat - flat.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    confidence = exp.max(axis=1) / exp.sum(axis=1)
    return confidence, flat.argmax(axis=1).astype(np.int64)


def exits_here(confidence: np.ndarray, threshold: float | None) -> np.ndarray:
    """Boolean mask of the samples that leave: all of them at the final exit (threshold None)."""
    if threshold is None:
        return np.ones(confidence.shape[0], dtype=bool)
    return confidence >= threshold
