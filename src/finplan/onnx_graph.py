"""An ONNX graph's tensors, and a part cut out of it between named tensors, with its static sizes.

Small functions over ``onnx.ModelProto``, knowing nothing of branchy contracts: which tensors
depend on the inputs (``GraphIndex``), a standalone part computing some tensors from others
(``extract_part``), shapes, dtypes and bytes. ``finplan.onnx_parts`` lays a contract's blocks and
exits on a graph with them; ``finplan.cuts`` lists a plain graph's candidate cuts.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, shape_inference

BATCH_DIM = "batch"
DATA, SHAPE = "data", "shape"  # tensor kinds, see GraphIndex
SHAPE_OPS = frozenset({"Shape", "Size"})


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
        # kind of every tensor, one sweep in graph order (ONNX requires topological order):
        # DATA depends on the values of a graph input; SHAPE only on their shapes (Shape/Size and what
        # is computed from those alone, e.g. a reshape target or position ids): a part recomputes a
        # SHAPE tensor from what it reads, so one never crosses a cut (it has no batch axis to split);
        # static tensors (weights, constants, what is folded from them) are absent from ``kind``.
        kind = {name: DATA for name in self.graph_inputs}
        for node in graph.node:
            kinds = {kind.get(name) for name in node.input if name}
            if DATA in kinds:
                out_kind = SHAPE if node.op_type in SHAPE_OPS else DATA
            elif SHAPE in kinds:
                out_kind = SHAPE
            else:
                continue
            kind.update((name, out_kind) for name in node.output if name)
        self.kind = kind
        self.dynamic = set(kind)
        # deterministic order of tensors: graph inputs first (graph order), then order of production
        self.order = {name: (0, i, 0) for i, name in enumerate(self.graph_inputs)}
        for position, node in enumerate(graph.node):
            for slot, name in enumerate(node.output):
                if name:
                    self.order[name] = (1, position, slot)

    def is_data(self, name: str) -> bool:
        return self.kind.get(name) == DATA

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


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed tensor of a (shape-inferred) model by name: value_info, graph inputs and outputs."""
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
    infos = value_infos(model)
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
    info = value_infos(model).get(name)
    if info is None:
        if name in {i.name for i in model.graph.initializer}:
            init = next(i for i in model.graph.initializer if i.name == name)
            return list(init.dims)
        return []
    return value_info_shape(info)


def value_info_shape(info: onnx.ValueInfoProto) -> list[int | str | None]:
    """The dims of a ValueInfoProto: ints, symbolic names, or None when unknown."""
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
    info = value_infos(model)[name]
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
