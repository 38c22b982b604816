"""Export a BranchyNet to ONNX with its finplan contract, and prove the export computes what torch does."""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from finplan.contract import Contract, model_hash, strip_node_metadata, validate_contract, write_contract
from finplan.errors import FinplanInputError
from finplan.exits.branchy import INPUT_NAME, BranchyNet
from finplan.fileio import atomic_write_bytes

DEFAULT_OPSET = 18
MAX_ABS_DIFF = 1e-4
CHECK_SAMPLES = 64  # at most this many real inputs are compared between torch and onnxruntime


class ExportMismatchError(FinplanInputError):
    """The exported ONNX does not compute what the torch model computes (beyond the tolerance)."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    contract: Contract
    opset: int
    size_bytes: int
    model_hash: str
    max_abs_diff: float      # largest |onnxruntime - torch| over every output, on the check inputs
    max_abs_diff_limit: float
    check_samples: int


def to_onnx(model: BranchyNet, check_inputs: np.ndarray, *, opset: int = DEFAULT_OPSET,
            max_abs_diff: float = MAX_ABS_DIFF) -> tuple[onnx.ModelProto, float]:
    """Export ``model`` (dynamo exporter, dynamic batch axis), write the contract, strip node
    metadata, check it, and compare onnxruntime with torch on ``check_inputs``.

    Returns the model and the max abs difference. Raises ExportMismatchError above
    ``max_abs_diff`` and FinplanInputError when the contract does not validate.
    """
    if opset < 18:
        raise ValueError("finplan exports with opset >= 18")
    check = np.ascontiguousarray(check_inputs[:CHECK_SAMPLES], dtype=np.float32)
    if check.ndim < 1 or check.shape[1:] != model.input_shape or len(check) == 0:
        raise FinplanInputError(f"check inputs have shape {'x'.join(map(str, check.shape))}; the model input needs "
                                f"[N]x{'x'.join(map(str, model.input_shape))}", field="check inputs")
    model.eval()
    # Trace with a batch of 2: a batch of 1 invites the exporter to specialise the batch axis.
    example = torch.from_numpy(np.repeat(check[:1], 2, axis=0))
    with _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, verbose=False,
            input_names=[INPUT_NAME], output_names=list(model.output_names),
            dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
        )
    proto = program.model_proto
    strip_node_metadata(proto)
    _strip_value_metadata(proto)
    contract = model.contract()
    write_contract(proto, contract)
    onnx.checker.check_model(proto, full_check=True)
    validate_contract(proto, contract)
    difference = max_difference(proto, model, check)
    if not difference <= max_abs_diff:
        raise ExportMismatchError(f"the exported ONNX differs from torch by {difference:.3g} (max abs) on "
                                  f"{len(check)} inputs; expected at most {max_abs_diff:g}", field="export")
    return proto, difference


def export_onnx(model: BranchyNet, path: str | os.PathLike, check_inputs: np.ndarray, *,
                opset: int = DEFAULT_OPSET, max_abs_diff: float = MAX_ABS_DIFF) -> ExportReport:
    """``to_onnx`` then an atomic write to ``path`` (nothing is written when any check fails)."""
    proto, difference = to_onnx(model, check_inputs, opset=opset, max_abs_diff=max_abs_diff)
    data = proto.SerializeToString()
    written = atomic_write_bytes(path, data)
    return ExportReport(path=written, contract=model.contract(), opset=opset, size_bytes=len(data),
                        model_hash=model_hash(proto), max_abs_diff=difference, max_abs_diff_limit=max_abs_diff,
                        check_samples=min(len(check_inputs), CHECK_SAMPLES))


def max_difference(proto: onnx.ModelProto, model: BranchyNet, inputs: np.ndarray) -> float:
    """Largest |onnxruntime - torch| over all outputs for ``inputs``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(model.output_names), {INPUT_NAME: inputs})
    with torch.no_grad():
        torch_outputs = [t.numpy() for t in model(torch.from_numpy(inputs))]
    worst = 0.0
    for ours, theirs in zip(onnx_outputs, torch_outputs):
        if ours.shape != theirs.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(ours - theirs))) if ours.size else 0.0)
    return worst


def _strip_value_metadata(proto: onnx.ModelProto) -> None:
    """The exporter also annotates graph inputs/outputs/value_info; drop it with the node metadata."""
    for values in (proto.graph.input, proto.graph.output, proto.graph.value_info):
        for value in values:
            del value.metadata_props[:]
            value.doc_string = ""
    proto.graph.doc_string = ""


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs progress and warns about optional packages (torchvision); only cli/ prints."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        logger.setLevel(level)
