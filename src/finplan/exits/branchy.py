"""Branchy (early-exit) torch modules: blocks in order, small exit heads after some of them.

A ``BranchyNet``'s forward returns every block output and every exit output in one tuple
``(block1, ..., blockB, exit1, ..., exitE)``, so the exported ONNX is one static graph
(no If/Loop) that computes everything; which exit is taken is decided by the runtime.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import numpy as np

from finplan.contract import Block, Contract, Exit
from finplan.data import InputSpec

INPUT_NAME = "x"


def make_contract(inputs: Sequence[str], blocks: Sequence[str], exits: Sequence[str],
                  exit_after: Sequence[str]) -> Contract:
    """The contract of an export whose tensor names equal the block/exit names."""
    block_list = tuple(Block(name, name) for name in blocks)
    exit_list = tuple(Exit(name, after, name) for name, after in zip(exits, exit_after))
    return Contract(inputs=tuple(inputs), blocks=block_list, exits=exit_list)


class ExitNames:
    """The ONNX names of a branchy model's outputs (block1.., exit1..), shared by ``BranchyNet``
    and ``attach.AttachedExits``: ``block_count`` and ``heads`` say how many."""

    heads: Sequence

    @property
    def block_count(self) -> int:
        raise NotImplementedError

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(f"block{i}" for i in range(1, self.block_count + 1))

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(f"exit{i}" for i in range(1, len(self.heads) + 1))

    @property
    def output_names(self) -> tuple[str, ...]:
        """ONNX output tensor names, in the order forward returns them."""
        return self.block_names + self.exit_names


class BranchyNet(ExitNames, nn.Module):
    """Blocks run in order; exit head ``e`` reads the output of block ``exit_after[e]`` (0-based)."""

    def __init__(self, blocks: Sequence[nn.Module], heads: Sequence[tuple[int, nn.Module]], *,
                 input_shape: tuple[int, ...], num_classes: int, spec: dict | None = None):
        super().__init__()
        if not blocks:
            raise ValueError("a branchy model needs at least one block")
        ordered = sorted(heads, key=lambda pair: pair[0])
        if not ordered:
            raise ValueError("a branchy model needs at least one exit")
        for after, _ in ordered:
            if not 0 <= after < len(blocks):
                raise ValueError(f"exit after block index {after}, but there are {len(blocks)} blocks")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(head for _, head in ordered)
        self.exit_after: tuple[int, ...] = tuple(after for after, _ in ordered)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        # what a zoo builder needs to rebuild this model from a checkpoint (None for attach_exits models)
        self.spec = spec

    @property
    def block_count(self) -> int:
        return len(self.blocks)

    @property
    def input_names(self) -> tuple[str, ...]:
        return (INPUT_NAME,)

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        return (InputSpec(INPUT_NAME, np.dtype(np.float32), self.input_shape),)

    def contract(self) -> Contract:
        """The finplan contract of this model's export (tensor names equal block/exit names)."""
        return make_contract(self.input_names, self.block_names, self.exit_names,
                             [self.block_names[after] for after in self.exit_after])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        block_outputs = []
        hidden = x
        for block in self.blocks:
            hidden = block(hidden)
            block_outputs.append(hidden)
        exit_outputs = [head(block_outputs[after]) for after, head in zip(self.exit_after, self.heads)]
        return (*block_outputs, *exit_outputs)

    def exit_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self(x)[len(self.blocks):])


def make_exit_head(example_output: torch.Tensor, num_classes: int, *, pool_to: int = 2,
                   conv_channels: int | None = None) -> nn.Sequential:
    """A small classifier for one exit: [3x3 conv + ReLU], average pool to about ``pool_to`` x
    ``pool_to``, flatten, linear. The linear layer's width comes from a dry run on
    ``example_output`` (a batch of the tensor the head will read)."""
    layers: list[nn.Module] = []
    if example_output.dim() == 4:
        channels, height, width = example_output.shape[1:]
        if conv_channels:
            layers += [nn.Conv2d(channels, conv_channels, 3, padding=1), nn.ReLU()]
        kernel = (max(1, height // max(1, pool_to)), max(1, width // max(1, pool_to)))
        if kernel != (1, 1):
            layers.append(nn.AvgPool2d(kernel))
    layers.append(nn.Flatten())
    with torch.no_grad():
        features = nn.Sequential(*layers).eval()(example_output[:1]).shape[1]
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
