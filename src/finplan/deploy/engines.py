"""Engines that can execute a deployment folder for ``finplan run --engine NAME``.

Each entry is ``"module:function"``, imported only when chosen (so ``ray`` is never imported
for the local engine). A function takes ``(folder, x, labels, *, batch_size, emulate_links,
threads, progress)`` and returns ``finplan.deploy.executor.Measurements``; the report is built
from those, the same for every engine.
"""
from __future__ import annotations

import importlib
from typing import Callable

ENGINES: dict[str, str] = {
    "local": "finplan.deploy.executor:run_local",
    "ray": "finplan.deploy.ray_serve.runner:run_on_ray",
    "ray-compiled": "finplan.deploy.ray_serve.compiled:run_compiled",
}


def engine_names() -> list[str]:
    return list(ENGINES)


def get_engine(name: str) -> Callable:
    module_name, _, function = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module_name), function)
