"""``attach_exits``: early exits on a torch model as its user has it.

Two forms:

- by qualified submodule name (as ``model.named_modules()`` spells it): forward hooks catch
  the named submodules' outputs while the model's own ``forward`` runs, unchanged; each caught
  tensor ends a block and feeds a new exit head (``AttachedExits``). Residual, U-Net and
  attention models work as they are: whatever else crosses a cut (a skip, a mask) is found in
  the exported graph by the contract's live sets, not here.
- by child index (an ``nn.Sequential`` or a module whose children run in order): the children
  are regrouped into blocks (``BranchyNet``), as before.

Exit heads are sized by a dry run on ``example_input``; the number of classes comes from the
model's own final output (a tensor ``(N, K)`` or a Hugging Face ``ModelOutput``'s ``logits``).
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn

from finplan.data import InputSpec
from finplan.exits.branchy import BranchyNet, ExitNames, make_contract, make_exit_head
from finplan.exits.model_io import (AttachError, class_scores, describe, dry_run, is_scores, model_inputs,
                                    pick_tensor)
from finplan.units import shape_text

TOKEN_POOLING = ("first", "mean")
NEAREST_NAMES = 5  # how many submodule names a misspelt ``after`` name suggests


class TokenHead(nn.Module):
    """Exit head for a sequence (N, T, D): the first token ([CLS]) or the mean over T, then a linear layer.

    The mean runs over every position, padding included (the head reads only the hidden state)."""

    def __init__(self, width: int, num_classes: int, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.linear = nn.Linear(width, num_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        pooled = hidden[:, 0] if self.pooling == "first" else hidden.mean(dim=1)
        return self.linear(pooled)


class AttachedExits(ExitNames, nn.Module):
    """``model`` unchanged plus exit heads on the outputs of named submodules.

    ``forward(*inputs)`` (inputs in ``input_names`` order) runs ``model`` once and returns
    ``(block1, ..., blockB, exit1, ..., exitE)``: block k's output is the k-th named
    submodule's output (the element ``select`` picks), the last block's the model's own
    final output; exit k is head k on block k (the last exit is the model's output itself
    unless the model has no class-score output of its own).
    """

    def __init__(self, model: nn.Module, points: Sequence[tuple[str, int | str | None]], heads: Sequence[nn.Module],
                 *, inputs: Sequence[InputSpec], call: str, output: int | str | None, num_classes: int,
                 final_head: nn.Module | None, spec: dict | None = None):
        super().__init__()
        self.model = model
        self.points = tuple(points)
        self.heads = nn.ModuleList([*heads, final_head if final_head is not None else nn.Identity()])
        self.exit_after = tuple(range(len(self.heads)))
        self.inputs = tuple(inputs)
        self.call = call            # "positional" or "keyword": how the model takes its inputs
        self.output = output        # which element of the model's output holds the class scores
        self.num_classes = int(num_classes)
        self.spec = spec
        self._modules_by_name = dict(model.named_modules())

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's per-sample shape (what single-input callers read)."""
        return self.inputs[0].shape

    @property
    def block_count(self) -> int:
        return len(self.points) + 1  # a block ends at each point; the last runs to the model's output

    def contract(self):
        return make_contract(self.input_names, self.block_names, self.exit_names,
                             [self.block_names[after] for after in self.exit_after])

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        caught: dict[str, object] = {}
        handles = [self._modules_by_name[name].register_forward_hook(_catch(caught, name))
                   for name, _ in self.points]
        try:
            final = self._call_model(inputs)
        finally:
            for handle in handles:
                handle.remove()
        blocks = [_select(caught[name], select) for name, select in self.points]
        blocks.append(_select(final, self.output, logits=True))
        exits = [head(block) for head, block in zip(self.heads, blocks)]
        return (*blocks, *exits)

    def exit_logits(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return list(self(*inputs)[len(self.points) + 1:])

    def _call_model(self, inputs):
        if self.call == "keyword":
            return self.model(**dict(zip(self.input_names, inputs)))
        return self.model(*inputs)


def _catch(store: dict, name: str):
    def hook(module, args, output):
        if name in store:  # a submodule run twice has no single output to cut at
            raise AttachError(f"submodule {name!r} runs more than once per forward; expected one call "
                              "(name a submodule that runs once)", field="after")
        store[name] = output
    return hook


def _select(value, select, *, logits: bool = False):
    """The tensor ``select`` names inside a submodule's (or the model's) output."""
    if select is None:
        if logits and not isinstance(value, torch.Tensor):
            value = value["logits"]
        return value
    return value[select]


# --------------------------------------------------------------------------- attach_exits

def attach_exits(model: nn.Module, after: Sequence[int | str | tuple[str, int | str]], *,
                 example_input, num_classes: int | None = None, pool_to: int = 2, token_pooling: str = "first",
                 output: int | str | None = None, input_names: Sequence[str] | None = None):
    """Put an exit after each submodule in ``after``.

    Parameters
    ----------
    model : the torch model, unchanged (its parameters are shared, not copied).
    after : qualified submodule names as in ``model.named_modules()`` (``"layer1"``,
        ``"features.3"``, ``"bert.encoder.layer.0"``), in execution order; a submodule whose
        output is a tuple or dict needs the element: ``("encoder.layer.0", 0)`` or
        ``("block", "hidden")``. Integers or digit strings (all of them) keep the older form:
        child indices of a module whose children run in order, regrouped into a ``BranchyNet``.
    example_input : a tensor, a tuple of tensors (positional arguments) or a dict of tensors
        (keyword arguments, e.g. ``input_ids`` and ``attention_mask``), batch axis first.
    num_classes : default the size of the model's class-score output; needed only when the
        model has none (then its final output gets a head too).
    pool_to : a 4-D (N, C, H, W) tensor is average-pooled to about pool_to x pool_to.
    token_pooling : a 3-D (N, T, D) tensor is reduced by its ``"first"`` token or the ``"mean"``.
    output : which element of the model's output holds the class scores, when it is a tuple
        or dict without ``logits``.
    input_names : names of positional inputs (default: the parameter names of ``forward``).

    Returns
    -------
    AttachedExits (names) or BranchyNet (indices).

    Raises
    ------
    AttachError (a ValueError and a FinplanInputError): a name that is not a submodule (the
    nearest names listed), a tuple/dict output without an element chosen, a dry run that
    fails (the submodule and the shapes named), exits out of execution order.
    """
    if token_pooling not in TOKEN_POOLING:
        raise AttachError(f"token_pooling is {token_pooling!r}; expected one of {', '.join(TOKEN_POOLING)}",
                          field="token_pooling")
    after = list(after)
    if not after:
        raise AttachError("after is empty; name at least one submodule to put an exit after", field="after")
    if all(_is_index(item) for item in after):
        return _attach_children(model, [int(item) for item in after], example_input=example_input, num_classes=num_classes, pool_to=pool_to)
    points = [_parse_point(model, item) for item in after]
    inputs, call, arguments = model_inputs(model, example_input, input_names)

    model.eval()
    caught: dict[str, object] = {}
    order: list[str] = []
    handles = []
    wanted = {name for name, _ in points}
    modules = dict(model.named_modules())
    for name in wanted:
        def hook(module, args, out, name=name):
            if name in caught:
                raise AttachError(f"submodule {name!r} runs more than once per forward; expected one call "
                                  "(name a submodule that runs once)", field="after")
            caught[name] = out
            order.append(name)
        handles.append(modules[name].register_forward_hook(hook))
    try:
        final = dry_run(model, arguments, call)
    finally:
        for handle in handles:
            handle.remove()
    for name, _ in points:
        if name not in caught:
            raise AttachError(f"submodule {name!r} did not run in the dry run; expected a submodule that forward "
                              "calls", field="after")
    named_order = [name for name, _ in points]
    if order != named_order:
        raise AttachError(f"after lists {', '.join(named_order)}, but they run in the order {', '.join(order)}; "
                          "expected them in execution order", field="after")

    scores, output = class_scores(final, output)
    if scores is not None:
        found = int(scores.shape[-1])
        if num_classes is not None and num_classes != found:
            raise AttachError(f"num_classes is {num_classes}, but the model's output has {found} class scores",
                              field="num_classes")
        num_classes = found
    elif num_classes is None:
        raise AttachError(f"the model's output is {describe(final)}, not class scores (N, K); pass num_classes to "
                          "put a head on it", field="num_classes")

    heads = []
    for name, select in points:
        tensor = pick_tensor(caught[name], name, select)
        heads.append(exit_head(tensor, num_classes, pool_to=pool_to, token_pooling=token_pooling, where=name))
    final_head = None
    if scores is None:
        final_tensor = pick_tensor(final, "the model's output", output)
        final_head = exit_head(final_tensor, num_classes, pool_to=pool_to, token_pooling=token_pooling,
                               where="the model's output")
    return AttachedExits(model, points, heads, inputs=inputs, call=call, output=output, num_classes=num_classes,
                         final_head=final_head)


def _is_index(item) -> bool:
    """An int or a digit string (``"5"``): the older child-index form."""
    if isinstance(item, bool):
        return False
    return isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit())


def exit_head(tensor: torch.Tensor, num_classes: int, *, pool_to: int = 2, token_pooling: str = "first",
              where: str = "") -> nn.Module:
    """A small classifier fitted to ``tensor`` (a batch): (N, C, H, W) pooled + linear, (N, T, D) first
    token or mean + linear, (N, D) linear."""
    if tensor.dim() == 4:
        return make_exit_head(tensor, num_classes, pool_to=pool_to)
    if tensor.dim() == 3:
        return TokenHead(int(tensor.shape[-1]), num_classes, token_pooling)
    if tensor.dim() == 2:
        return nn.Linear(int(tensor.shape[-1]), num_classes)
    raise AttachError(f"{where} gives a tensor of shape {shape_text(tensor.shape, empty='scalar')}; expected (N, C, H, W), (N, T, D) or (N, D) "
                      "to put an exit head on", field="after")


def _parse_point(model: nn.Module, item) -> tuple[str, int | str | None]:
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], (int, str)):
            raise AttachError(f"after item {item!r}: expected NAME or (NAME, ELEMENT) with ELEMENT an int or str",
                              field="after")
        name, select = item
    elif isinstance(item, str):
        name, select = item, None
    elif isinstance(item, int):
        children = [n for n, _ in model.named_children()]
        if not 0 <= item < len(children):
            raise AttachError(f"child index {item} out of range 0..{len(children) - 1}", field="after")
        name, select = children[item], None
    else:
        raise AttachError(f"after item {item!r}: expected a submodule name", field="after")
    names = [n for n, _ in model.named_modules() if n]
    if name not in names:
        nearest = difflib.get_close_matches(name, names, n=NEAREST_NAMES, cutoff=0.5) or names[:NEAREST_NAMES]
        raise AttachError(f"{name!r} is not a submodule of {type(model).__name__}; nearest names: "
                          f"{', '.join(nearest)}", field="after")
    return name, select


# --------------------------------------------------------------------------- child indices (older form)

def _attach_children(model: nn.Module, after: Sequence[int], *, example_input, num_classes, pool_to) -> BranchyNet:
    """Regroup the children of ``model`` (which must run in order) into blocks, exits after the given indices."""
    children = list(model.named_children())
    if not children:
        raise AttachError("the model has no children to split into blocks", field="after")
    positions = []
    for index in after:
        if not 0 <= index < len(children):
            raise AttachError(f"child index {index} out of range 0..{len(children) - 1}", field="after")
        positions.append(index)
    positions = sorted(set(positions))
    if not isinstance(example_input, torch.Tensor):
        raise AttachError("child indices take one tensor input; name submodules instead for tuple/dict inputs",
                          field="example_input")
    model = model.eval()
    with torch.no_grad():
        reference = dry_run(model, (example_input,), "positional")
        hidden = example_input
        outputs = []
        for _, child in children:
            hidden = child(hidden)
            outputs.append(hidden)
    if not isinstance(reference, torch.Tensor) or reference.shape != hidden.shape \
            or not torch.allclose(reference, hidden, atol=1e-5, rtol=1e-4):
        raise AttachError("running the model's children in order does not reproduce its output; its forward does "
                          "more than call them in turn (name the submodules instead: after=['layer1', ...])",
                          field="after")
    if num_classes is None:
        if not is_scores(hidden):
            raise AttachError(f"the model's output is {describe(hidden)}, not class scores (N, K); pass num_classes",
                              field="num_classes")
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


__all__ = ["AttachError", "AttachedExits", "TokenHead", "attach_exits", "exit_head"]
