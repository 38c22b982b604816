"""Export a BranchyNet to ONNX with its finplan contract, and prove the export computes what torch does."""
from __future__ import annotations

import contextlib
import inspect
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


def to_onnx(model, check_inputs, *, opset: int = DEFAULT_OPSET,
            max_abs_diff: float = MAX_ABS_DIFF) -> tuple[onnx.ModelProto, float]:
    """Export ``model`` (a BranchyNet or AttachedExits; dynamo exporter, dynamic batch axis), write
    the contract, strip node metadata, check it, and compare onnxruntime with torch on ``check_inputs``.

    ``check_inputs``: an array (a single-input model) or a dict of arrays named after the model's
    inputs. Integer inputs keep their dtype (int64 token ids stay int64); float data is brought to
    the input's float dtype; any other dtype mismatch is refused.

    Returns the model and the max abs difference. Raises ExportMismatchError above
    ``max_abs_diff`` and FinplanInputError when the check inputs or the contract do not fit.
    """
    if opset < 18:
        raise ValueError("finplan exports with opset >= 18")
    check = check_feeds(model, check_inputs)
    model.eval()
    # Trace with a batch of 2: a batch of 1 invites the exporter to specialise the batch axis.
    example = tuple(torch.from_numpy(np.repeat(array[:1], 2, axis=0)) for array in check.values())
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in example)
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(model.forward).parameters.values()):
        dynamic = (dynamic,)  # forward(*inputs): torch.export sees one argument, the tuple
    with _quiet_exporter():
        program = torch.onnx.export(
            model, example, dynamo=True, opset_version=opset, verbose=False,
            input_names=list(model.input_names), output_names=list(model.output_names),
            dynamic_shapes=dynamic, external_data=False,
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
                                  f"{len(next(iter(check.values())))} inputs; expected at most {max_abs_diff:g}",
                                  field="export")
    return proto, difference


def check_feeds(model, check_inputs) -> dict[str, np.ndarray]:
    """``check_inputs`` as {input name: at most CHECK_SAMPLES rows}, checked against the model's inputs."""
    specs = model.inputs
    if not isinstance(check_inputs, dict):
        if len(specs) != 1:
            raise FinplanInputError(f"the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
                                    "expected a dict of arrays named after them", field="check inputs")
        check_inputs = {specs[0].name: check_inputs}
    names = [s.name for s in specs]
    if sorted(check_inputs) != sorted(names):
        raise FinplanInputError(f"check inputs are named {', '.join(sorted(check_inputs))}; the model's inputs are "
                                f"{', '.join(names)}", field="check inputs")
    feeds = {}
    counts = set()
    for spec in specs:
        array = np.asarray(check_inputs[spec.name])[:CHECK_SAMPLES]
        target = np.dtype(spec.dtype)
        if array.dtype != target and not (array.dtype.kind == "f" and target.kind == "f"):
            raise FinplanInputError(f"{spec.name} has dtype {array.dtype}; the model input needs {target}",
                                    field="check inputs")
        if array.ndim < 1 or tuple(array.shape[1:]) != tuple(spec.shape) or len(array) == 0:
            raise FinplanInputError(f"{spec.name} has shape {'x'.join(map(str, array.shape))}; the model input "
                                    f"needs [N]x{'x'.join(map(str, spec.shape))}", field="check inputs")
        feeds[spec.name] = np.ascontiguousarray(array, dtype=target)
        counts.add(len(array))
    if len(counts) != 1:
        raise FinplanInputError(f"check inputs hold different sample counts ({', '.join(map(str, sorted(counts)))}); "
                                "expected the same for every input", field="check inputs")
    return feeds


def export_onnx(model, path: str | os.PathLike, check_inputs, *,
                opset: int = DEFAULT_OPSET, max_abs_diff: float = MAX_ABS_DIFF) -> ExportReport:
    """``to_onnx`` then an atomic write to ``path`` (nothing is written when any check fails)."""
    proto, difference = to_onnx(model, check_inputs, opset=opset, max_abs_diff=max_abs_diff)
    data = proto.SerializeToString()
    written = atomic_write_bytes(path, data)
    samples = len(next(iter(check_feeds(model, check_inputs).values())))
    return ExportReport(path=written, contract=model.contract(), opset=opset, size_bytes=len(data),
                        model_hash=model_hash(proto), max_abs_diff=difference, max_abs_diff_limit=max_abs_diff,
                        check_samples=samples)


def max_difference(proto: onnx.ModelProto, model, inputs) -> float:
    """Largest |onnxruntime - torch| over all outputs for ``inputs`` (an array or a dict of arrays)."""
    import onnxruntime as ort

    feeds = check_feeds(model, inputs) if not isinstance(inputs, dict) else inputs
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(model.output_names), feeds)
    with torch.no_grad():
        torch_outputs = [t.numpy() for t in model(*(torch.from_numpy(feeds[n]) for n in model.input_names))]
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
