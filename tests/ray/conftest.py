"""Fixtures for the Ray Serve layer: deployment folders of the tiny branchy model (emitted once
per session) and, for tests marked ``ray``, one local multi-node Ray cluster per session."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "deploy", HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from helpers import live_set_deployment, plan_doc, synthetic_inputs, write_json  # noqa: E402
from onnx_builders import tiny_branchy_model  # noqa: E402

from finplan.contract import model_hash  # noqa: E402

LAYOUTS = {
    "three-dynamic": (["device", "edge", "cloud"], True),
    "three-static": (["device", "edge", "cloud"], False),
    "one-static": (["device"] * 3, False),
    "revisit-dynamic": (["device", "edge", "device"], True),
}


@pytest.fixture(scope="session")
def ray_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="session")
def tiny_inputs():
    x, y = synthetic_inputs(64, seed=3)
    return x, y


@pytest.fixture(scope="session")
def ray_deployments(ray_workdir, tiny_inputs) -> dict[str, Path]:
    """layout -> deployment folder; exit1's threshold at the median confidence (about half exit early)."""
    import onnxruntime as ort

    from finplan.deploy.emit import emit
    from finplan.deploy.policy import max_softmax

    model = tiny_branchy_model()
    model_path = ray_workdir / "tiny.onnx"
    onnx.save(model, model_path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (exit1,) = session.run(["exit1"], {"x": tiny_inputs[0]})
    threshold = float(np.median(max_softmax(exit1)[0]))
    out = {}
    for name, (placement, dynamic) in LAYOUTS.items():
        thresholds = {"exit1": threshold} if dynamic else {}
        plan = write_json(ray_workdir / f"{name}.plan.json",
                          plan_doc(placement, model_hash=model_hash(model), thresholds=thresholds))
        folder = ray_workdir / f"{name}.deploy"
        emit(plan, model_path, folder)
        out[name] = folder
    return out


@pytest.fixture(scope="session")
def live_set_deployments(ray_workdir) -> dict[str, dict]:
    """Deployments whose cuts carry several tensors: the two-input text model (int64 ids + mask read
    by every layer) and the skip from block 1 to block 3, each on device -> edge -> cloud."""
    out = {}
    for name in ("text", "skip"):
        work = ray_workdir / f"live-{name}"
        work.mkdir()
        out[name] = live_set_deployment(work, name)
    return out
