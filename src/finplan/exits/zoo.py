"""BranchyNet-style model zoo: B-LeNet, B-AlexNet, B-ResNet, sized for small inputs, and B-BERT
(finplan.exits.bert: token ids + attention mask).

Each builder takes the input shape (C, H, W, no batch axis), the channel widths and the
number of classes, and returns a ``BranchyNet``. Exit heads are deliberately small
(BranchyNet's point): the early exits see shallow features through a cheap classifier,
so they are weaker than the final exit, and only easy inputs should leave there.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from finplan.errors import FinplanInputError
from finplan.exits.bert import DEFAULT_SHAPE as BERT_SHAPE
from finplan.exits.bert import b_bert
from finplan.exits.branchy import BranchyNet, make_exit_head

CHECKPOINT_FORMAT = "finplan.checkpoint/1"


def _probe(modules: Sequence[nn.Module], input_shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Run a zero batch through the blocks to size the heads; fail clearly when the input is too small."""
    outputs = []
    with torch.no_grad():
        hidden = torch.zeros(2, *input_shape)
        for index, module in enumerate(modules, start=1):
            try:
                hidden = module.eval()(hidden)
            except RuntimeError as exc:
                raise ValueError(f"input shape {'x'.join(map(str, input_shape))} is too small or malformed for "
                                 f"block {index} ({str(exc).splitlines()[0]})") from None
            if hidden.numel() == 0:
                raise ValueError(f"input shape {'x'.join(map(str, input_shape))} is too small: block {index} "
                                 "produces an empty tensor")
            outputs.append(hidden)
    return outputs


def _widths(channels: Sequence[int] | None, default: tuple[int, ...], model: str) -> tuple[int, ...]:
    widths = default if channels is None else tuple(int(c) for c in channels)
    if len(widths) != len(default) or any(c <= 0 for c in widths):
        raise ValueError(f"{model} takes {len(default)} positive channel widths (default "
                         f"{','.join(map(str, default))}), got {','.join(map(str, widths))}")
    return widths


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or any(d <= 0 for d in shape):
        raise ValueError(f"input shape {'x'.join(map(str, shape))} must be CxHxW (e.g. 1x32x32)")
    return shape  # type: ignore[return-value]


def b_lenet(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
            channels: Sequence[int] | None = None) -> BranchyNet:
    """B-LeNet: 3 blocks (conv, conv, fc), exits after blocks 1 and 3. ``channels`` = (conv1, conv2, fc)."""
    shape = _check_shape(input_shape)
    c1, c2, fc = _widths(channels, (8, 16, 64), "b-lenet")
    front = [
        nn.Sequential(nn.Conv2d(shape[0], c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
    ]
    probe = _probe(front, shape)
    blocks = front + [nn.Sequential(nn.Flatten(), nn.Linear(probe[-1][0].numel(), fc), nn.ReLU())]
    probe = _probe(blocks, shape)
    heads = [(0, make_exit_head(probe[0], num_classes, pool_to=2)),
             (2, nn.Linear(fc, num_classes))]
    return BranchyNet(blocks, heads, input_shape=shape, num_classes=num_classes,
                      spec={"model": "b-lenet", "channels": [c1, c2, fc]})


def b_alexnet(input_shape: Sequence[int] = (1, 32, 32), num_classes: int = 10,
              channels: Sequence[int] | None = None) -> BranchyNet:
    """B-AlexNet: 5 blocks (conv1+pool, conv2+pool, conv3, conv4+conv5+pool, fc1+fc2), exits
    after blocks 1, 3 and 5. ``channels`` = (conv1, conv2, conv3, conv4, conv5, fc)."""
    shape = _check_shape(input_shape)
    c1, c2, c3, c4, c5, fc = _widths(channels, (16, 32, 48, 48, 32, 128), "b-alexnet")
    front = [
        nn.Sequential(nn.Conv2d(shape[0], c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(), nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2)),
    ]
    probe = _probe(front, shape)
    blocks = front + [nn.Sequential(nn.Flatten(), nn.Linear(probe[-1][0].numel(), fc), nn.ReLU(),
                                    nn.Linear(fc, fc), nn.ReLU())]
    probe = _probe(blocks, shape)
    # Exit 1: a linear classifier on a 4x4 average-pooled grid of conv1 features (cheap, weaker);
    # exit 2: the same on a 2x2 grid of conv3 features; exit 3: the last fc layer.
    heads = [(0, make_exit_head(probe[0], num_classes, pool_to=4)),
             (2, make_exit_head(probe[2], num_classes, pool_to=2)),
             (4, nn.Linear(fc, num_classes))]
    return BranchyNet(blocks, heads, input_shape=shape, num_classes=num_classes,
                      spec={"model": "b-alexnet", "channels": [c1, c2, c3, c4, c5, fc]})


class BasicBlock(nn.Module):
    """ResNet basic block; the skip connection starts and ends inside this module, so a block
    boundary placed between BasicBlocks never cuts it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def b_resnet(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
             channels: Sequence[int] | None = None) -> BranchyNet:
    """B-ResNet: 5 blocks (stem, residual, residual/2, residual/2, residual), exits after blocks
    1, 3 and 5. ``channels`` = (stem and stage 1, stage 2, stage 3)."""
    shape = _check_shape(input_shape)
    c1, c2, c3 = _widths(channels, (16, 32, 64), "b-resnet")
    blocks = [
        nn.Sequential(nn.Conv2d(shape[0], c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU()),
        BasicBlock(c1, c1),
        BasicBlock(c1, c2, stride=2),
        BasicBlock(c2, c3, stride=2),
        BasicBlock(c3, c3),
    ]
    probe = _probe(blocks, shape)
    heads = [(0, make_exit_head(probe[0], num_classes, pool_to=4)),
             (2, make_exit_head(probe[2], num_classes, pool_to=2)),
             (4, make_exit_head(probe[4], num_classes, pool_to=1))]
    return BranchyNet(blocks, heads, input_shape=shape, num_classes=num_classes,
                      spec={"model": "b-resnet", "channels": [c1, c2, c3]})


MODELS: dict[str, Callable[..., BranchyNet]] = {"b-lenet": b_lenet, "b-alexnet": b_alexnet, "b-resnet": b_resnet,
                                                "b-bert": b_bert}
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, ...]] = {"b-lenet": (1, 28, 28), "b-alexnet": (1, 32, 32),
                                                    "b-resnet": (3, 32, 32), "b-bert": BERT_SHAPE}
TEXT_MODELS = ("b-bert",)  # models over token ids + attention mask (the keywords task), not images


def build_model(name: str, *, input_shape: Sequence[int], num_classes: int = 10,
                channels: Sequence[int] | None = None, seed: int = 0) -> BranchyNet:
    """Build zoo model ``name`` with weights initialised from ``seed`` (the global RNG is left as it was).

    Raises FinplanInputError for an unknown name or a shape/width the model cannot take.
    """
    if name not in MODELS:
        raise FinplanInputError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}", field="--model")
    if num_classes < 2:
        raise FinplanInputError(f"num_classes is {num_classes}; expected at least 2", field="--num-classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = MODELS[name](input_shape, num_classes, channels)
        except ValueError as exc:
            raise FinplanInputError(str(exc), field="--model") from None
    model.spec = {**(model.spec or {}), "input_shape": list(model.input_shape), "num_classes": num_classes}
    return model


def save_checkpoint(model: BranchyNet, path: str | os.PathLike) -> None:
    """Save a zoo model's recipe and weights (``finplan exits export --checkpoint`` rebuilds it), atomically."""
    import io

    from finplan.fileio import atomic_write_bytes

    if not model.spec or "model" not in model.spec:
        raise ValueError("only zoo models carry the recipe a checkpoint needs; save model.state_dict() yourself")
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **model.spec, "state_dict": model.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None) -> BranchyNet:
    """Rebuild a zoo model from ``save_checkpoint``'s file (weights only: no code is unpickled)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FinplanInputError("file not found", file=path)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for foreign files
        raise FinplanInputError(f"not a finplan checkpoint ({exc.__class__.__name__})", file=path) from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise FinplanInputError(f"not a finplan checkpoint; expected a file written by `finplan exits train "
                                f"--checkpoint-out` ({CHECKPOINT_FORMAT})", file=path)
    if model_name is not None and model_name != doc.get("model"):
        raise FinplanInputError(f"holds a {doc.get('model')} model, not {model_name}", file=path, field="model")
    model = build_model(doc["model"], input_shape=doc["input_shape"], num_classes=doc["num_classes"],
                        channels=doc.get("channels"))
    try:
        model.load_state_dict(doc["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise FinplanInputError(f"weights do not fit the model ({str(exc).splitlines()[0]})", file=path,
                                field="state_dict") from None
    return model
