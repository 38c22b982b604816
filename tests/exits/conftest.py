"""Tiny zoo models, built and exported ONCE per session (torch export costs about a second each)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from finplan.data import load_data  # noqa: E402
from finplan.exits import BranchyNet, build_model, to_onnx  # noqa: E402
from exits_tiny import TINY  # noqa: E402



@dataclass
class Exported:
    model: BranchyNet
    proto: onnx.ModelProto
    max_abs_diff: float
    inputs: np.ndarray  # real inputs (digits calibration split) in the model's shape


@pytest.fixture(scope="session")
def tiny_exports() -> dict[str, Exported]:
    exported = {}
    for name, (shape, channels) in TINY.items():
        model = build_model(name, input_shape=shape, num_classes=10, channels=channels, seed=0)
        inputs = load_data("digits", shape, split="calibration", seed=0, limit=16).x
        proto, difference = to_onnx(model, inputs)
        exported[name] = Exported(model, proto, difference, inputs)
    return exported
