"""Joint training of all exits (BranchyNet): loss = sum over exits of weight_e * CE(exit_e, y).

Deterministic on CPU for a given seed: the weights come from the model builder's seed, the
batch order from a generator seeded here, and deterministic algorithms are switched on for
the duration of training (and restored afterwards).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from finplan.data import Dataset
from finplan.exits.branchy import BranchyNet

CONFIDENCE_THRESHOLD = 0.9


@dataclass(frozen=True)
class EpochReport:
    epoch: int                                # 1-based
    epochs: int
    loss: float                               # mean weighted joint loss over the epoch's batches
    train_accuracy: tuple[float, ...]         # per exit, on the training batches as they were seen
    eval_accuracy: tuple[float, ...] | None   # per exit, on eval data after the epoch (None without it)


@dataclass(frozen=True)
class ExitMetrics:
    accuracy: tuple[float, ...]          # per exit, fraction of samples classified correctly
    confident_share: tuple[float, ...]   # per exit, fraction with max softmax >= confidence_threshold
    confident_accuracy: tuple[float, ...]  # per exit, accuracy among those confident samples (nan if none)
    confidence_threshold: float
    samples: int


def default_exit_weights(exit_count: int) -> tuple[float, ...]:
    """BranchyNet weights every exit's loss; equal weights are its default."""
    return (1.0,) * exit_count


def train(model: BranchyNet, data: Dataset, *, epochs: int, seed: int,
          exit_weights: Sequence[float] | None = None, batch_size: int = 64, lr: float = 1e-3,
          eval_data: Dataset | None = None,
          on_batch: Callable[[int, int, int], None] | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
    """Train every exit jointly with Adam; returns one report per epoch.

    ``on_batch(epoch, batches_done, batches_total)`` and ``on_epoch(report)`` let a caller show
    progress. Raises ValueError for labels missing or out of range, or bad weights.
    """
    exit_count = len(model.heads)
    weights = tuple(default_exit_weights(exit_count) if exit_weights is None else exit_weights)
    if len(weights) != exit_count or any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"expected {exit_count} non-negative exit weights (one per exit), got "
                         f"{','.join(map(str, weights))}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("epochs and batch size must be >= 1 and the learning rate > 0")
    inputs, y = _tensors(data, model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    batches = (len(y) + batch_size - 1) // batch_size
    reports = []
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(y), generator=generator)
            loss_sum, correct, seen = 0.0, torch.zeros(exit_count), 0
            for batch in range(batches):
                index = order[batch * batch_size:(batch + 1) * batch_size]
                logits = model.exit_logits(*(t[index] for t in inputs))
                loss = sum(w * loss_fn(out, y[index]) for w, out in zip(weights, logits))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(index)
                seen += len(index)
                correct += torch.tensor([float((out.argmax(1) == y[index]).sum()) for out in logits])
                if on_batch is not None:
                    on_batch(epoch, batch + 1, batches)
            eval_accuracy = evaluate(model, eval_data).accuracy if eval_data is not None else None
            report = EpochReport(epoch, epochs, loss_sum / seen, tuple(float(c) / seen for c in correct),
                                 eval_accuracy)
            reports.append(report)
            if on_epoch is not None:
                on_epoch(report)
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
        model.eval()
    return reports


def evaluate(model: BranchyNet, data: Dataset, *, batch_size: int = 256,
             confidence_threshold: float = CONFIDENCE_THRESHOLD) -> ExitMetrics:
    """Per-exit accuracy and how often each exit is confident (max softmax >= threshold)."""
    inputs, y = _tensors(data, model)
    model.eval()
    exit_count = len(model.heads)
    correct = np.zeros(exit_count)
    confident = np.zeros(exit_count)
    confident_correct = np.zeros(exit_count)
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            labels = y[start:start + batch_size]
            for e, logits in enumerate(model.exit_logits(*(t[start:start + batch_size] for t in inputs))):
                probabilities = torch.softmax(logits, dim=1)
                top, predicted = probabilities.max(dim=1)
                right = predicted == labels
                sure = top >= confidence_threshold
                correct[e] += float(right.sum())
                confident[e] += float(sure.sum())
                confident_correct[e] += float((right & sure).sum())
    samples = len(y)
    return ExitMetrics(
        accuracy=tuple(float(c / samples) for c in correct),
        confident_share=tuple(float(c / samples) for c in confident),
        confident_accuracy=tuple(float(cc / c) if c else float("nan") for cc, c in zip(confident_correct, confident)),
        confidence_threshold=confidence_threshold, samples=samples)


def _tensors(data, model) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The model's inputs (in its input order) and the labels of ``data``: a Dataset (``x``, one
    input) or anything with ``inputs`` (a dict of arrays named after the model's inputs) and ``y``.
    Float data goes to the input's float dtype; integer inputs (token ids, masks) keep theirs."""
    num_classes = model.num_classes
    if data.y is None:
        raise ValueError(f"{data.name}: has no labels (y); training and evaluation need them")
    if len(data.y) and (data.y.min() < 0 or data.y.max() >= num_classes):
        raise ValueError(f"{data.name}: labels out of range 0..{num_classes - 1}")
    arrays = data.inputs if hasattr(data, "inputs") else {model.input_names[0]: data.x}
    missing = [spec.name for spec in model.inputs if spec.name not in arrays]
    if missing:
        raise ValueError(f"{data.name}: has no {', '.join(missing)}; the model's inputs are "
                         f"{', '.join(model.input_names)}")
    tensors = []
    for spec in model.inputs:
        array = np.asarray(arrays[spec.name])
        target = np.dtype(spec.dtype)
        if array.dtype != target and not (array.dtype.kind == "f" and target.kind == "f"):
            raise ValueError(f"{data.name}: {spec.name} has dtype {array.dtype}; the model input needs {target}")
        if len(array) != len(data.y):
            raise ValueError(f"{data.name}: {spec.name} holds {len(array)} samples and y {len(data.y)}; "
                             "expected the same")
        tensors.append(torch.from_numpy(np.ascontiguousarray(array, dtype=target)))
    return tuple(tensors), torch.from_numpy(data.y.astype(np.int64))
