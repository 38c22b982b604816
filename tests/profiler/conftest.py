"""Fixtures for the profiler tests: the tiny onnx.helper model, the embedded B-AlexNet, data files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/onnx_builders.py

from onnx_builders import tiny_branchy_model  # noqa: E402

EMBEDDED = Path(__file__).resolve().parents[2] / "src" / "finplan" / "embedded" / "b-alexnet-digits.onnx"


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(tiny_branchy_model(residual=True), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """40 samples shaped for the tiny model (1x8x8), labels 0..2."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x=rng.standard_normal((40, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 40))
    return path


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    if not EMBEDDED.is_file():
        pytest.skip("the embedded B-AlexNet is not in this checkout")
    return EMBEDDED
