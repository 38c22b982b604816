"""Session-scoped fixtures: the tiny branchy model, synthetic inputs, and deployments emitted
from hand-written plans that put its 3 blocks on 1, 2 and 3 nodes, with and without early exits."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from helpers import LAYOUTS, plan_doc, synthetic_inputs, write_json  # noqa: E402
from onnx_builders import tiny_branchy_model  # noqa: E402

from finplan.contract import model_hash  # noqa: E402
from finplan.deploy.emit import emit  # noqa: E402

@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def tiny(workdir):
    model = tiny_branchy_model()
    path = workdir / "tiny.onnx"
    onnx.save(model, path)
    return path, model_hash(model)


@pytest.fixture(scope="session")
def inputs(workdir):
    x, y = synthetic_inputs(96, seed=1)
    path = workdir / "inputs.npz"
    np.savez(path, x=x, y=y)
    return x, y, path


@pytest.fixture(scope="session")
def whole_model_outputs(tiny, inputs):
    """exit name -> logits of the whole tiny model on the synthetic inputs."""
    session = ort.InferenceSession(str(tiny[0]), providers=["CPUExecutionProvider"])
    exit1, exit2 = session.run(["exit1", "exit2"], {"x": inputs[0]})
    return {"exit1": exit1, "exit2": exit2}


@pytest.fixture(scope="session")
def threshold(whole_model_outputs) -> float:
    """exit1's threshold at the median confidence, so that about half of the inputs exit early."""
    from finplan.deploy.policy import max_softmax

    confidence, _ = max_softmax(whole_model_outputs["exit1"])
    return float(np.median(confidence))


@pytest.fixture(scope="session")
def deployments(workdir, tiny, threshold):
    """layout name -> (deployment folder, plan path, thresholds)."""
    out = {}
    for name, (placement, dynamic) in LAYOUTS.items():
        thresholds = {"exit1": threshold} if dynamic else {}
        plan = write_json(workdir / f"{name}.plan.json", plan_doc(placement, model_hash=tiny[1], thresholds=thresholds))
        folder = workdir / f"{name}.deploy"
        emit(plan, tiny[0], folder)
        out[name] = (folder, plan, thresholds)
    return out


@pytest.fixture(scope="session")
def plan_factory(workdir, tiny):
    counter = iter(range(10_000))

    def make(placement=("device", "edge", "cloud"), **kwargs):
        kwargs.setdefault("model_hash", tiny[1])
        return write_json(workdir / f"plan-{next(counter)}.json", plan_doc(list(placement), **kwargs))

    return make



@pytest.fixture()
def copy_of(deployments, tmp_path):
    """A private copy of an emitted deployment (tests edit its files)."""
    def make(layout="three-dynamic"):
        target = tmp_path / f"{layout}.copy"
        shutil.copytree(deployments[layout][0], target)
        return target

    return make
