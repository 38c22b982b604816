"""Every candidate cut of an ONNX graph, with what would cross it: what ``finplan cuts`` lists.

A cut after node p (graph order, which ONNX requires to be topological) splits the graph into
what has run (nodes 0..p) and what has not. Its live set: every DATA tensor (see
``finplan.onnx_graph.GraphIndex``) produced up to p, the graph inputs included, that a node
after p still reads, directly or through a SHAPE computation that would be redone after the
cut, when that node depends on the cut or feeds something that does (an exit head of an earlier
block that the graph lists later runs before the cut). That is the live set
``finplan.onnx_parts.boundaries`` computes for a contract whose block ends at that tensor when
the graph lists the block's work before the tensor (exported models list nodes in the order the
forward ran them); ``finplan inspect`` shows the contract's own.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

import onnx

import numpy as np
from onnx import helper

from finplan.onnx_graph import DATA, SHAPE, GraphIndex, infer_shapes, value_info_shape, value_infos

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # torch.onnx (dynamo) records the module path of each node here


@dataclass(frozen=True)
class LiveTensor:
    name: str
    dtype: str
    shape: tuple
    bytes_per_sample: int | None  # None: no static size beyond the batch axis

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "bytes": self.bytes_per_sample}


@dataclass(frozen=True)
class Cut:
    """The cut right after ``tensor`` is produced (``position``: its node, in graph order)."""

    position: int
    tensor: str
    op: str
    node: str
    module: str  # the deepest module path the exporter recorded ("" at the root or when absent)
    ends: tuple[str, ...]  # module paths whose last node this is (a cut "after layer1" is where layer1 ends)
    shape: tuple
    live_set: tuple[LiveTensor, ...]

    @property
    def live_set_bytes(self) -> int | None:
        sizes = [t.bytes_per_sample for t in self.live_set]
        return None if any(s is None for s in sizes) else sum(sizes)

    @property
    def single(self) -> bool:
        """The natural cuts: one tensor crosses, the cut tensor itself."""
        return len(self.live_set) == 1 and self.live_set[0].name == self.tensor

    def to_dict(self) -> dict:
        return {"position": self.position, "tensor": self.tensor, "op": self.op, "node": self.node,
                "module": self.module, "ends": list(self.ends), "shape": list(self.shape),
                "live_set": [t.to_dict() for t in self.live_set], "live_set_bytes": self.live_set_bytes,
                "single": self.single}


def module_scopes(node: onnx.NodeProto) -> list[str]:
    """Module paths of a node from the exporter's ``name_scopes`` metadata, outermost first (root excluded)."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            if isinstance(scopes, (list, tuple)):
                # the last entry names the op itself (e.g. 'conv2d'); the first is the root module ('')
                return [str(s) for s in scopes[:-1] if s]
    return []


def candidate_cuts(model: onnx.ModelProto) -> list[Cut]:
    """Every candidate cut of ``model`` in execution order, with its live set.

    Parameters
    ----------
    model : onnx.ModelProto
        Any ONNX model (a plain export, or a branchy one; its contract is not read).

    Returns
    -------
    list of Cut
        One per DATA tensor a node produces, in graph order. Static tensors (weights,
        constants) and SHAPE tensors (computed from shapes only) are never cuts: a part
        recomputes them.

    Notes
    -----
    One reverse sweep gives each DATA tensor's last use (a SHAPE computation extends the use
    of what it reads to where its result is last used, since a later part redoes it); one
    forward sweep then keeps the set of tensors produced and still to be read. O(N + E + S)
    for N nodes, E edges and S the total size of the listed live sets; no ancestor walks.
    """
    inferred = infer_shapes(model)
    index = GraphIndex(inferred)
    nodes = inferred.graph.node
    kind = index.kind
    # reach[p]: the last position at which the work of node p is still needed after a cut before it
    last_use: dict[str, int] = {}
    for position in range(len(nodes) - 1, -1, -1):
        node = nodes[position]
        outputs = [o for o in node.output if o]
        reach = position
        if outputs and all(kind.get(o) == SHAPE for o in outputs):
            reach = max([position] + [last_use.get(o, -1) for o in outputs])
        for name in node.input:
            if name and kind.get(name) is not None:
                last_use[name] = max(last_use.get(name, -1), reach)
    typed = value_infos(inferred)  # once: a lookup per tensor, not a scan of the graph
    infos: dict[str, LiveTensor] = {}

    def shape_of(name: str) -> tuple:
        return tuple(value_info_shape(typed[name])) if name in typed else ()

    def info(name: str) -> LiveTensor:
        if name not in infos:
            shape = shape_of(name)
            value = typed.get(name)
            if value is None or not value.type.tensor_type.elem_type:
                infos[name] = LiveTensor(name, "unknown", shape, None)
                return infos[name]
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
            static = len(shape) >= 1 and all(isinstance(d, int) for d in shape[1:])
            size = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)) if static else None
            infos[name] = LiveTensor(name, dtype.name, shape, size)
        return infos[name]

    # desc[p]: bit mask of the nodes that depend on node p (p included), one reverse sweep
    consumers: dict[str, list[int]] = {}
    for position, node in enumerate(nodes):
        for name in node.input:
            if name and kind.get(name) is not None:
                consumers.setdefault(name, []).append(position)
    desc = [0] * len(nodes)
    for position in range(len(nodes) - 1, -1, -1):
        mask = 1 << position
        for name in nodes[position].output:
            for consumer in consumers.get(name, ()):
                mask |= desc[consumer]
        desc[position] = mask

    def needed_after(name: str, position: int) -> bool:
        # read after the cut by work that depends on the cut (or feeds work that does); an exit head
        # of an earlier block, listed later in the graph, does not count: it runs before the cut
        after = desc[position]
        return any((c > position or kind.get(nodes[c].output[0]) == SHAPE) and desc[c] & after
                   for c in consumers.get(name, ()))

    scopes = [module_scopes(node) for node in nodes]
    data_positions = [p for p, node in enumerate(nodes) if any(kind.get(o) == DATA for o in node.output if o)]
    next_scopes = {p: scopes[q] for p, q in zip(data_positions, data_positions[1:])}
    live = {name: None for name in index.graph_inputs if last_use.get(name, -1) >= 0}  # an ordered set
    cuts: list[Cut] = []
    for position, node in enumerate(nodes):
        for name in node.output:
            if name and kind.get(name) == DATA and last_use.get(name, -1) > position:
                live[name] = None
        for name in [n for n in live if last_use[n] <= position]:
            del live[name]
        produced = [o for o in node.output if o and kind.get(o) == DATA]
        if not produced:
            continue
        later = set(next_scopes.get(position, []))
        ends = tuple(s for s in reversed(scopes[position]) if s not in later)
        ordered = tuple(info(n) for n in sorted(live, key=index.order.__getitem__) if needed_after(n, position))
        for name in produced:
            cuts.append(Cut(position, name, node.op_type, node.name, scopes[position][-1] if scopes[position] else "",
                            ends, shape_of(name), ordered))
    return cuts
