"""A node's parts against its manifest: present, with the recorded sha256, declaring the
manifest's tensors (names, shapes, dtypes). ``NodeRuntime`` runs these checks at load (on its
onnxruntime sessions); ``check_parts_statically`` runs them without onnxruntime, to explain a
refused manifest; ``check_parts`` hashes only, for engines that load the parts elsewhere."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from finplan.deploy.manifest import Manifest, TensorSpec, sha256_bytes
from finplan.errors import FinplanInputError

# onnxruntime's type names -> numpy's (the manifest's dtypes are numpy names)
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _show_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else (f'"{d}"' if isinstance(d, str) else str(d)) for d in shape) + "]"


def check_declared(spec: TensorSpec, shape, dtype: str, *, part: str, file, field: str) -> None:
    """Refuse a manifest tensor spec that the part does not declare: a different dtype, rank, or
    size on an axis the part fixes. The manifest must be at least as specific as the part (a
    runtime checks inputs against the manifest only, so a looser spec would let onnxruntime fail
    deep inside a run); symbolic axes of the part (the batch axis) accept any spec.

    ``shape``: the part's dimensions (int, a symbolic name, or None); ``dtype``: a numpy name, or
    the part's own type name when numpy has none."""
    if spec.np_dtype.name != dtype:
        raise FinplanInputError(f"is {spec.dtype!r}, but part {part} declares {spec.name!r} as {dtype}; "
                                "re-run finplan emit", file=file, field=f"{field}.dtype")
    shape = list(shape)
    if len(shape) != len(spec.shape) or any(isinstance(d, int) and d != m for d, m in zip(shape, spec.shape)):
        raise FinplanInputError(f"is {_show_shape(spec.shape)}, but part {part} declares {spec.name!r} with shape "
                                f"{_show_shape(shape)}; re-run finplan emit", file=file, field=f"{field}.shape")


def check_parts_statically(manifest: Manifest, folder: Path) -> None:
    """The load-time checks of ``NodeRuntime`` without onnxruntime and without running anything:
    every part exists, has the listed sha256, and declares the manifest's tensors (names,
    shapes, dtypes). For explaining what is wrong with a manifest before refusing it."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    def declared(value_info) -> tuple[list, str]:
        tensor_type = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
        try:
            dtype = np.dtype(tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        return dims, dtype

    for i, stage in enumerate(manifest.stages):
        data = part_bytes(manifest, folder, i)
        try:
            model = onnx.load_from_string(data)
        except Exception:  # protobuf's DecodeError and friends: not an ONNX part
            raise FinplanInputError("is not an ONNX model", file=folder / stage.part) from None
        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        inputs = {v.name: v for v in graph.input if v.name not in initializers}
        outputs = {v.name: v for v in graph.output}
        check_stage_tensors(manifest, i, {k: declared(v) for k, v in inputs.items()},
                             {k: declared(v) for k, v in outputs.items()})


def check_parts(manifest: Manifest, folder: Path) -> None:
    """Every part of the node is there with the sha256 its manifest records (what NodeRuntime
    checks when it loads them), for engines that load parts elsewhere (Ray replicas): a swapped
    part is then named here, at once, not by a replica failing to start."""
    for index in range(len(manifest.stages)):
        part_bytes(manifest, Path(folder), index)


def part_bytes(manifest: Manifest, folder: Path, index: int) -> bytes:
    stage = manifest.stages[index]
    path = folder / stage.part
    if not path.is_file():
        raise FinplanInputError(f"part {str(path)!r} is missing", file=manifest.path, field=f"stages[{index}].part")
    data = path.read_bytes()  # hash the very bytes the session is built from
    if sha256_bytes(data) != stage.sha256:
        raise FinplanInputError(f"part {str(path)!r} was altered: its sha256 differs from the manifest's",
                                file=manifest.path, field=f"stages[{index}].sha256")
    return data


def check_stage_tensors(manifest: Manifest, index: int, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    """``inputs``/``outputs``: the part's tensors, name -> (shape, numpy dtype name), in order."""
    stage = manifest.stages[index]
    where = f"stages[{index}]"
    if list(inputs) != [t.name for t in stage.inputs] or not {t.name for t in stage.outputs} <= set(outputs):
        raise FinplanInputError(f"the part's inputs {list(inputs)} / outputs {sorted(outputs)} differ from the manifest's",
                                file=manifest.path, field=where)
    for kind, specs, declared in (("inputs", stage.inputs, inputs), ("outputs", stage.outputs, outputs)):
        for j, spec in enumerate(specs):
            shape, dtype = declared[spec.name]
            check_declared(spec, shape, dtype, part=stage.part, file=manifest.path, field=f"{where}.{kind}[{j}]")


def session_tensors(args) -> dict[str, tuple]:
    return {a.name: (list(a.shape), ORT_DTYPES.get(a.type, a.type)) for a in args}
