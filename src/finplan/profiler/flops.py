"""Our own FLOP counter over a shape-inferred ONNX graph, one sample (batch 1).

Why our own: the planner's compute cost is FLOPs, and the number must mean the same thing
for every model and every part, with the convention written into the profile. Ops we do not
know are listed (``unknown_ops``), never counted as a silent zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from finplan.onnx_graph import infer_shapes, tensor_shape

FLOPS_CONVENTION = (
    "finplan-flops/1: per sample (batch 1); a multiply-add counts as 2 FLOPs (Conv, ConvTranspose, Gemm, MatMul); "
    "bias add, activations, element-wise and comparison ops count 1 FLOP per output element; "
    "Max/AveragePool count 1 per window element per output; global pools 1 per input element; "
    "Softmax/LogSoftmax 3 per element; BatchNormalization 2 per element; Layer/Instance/GroupNormalization 7 per element; "
    "LRN 2*size+3 per element; reductions 1 per input element; data movement (Reshape, Transpose, Concat, Gather, ...) 0; "
    "ops not listed are reported in unknown_ops and add nothing"
)

# Ops that move or reinterpret data without arithmetic: known to cost 0 FLOPs.
ZERO_FLOP_OPS = frozenset({
    "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike", "Pad", "Expand",
    "Tile", "Dropout", "DepthToSpace", "SpaceToDepth", "ScatterND", "ScatterElements", "Range", "NonZero",
})
# One FLOP per output element.
ELEMENTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Clip",
    "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos", "Mish", "ThresholdedRelu", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Not", "Where", "IsNaN", "IsInf", "Resize",
    "Upsample", "QuantizeLinear", "DequantizeLinear", "BitShift",
})
VARIADIC_OPS = frozenset({"Max", "Min", "Sum", "Mean"})  # (inputs - 1) per output element, +1 for Mean
REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                        "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin"})


@dataclass
class FlopCount:
    flops: int = 0
    unknown_ops: list[str] = field(default_factory=list)  # sorted op types (with reason when shapes were missing)
    per_node: list[tuple[str, str, int]] = field(default_factory=list)  # (node name, op type, FLOPs)


def _elements(shape) -> int | None:
    if shape is None or any(not isinstance(d, int) or d < 0 for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def with_batch_one(part: onnx.ModelProto) -> onnx.ModelProto:
    """A shape-inferred copy of ``part`` whose graph inputs have batch 1 (so every shape is static)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(part)
    initializers = {init.name for init in copy.graph.initializer}
    for value in list(copy.graph.input) + list(copy.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    del copy.graph.value_info[:]
    return infer_shapes(copy)


def count_flops(model: onnx.ModelProto) -> FlopCount:
    """FLOPs of one pass of ``model`` at batch 1; ``model`` need not be shape-inferred."""
    inferred = with_batch_one(model)
    shapes: dict[str, list] = {}

    def shape(name: str):
        if name not in shapes:
            shapes[name] = tensor_shape(inferred, name)
        found = shapes[name]
        return None if not found or any(not isinstance(d, int) for d in found) else found

    result = FlopCount()
    unknown: set[str] = set()
    for node in inferred.graph.node:
        flops = _node_flops(node, shape)
        if flops is None:
            unknown.add(node.op_type if node.op_type not in _KNOWN else f"{node.op_type} (shape unknown)")
            flops = 0
        result.per_node.append((node.name or node.output[0], node.op_type, int(flops)))
        result.flops += int(flops)
    result.unknown_ops = sorted(unknown)
    return result


def _node_flops(node: onnx.NodeProto, shape) -> int | None:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None
    if op in ZERO_FLOP_OPS:
        return 0
    out = shape(node.output[0]) if node.output else None
    out_n = _elements(out)
    if op in ELEMENTWISE_OPS:
        return out_n
    if op in VARIADIC_OPS:
        if out_n is None:
            return None
        inputs = len([i for i in node.input if i])
        return out_n * max(inputs - 1, 0) + (out_n if op == "Mean" else 0)
    if op == "Conv":
        weight = shape(node.input[1])
        if out is None or weight is None:
            return None
        per_output = int(np.prod(weight[1:], dtype=np.int64))  # (C_in / group) * kernel elements
        bias = out_n if len(node.input) > 2 and node.input[2] else 0
        return 2 * out_n * per_output + bias
    if op == "ConvTranspose":
        x, weight = shape(node.input[0]), shape(node.input[1])
        if x is None or weight is None or out is None:
            return None
        # Each input element scatters into (C_out / group) * kernel outputs: weight is [C_in, C_out/group, k...].
        per_input = int(np.prod(weight[1:], dtype=np.int64))
        bias = out_n if len(node.input) > 2 and node.input[2] else 0
        return 2 * _elements(x) * per_input + bias
    if op == "Gemm":
        a = shape(node.input[0])
        if a is None or out is None or len(a) != 2:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        flops = 2 * out_n * k
        if _attr(node, "alpha", 1.0) != 1.0:
            flops += out_n
        if len(node.input) > 2 and node.input[2]:
            flops += out_n * (2 if _attr(node, "beta", 1.0) != 1.0 else 1)
        return flops
    if op == "MatMul":
        a = shape(node.input[0])
        if a is None or out is None:
            return None
        return 2 * out_n * a[-1]
    if op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = _attr(node, "kernel_shape")
        if out_n is None or not kernel:
            return None
        return out_n * int(np.prod(kernel)) * (2 if op == "LpPool" else 1)
    if op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        x = shape(node.input[0])
        return None if x is None else _elements(x)
    if op in ("Softmax", "LogSoftmax"):
        return None if out_n is None else 3 * out_n
    if op == "BatchNormalization":
        return None if out_n is None else 2 * out_n
    if op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
        return None if out_n is None else 7 * out_n
    if op == "LRN":
        size = int(_attr(node, "size", 1))
        return None if out_n is None else (2 * size + 3) * out_n
    if op in REDUCE_OPS:
        x = shape(node.input[0])
        return None if x is None else _elements(x)
    return None


_KNOWN = (ZERO_FLOP_OPS | ELEMENTWISE_OPS | VARIADIC_OPS | REDUCE_OPS
          | {"Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
             "GlobalMaxPool", "GlobalLpPool", "Softmax", "LogSoftmax", "BatchNormalization", "LayerNormalization",
             "InstanceNormalization", "GroupNormalization", "LRN"})


def activation_bytes(model: onnx.ModelProto) -> int | None:
    """Peak bytes of live activations for one sample when nodes run in graph order.

    A tensor is live from the node that makes it (or from the start, for graph inputs) until
    its last consumer has run; graph outputs stay live to the end. Weights are not counted
    (they are ``params_bytes``). None when a shape is unknown.
    """
    inferred = with_batch_one(model)
    infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    initializers = {init.name for init in inferred.graph.initializer}
    nodes = list(inferred.graph.node)
    last_use: dict[str, int] = {}
    for position, node in enumerate(nodes):
        for name in node.input:
            if name and name not in initializers:
                last_use[name] = position
    outputs = {o.name for o in inferred.graph.output}
    for name in outputs:
        last_use[name] = len(nodes)

    def size(name: str) -> int | None:
        info = infos.get(name)
        if info is None or not info.type.HasField("tensor_type"):
            return None
        count = _elements(tensor_shape(inferred, name))
        if count is None:
            return None
        return count * np.dtype(helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)).itemsize

    live: dict[str, int] = {}
    for value in inferred.graph.input:
        if value.name not in initializers:
            s = size(value.name)
            if s is None:
                return None
            live[value.name] = s
    peak = sum(live.values())
    for position, node in enumerate(nodes):
        for name in node.output:
            if not name or name not in last_use:
                continue  # unused outputs are freed at once
            s = size(name)
            if s is None:
                if node.op_type in ("Shape", "Constant", "ConstantOfShape"):
                    s = 0  # small metadata tensors
                else:
                    return None
            live[name] = s
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= position and name not in outputs:
                del live[name]
    return int(peak)
