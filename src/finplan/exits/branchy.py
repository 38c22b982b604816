"""Branchy (early-exit) torch modules: blocks in order, small exit heads after some of them.

A ``BranchyNet``'s forward returns every block output and every exit output in one tuple
``(block1, ..., blockB, exit1, ..., exitE)``, so the exported ONNX is one static graph
(no If/Loop) that computes everything; which exit is taken is decided by the runtime.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from finplan.contract import Block, Contract, Exit

INPUT_NAME = "x"


class BranchyNet(nn.Module):
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
    def block_names(self) -> tuple[str, ...]:
        return tuple(f"block{i}" for i in range(1, len(self.blocks) + 1))

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(f"exit{i}" for i in range(1, len(self.heads) + 1))

    @property
    def output_names(self) -> tuple[str, ...]:
        """ONNX output tensor names, in the order forward returns them."""
        return self.block_names + self.exit_names

    def contract(self) -> Contract:
        """The finplan contract of this model's export (tensor names equal block/exit names)."""
        return Contract(
            input=INPUT_NAME,
            blocks=tuple(Block(name, name) for name in self.block_names),
            exits=tuple(Exit(name, self.block_names[after], name)
                        for name, after in zip(self.exit_names, self.exit_after)),
        )

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


def attach_exits(model: nn.Module, after: Sequence[int | str], *, example_input: torch.Tensor,
                 num_classes: int | None = None, pool_to: int = 2) -> BranchyNet:
    """Turn ``model`` (an nn.Sequential, or a module whose children run in order) into a BranchyNet.

    ``after`` names where exits go: child indices (0-based) or child names. Each named child
    ends a block and gets a new exit head; the children after the last one form the final
    block, whose own output (the model's output) is the final exit. When the last child is
    named, every exit is a new head. ``num_classes`` defaults to the size of the model's
    output. The model's children are reused (shared parameters), not copied.

    Raises ValueError when running the children in order does not reproduce ``model``'s
    output on ``example_input`` (then the model does work outside its children: wrap it in
    an nn.Sequential that does the same), or when ``after`` names no child.
    """
    children = list(model.named_children())
    if not children:
        raise ValueError("the model has no children to split into blocks")
    names = [name for name, _ in children]
    positions = []
    for item in after:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if item not in names:
                raise ValueError(f"no child named {item!r}; children: {', '.join(names)}")
            positions.append(names.index(item))
        else:
            index = int(item)
            if not 0 <= index < len(children):
                raise ValueError(f"child index {index} out of range 0..{len(children) - 1}")
            positions.append(index)
    positions = sorted(set(positions))
    if not positions:
        raise ValueError("after is empty; name at least one child to put an exit after")

    model = model.eval()
    with torch.no_grad():
        reference = model(example_input)
        hidden = example_input
        outputs = []
        for _, child in children:
            hidden = child(hidden)
            outputs.append(hidden)
    if not isinstance(reference, torch.Tensor) or reference.shape != hidden.shape \
            or not torch.allclose(reference, hidden, atol=1e-5, rtol=1e-4):
        raise ValueError("running the model's children in order does not reproduce its output; "
                         "its forward does more than call them in turn (wrap it in an nn.Sequential)")
    if num_classes is None:
        num_classes = int(hidden.shape[-1])

    blocks: list[nn.Module] = []
    heads: list[tuple[int, nn.Module]] = []
    start = 0
    for position in positions:
        blocks.append(nn.Sequential(*(child for _, child in children[start:position + 1])))
        heads.append((len(blocks) - 1, make_exit_head(outputs[position], num_classes, pool_to=pool_to)))
        start = position + 1
    if start < len(children):
        blocks.append(nn.Sequential(*(child for _, child in children[start:])))
        heads.append((len(blocks) - 1, nn.Identity()))  # the model's own output is the final exit
    input_shape = tuple(example_input.shape[1:])
    return BranchyNet(blocks, heads, input_shape=input_shape, num_classes=num_classes)
