"""The one door to torchvision and transformers (the ``[zoo]`` extra).

The only torchvision wheel in the package index for torch 2.13.0 is a CUDA build: its import
registers fake kernels for ``torchvision::nms``/``qnms`` and fails against the CPU torch with
"operator torchvision::nms does not exist", because the compiled library that defines those
operators cannot load. Declaring the two schemas first lets ``torchvision.models`` import
(classification models work; detection ops, which need the real kernels, do not).
transformers imports torchvision whenever it is installed, so it must come through here too.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from finplan.errors import EnvironmentFault

ZOO_MISSING = "{name} is not installed; this model needs the [zoo] extra"
ZOO_CHECK = "pip install 'finplan[zoo]'"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # kept alive: dropping a torch.library.Library removes what it defined


def _declare_torchvision_ops() -> None:
    """Define the schemas torchvision's import registers fake kernels for, unless already defined."""
    global _library
    import torch

    missing = [name for name in _SCHEMAS if not _op_defined(torch, name)]
    if not missing:
        return
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _op_defined(torch, name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _load(name: str) -> ModuleType:
    _declare_torchvision_ops()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if getattr(exc, "name", None) and exc.name.split(".")[0] == name.split(".")[0]:
            raise EnvironmentFault(ZOO_MISSING.format(name=name), check=ZOO_CHECK) from None
        raise


def torchvision() -> ModuleType:
    """``import torchvision`` that works with the CPU torch (see the module docstring)."""
    return _load("torchvision")


def transformers() -> ModuleType:
    """``import transformers``, after the torchvision workaround (transformers imports torchvision)."""
    return _load("transformers")
