"""Cut an ONNX graph into parts between named tensors, and measure the static size of a part.

Small functions over ``onnx.ModelProto``; used to validate the contract, to profile each
block and exit head on its own, and to emit the per-node deployment parts.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

BATCH_DIM = "batch"


class PartError(ValueError):
    """A part cannot be cut out: ``tensor`` is needed but lies before the part's inputs."""

    def __init__(self, tensor: str):
        super().__init__(f"the part needs tensor {tensor!r}, which is computed before its inputs")
        self.tensor = tensor


class GraphIndex:
    """Producer/consumer maps of one graph, and which tensors depend on the model input.

    Tensors that do not depend on any graph input (initializers, Constant nodes and what is
    computed from them only) are "static": a part may recompute them freely, so they never
    count as crossing a cut.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        graph = model.graph
        self.initializers = {init.name: init for init in graph.initializer}
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.producer: dict[str, int] = {}
        for position, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self.producer[name] = position
        dynamic = set(self.graph_inputs)
        for node in graph.node:  # ONNX requires topological order
            if any(name in dynamic for name in node.input if name):
                dynamic.update(name for name in node.output if name)
        self.dynamic = dynamic

    def exists(self, name: str) -> bool:
        return name in self.producer or name in self.graph_inputs or name in self.initializers

    def ancestors(self, name: str) -> set[str]:
        """Every dynamic tensor ``name`` is computed from (including itself)."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.dynamic:
                continue
            seen.add(current)
            if current in self.producer:
                stack.extend(i for i in self.model.graph.node[self.producer[current]].input if i)
        return seen

    def depends_on(self, name: str, other: str) -> bool:
        return other in self.ancestors(name)

    def part_nodes(self, inputs: list[str], outputs: list[str]) -> list[int]:
        """Positions (in graph order) of the nodes that compute ``outputs`` from ``inputs``.

        Raises PartError naming the first dynamic tensor that is needed but is neither one
        of ``inputs`` nor computable from them.
        """
        stop = set(inputs)
        reachable: set[int] = set()
        stack = list(outputs)
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name in stop or name in self.initializers or not name:
                continue
            seen.add(name)
            if name not in self.producer:
                raise PartError(name)
            position = self.producer[name]
            if position not in reachable:
                reachable.add(position)
                stack.extend(self.model.graph.node[position].input)
        return sorted(reachable)

    def crossing_tensor(self, inputs: list[str], outputs: list[str]) -> str | None:
        """The tensor that makes a cut invalid, or None when the part separates cleanly.

        A cut is invalid when the part needs a dynamic tensor that is computed before its
        inputs (a skip connection across the boundary) or a graph input it is not given.
        """
        stop = set(inputs)
        upstream = set().union(*(self.ancestors(i) for i in inputs)) - stop if inputs else set()
        stack, seen = list(outputs), set()
        while stack:
            name = stack.pop()
            if not name or name in seen or name in stop or name not in self.dynamic:
                continue
            seen.add(name)
            if name in upstream or name not in self.producer:
                return name
            stack.extend(self.model.graph.node[self.producer[name]].input)
        return None


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred copy (static shapes for every intermediate tensor where ONNX can tell)."""
    return shape_inference.infer_shapes(model, data_prop=True)


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({vi.name: vi for vi in model.graph.input})
    infos.update({vi.name: vi for vi in model.graph.output})
    return infos


def _with_dynamic_batch(info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    dims = copy.type.tensor_type.shape.dim
    if len(dims):
        dims[0].Clear()
        dims[0].dim_param = BATCH_DIM
    return copy


def extract_part(model: onnx.ModelProto, inputs: list[str], outputs: list[str], *, name: str,
                 index: GraphIndex | None = None) -> onnx.ModelProto:
    """A standalone model computing ``outputs`` from ``inputs``, with a dynamic batch axis.

    ``model`` should be shape-inferred (see ``infer_shapes``) so that every boundary tensor
    has a type. Raises PartError when the cut is invalid.
    """
    index = index or GraphIndex(model)
    positions = index.part_nodes(inputs, outputs)
    nodes = [model.graph.node[p] for p in positions]
    used = {name for node in nodes for name in node.input if name}
    infos = _value_infos(model)
    missing = [t for t in list(inputs) + list(outputs) if t not in infos]
    if missing:
        raise ValueError(f"no type known for tensor(s) {', '.join(missing)}; run infer_shapes first")
    graph = helper.make_graph(
        nodes, name,
        inputs=[_with_dynamic_batch(infos[t]) for t in inputs],
        outputs=[_with_dynamic_batch(infos[t]) for t in outputs],
        initializer=[init for init in model.graph.initializer if init.name in used],
    )
    part = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="finplan")
    part.ir_version = model.ir_version
    referenced = {(n.domain, n.op_type) for n in nodes}
    part.functions.extend(f for f in model.functions if (f.domain, f.name) in referenced)
    return part


# --------------------------------------------------------------------------- static sizes

def tensor_shape(model: onnx.ModelProto, name: str) -> list[int | str | None]:
    """Shape of a tensor in a shape-inferred model: ints, symbolic names, or None when unknown."""
    info = _value_infos(model).get(name)
    if info is None:
        if name in {i.name for i in model.graph.initializer}:
            init = next(i for i in model.graph.initializer if i.name == name)
            return list(init.dims)
        return []
    dims = []
    for dim in info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def tensor_dtype(model: onnx.ModelProto, name: str) -> np.dtype:
    info = _value_infos(model)[name]
    return np.dtype(helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type))


def bytes_per_sample(model: onnx.ModelProto, name: str) -> int:
    """Size of one sample of a tensor (the batch axis excluded), in bytes."""
    shape = tensor_shape(model, name)[1:]
    if any(not isinstance(d, int) for d in shape):
        raise ValueError(f"tensor {name!r} has no static shape beyond the batch axis: {shape}")
    return int(np.prod(shape, dtype=np.int64)) * tensor_dtype(model, name).itemsize


def params_bytes(part: onnx.ModelProto) -> int:
    """Bytes of the weights a part holds (initializers and Constant node tensors)."""
    total = sum(_initializer_bytes(init) for init in part.graph.initializer)
    for node in part.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    total += _initializer_bytes(attr.t)
    return total


def _initializer_bytes(init: onnx.TensorProto) -> int:
    count = int(np.prod(init.dims, dtype=np.int64)) if len(init.dims) else 1
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize


# --------------------------------------------------------------------------- branchy split

from dataclasses import dataclass, field  # noqa: E402  (kept next to its only users)

from finplan.contract import Contract  # noqa: E402


@dataclass
class Part:
    """One block (boundary k-1 -> boundary k) or one exit head (block output -> exit output)."""

    kind: str  # "block" or "exit"
    name: str
    inputs: list[str]
    outputs: list[str]
    model: onnx.ModelProto = field(repr=False)
    after: str | None = None  # exits: the block they follow


def split_branchy(model: onnx.ModelProto, contract: Contract) -> tuple[list[Part], list[Part]]:
    """Cut a validated branchy model into standalone block parts and exit-head parts.

    Returns (blocks in order, exits in contract order); each part has a dynamic batch axis.
    """
    inferred = infer_shapes(model)
    index = GraphIndex(inferred)
    blocks = []
    for i, block in enumerate(contract.blocks):
        inputs = [contract.boundary_before(i)]
        blocks.append(Part("block", block.name, inputs, [block.output],
                           extract_part(inferred, inputs, [block.output], name=block.name, index=index)))
    exits = []
    for exit_ in contract.exits:
        boundary = contract.blocks[contract.block_index(exit_.after)].output
        exits.append(Part("exit", exit_.name, [boundary], [exit_.output],
                          extract_part(inferred, [boundary], [exit_.output], name=exit_.name, index=index),
                          after=exit_.after))
    return blocks, exits


def describe_branchy(model: onnx.ModelProto, contract: Contract) -> dict:
    """Shapes and sizes of every block and exit: what ``finplan inspect`` shows."""
    inferred = infer_shapes(model)
    blocks, exits = split_branchy(model, contract)

    def row(part: Part) -> dict:
        out = part.outputs[0]
        return {
            "name": part.name,
            **({"after": part.after} if part.after else {}),
            "input": part.inputs[0],
            "input_shape": tensor_shape(inferred, part.inputs[0]),
            "output": out,
            "output_shape": tensor_shape(inferred, out),
            "dtype": str(tensor_dtype(inferred, out)),
            "params_bytes": params_bytes(part.model),
            "output_bytes": bytes_per_sample(inferred, out),
            "nodes": len(part.model.graph.node),
        }

    return {
        "input": contract.input,
        "input_shape": tensor_shape(inferred, contract.input),
        "input_bytes": bytes_per_sample(inferred, contract.input),
        "blocks": [row(p) for p in blocks],
        "exits": [row(p) for p in exits],
    }
