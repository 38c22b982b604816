"""What a torch model takes and gives, for ``attach_exits``: its inputs (specs and how to call
it), one dry run that names the failing submodule, its class scores, the tensor a submodule
gives; every refusal an ``AttachError`` naming the option at fault."""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from finplan.data import InputSpec
from finplan.errors import FinplanInputError
from finplan.units import shape_text


class AttachError(FinplanInputError, ValueError):
    """attach_exits cannot place an exit as asked (one line naming the submodule and what was expected)."""


def model_inputs(model: nn.Module, example, names: Sequence[str] | None):
    """(input specs, how to call the model, the example as call arguments)."""
    if isinstance(example, Mapping):
        items = list(example.items())
        call, arguments = "keyword", dict(example)
    else:
        values = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        if names is None:
            names = parameter_names(model, len(values))
        if len(names) != len(values):
            raise AttachError(f"{len(names)} input names for {len(values)} example inputs", field="input_names")
        items = list(zip(names, values))
        call, arguments = "positional", values
    specs = []
    for name, value in items:
        if not isinstance(value, torch.Tensor) or value.dim() < 1 or len(value) < 1:
            raise AttachError(f"input {name!r} is {describe(value)}; expected a tensor with a batch axis first",
                              field="example_input")
        specs.append(InputSpec(str(name), torch.empty(0, dtype=value.dtype).numpy().dtype,
                               tuple(int(d) for d in value.shape[1:])))
    return tuple(specs), call, arguments


def parameter_names(model: nn.Module, count: int) -> list[str]:
    """Names of ``forward``'s first ``count`` parameters (the ONNX input names), or x / x0, x1, ..."""
    try:
        parameters = [p for p in inspect.signature(model.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) >= count:
        return [p.name for p in parameters[:count]]
    return ["x"] if count == 1 else [f"x{i}" for i in range(count)]


def dry_run(model: nn.Module, arguments, call: str):
    """Run the model once; a failure names the innermost submodule that was running and its input shapes."""
    stack: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []

    def enter(name):
        def hook(module, args, kwargs):
            stack.append((name, ", ".join(describe(a) for a in (*args, *kwargs.values())
                                          if isinstance(a, torch.Tensor)) or "no tensor"))
        return hook

    def leave(module, args, out):
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name or type(model).__name__), with_kwargs=True))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad():
            try:
                return model(**arguments) if call == "keyword" else model(*arguments)
            except AttachError:
                raise
            except Exception as exc:  # any error of the user's model: named once, in one line
                failed.extend(stack)
                where, shapes = failed[-1] if failed else (type(model).__name__, "")
                message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise AttachError(f"dry run failed in submodule {where!r} on input {shapes}: {message}",
                                  field="example_input") from None
    finally:
        for handle in handles:
            handle.remove()


def class_scores(final, output):
    """(the class-score tensor of the model's output or None, the element used)."""
    if output is not None:
        try:
            value = final[output]
        except (KeyError, IndexError, TypeError):
            raise AttachError(f"output={output!r}: the model's output is {describe(final)}", field="output") from None
        return (value if is_scores(value) else None), output
    if isinstance(final, torch.Tensor):
        return (final if is_scores(final) else None), None
    if isinstance(final, Mapping) and "logits" in final:  # Hugging Face ModelOutput and plain dicts
        value = final["logits"]
        if not is_scores(value):
            raise AttachError(f"the model's logits are {describe(value)}; expected class scores (N, K)", field="output")
        return value, None
    raise AttachError(f"the model's output is {describe(final)}; say which element holds the class scores "
                      "(output=INDEX or output='KEY')", field="output")


def is_scores(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 2 and value.dtype.is_floating_point \
        and value.shape[-1] >= 2


def pick_tensor(value, name: str, select):
    if select is not None:
        try:
            value = value[select]
        except (KeyError, IndexError, TypeError):
            raise AttachError(f"submodule {name!r} gives {describe(value)}; it has no element {select!r}",
                              field="after") from None
    if isinstance(value, torch.Tensor):
        return value
    hint = "0" if isinstance(value, (tuple, list)) else repr(next(iter(value), "KEY")) \
        if isinstance(value, Mapping) else "0"
    raise AttachError(f"submodule {name!r} gives {describe(value)}, not one tensor; say which element: "
                      f"after=[({name!r}, {hint})]", field="after")


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{shape_text(value.shape, empty='scalar')} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, Mapping):
        return "a dict (" + ", ".join(f"{k}: {describe(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} (" + ", ".join(
            f"{i}: {describe(v)}" for i, v in enumerate(value)) + ")"
    return type(value).__name__
