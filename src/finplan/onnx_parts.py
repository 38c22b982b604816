"""A branchy model cut where its contract says: every block and exit head, and what crosses each cut.

``compute_layout`` assigns every node to a block or an exit head and finds the live set after
each block; ``boundaries`` says what a transfer after each block carries; ``split_branchy`` cuts
the standalone parts the profiler times and emit ships. The graph primitives it builds on
(``GraphIndex``, ``extract_part``, shapes and sizes) live in ``finplan.onnx_graph`` and are
importable from here too, so a caller needs one import for cutting a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from finplan.contract_types import Contract
from finplan.onnx_graph import (BATCH_DIM, DATA, SHAPE, GraphIndex, PartError, bytes_per_sample, extract_part,
                                infer_shapes, params_bytes, tensor_dtype, tensor_shape, value_info_shape)

__all__ = [  # the layout's own names, then the graph primitives re-exported for callers of one import
    "CutError", "Layout", "Part", "PartSpec", "TensorInfo", "batch_dims_of", "boundaries", "compute_layout",
    "describe_branchy", "layout_boundaries", "split_branchy", "tensor_info",
    "BATCH_DIM", "DATA", "SHAPE", "GraphIndex", "PartError", "bytes_per_sample", "extract_part", "infer_shapes",
    "params_bytes", "tensor_dtype", "tensor_shape", "value_info_shape",
]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor that crosses a cut: what a transfer carries of it."""

    name: str
    dtype: str  # numpy dtype name: "float32", "int64", "bool", ...
    shape: tuple  # full shape incl. the batch axis as ONNX knows it (ints, or str/None for symbolic)
    bytes_per_sample: int  # the batch axis excluded

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "bytes": self.bytes_per_sample}


class CutError(ValueError):
    """The contract does not cut the graph into parts; ``block``/``exit`` (0-based) say where."""

    def __init__(self, message: str, *, block: int | None = None, exit: int | None = None,
                 tensor: str | None = None):
        super().__init__(message)
        self.block, self.exit, self.tensor = block, exit, tensor


@dataclass
class PartSpec:
    """Which nodes make one part, and the tensors it reads and writes (before extraction)."""

    kind: str
    name: str
    inputs: list[str]
    outputs: list[str]
    positions: list[int]
    after: str | None = None


@dataclass
class Layout:
    """Every block and exit head of a contract, and the live set after every block.

    ``live[0]`` are the graph inputs, ``live[k]`` the tensor names crossing the cut after block
    k (1 <= k < B), ``live[B]`` is empty.
    """

    inferred: onnx.ModelProto
    index: GraphIndex
    blocks: list[PartSpec]
    exits: list[PartSpec]
    live: list[list[str]]


def _walk(index: GraphIndex, outputs: list[str], available) -> tuple[list[str], list[int]]:
    """The available DATA tensors a part computing ``outputs`` reads, and the nodes it runs.

    Walks back from ``outputs`` and stops at DATA tensors for which ``available(name)`` is
    true; everything else (static and SHAPE tensors included) is recomputed inside the part.
    """
    nodes = index.model.graph.node
    inputs: set[str] = set()
    positions: set[int] = set()
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if index.kind.get(name) == DATA and available(name):
            inputs.add(name)
            continue
        position = index.producer.get(name)
        if position is None:  # an initializer (a graph input is always available)
            continue
        if position not in positions:
            positions.add(position)
            stack.extend(nodes[position].input)
    return sorted(inputs, key=index.order.__getitem__), sorted(positions)


def compute_layout(inferred: onnx.ModelProto, contract: Contract) -> Layout:
    """Assign every node to a block or exit head, and compute the live set after every block.

    ``inferred`` is the shape-inferred model; the contract's names must exist in it (checked
    by ``finplan.contract.validate_contract`` before). Block k owns the nodes its output
    needs that no earlier block computed; it reads the graph inputs and earlier blocks'
    tensors it needs. An exit head after block k reads what is available after block k.
    A tensor read by a part after block j and produced by block i <= j (0: a graph input)
    is in the live set of every boundary i..j-1 (from 1).

    Parameters
    ----------
    inferred : onnx.ModelProto
        The model after ``infer_shapes``.
    contract : Contract
        Names checked to exist.

    Returns
    -------
    Layout

    Raises
    ------
    CutError
        A block output that does not depend on the graph inputs, is computed by an earlier
        block, or does not depend on the previous block's output (blocks out of order); an
        exit output that does not depend on its block's output.

    Notes
    -----
    Each part is one walk back from its outputs that stops at available tensors, so the work
    is O(nodes of the part + B * nodes) for the order checks; O(B * N) in all for N nodes.
    """
    index = GraphIndex(inferred)
    graph = inferred.graph
    origin: dict[str, int] = {name: 0 for name in contract.inputs}  # DATA tensor -> block computing it
    blocks: list[PartSpec] = []
    for k, block in enumerate(contract.blocks, start=1):
        out = block.output
        if index.kind.get(out) != DATA:
            raise CutError(f"block {block.name!r} (tensor {out!r}) does not depend on the graph inputs "
                           f"({', '.join(contract.inputs)}); a cut tensor must be computed from them",
                           block=k - 1, tensor=out)
        if out in origin:
            by = "is a graph input" if origin[out] == 0 else f"is computed by block {contract.blocks[origin[out] - 1].name!r}"
            raise CutError(f"block {block.name!r} (tensor {out!r}) {by}, before the previous cut: blocks must be "
                           "listed in execution order", block=k - 1, tensor=out)
        if k > 1 and not index.depends_on(out, contract.blocks[k - 2].output):
            previous = contract.blocks[k - 2].output
            raise CutError(f"block {block.name!r} (tensor {out!r}) does not depend on the previous block's output "
                           f"{previous!r}: blocks must be listed in execution order", block=k - 1, tensor=out)
        inputs, positions = _walk(index, [out], origin.__contains__)
        for position in positions:
            for name in graph.node[position].output:
                if name and index.kind.get(name) == DATA:
                    origin.setdefault(name, k)
        blocks.append(PartSpec("block", block.name, inputs, [out], positions))
    exits: list[PartSpec] = []
    exit_phase: list[int] = []
    for e, exit_ in enumerate(contract.exits):
        k = contract.block_index(exit_.after) + 1
        boundary = contract.blocks[k - 1].output
        if index.kind.get(exit_.output) != DATA or (
                exit_.output != boundary and not index.depends_on(exit_.output, boundary)):
            raise CutError(f"exit {exit_.name!r} (tensor {exit_.output!r}) does not depend on the output "
                           f"{boundary!r} of block {exit_.after!r}", exit=e, tensor=exit_.output)
        inputs, positions = _walk(index, [exit_.output], lambda name, k=k: origin.get(name, k + 1) <= k)
        exits.append(PartSpec("exit", exit_.name, inputs, [exit_.output], positions, after=exit_.after))
        exit_phase.append(k)
    count = len(contract.blocks)
    live_sets: list[set[str]] = [set() for _ in range(count + 1)]
    exit_reads: list[set[str]] = [set() for _ in range(count + 1)]
    # a part running in phase j (block j, or an exit head after block j) reads tensor t of origin o:
    # t crosses every boundary o..j-1 (boundary 0, the graph inputs, is fixed)
    for phase, part in [(k, b) for k, b in enumerate(blocks, start=1)] + list(zip(exit_phase, exits)):
        for name in part.inputs:
            for boundary in range(max(origin[name], 1), phase):
                live_sets[boundary].add(name)
        if part.kind == "exit":
            exit_reads[phase].update(part.inputs)
    for k, block in enumerate(blocks, start=1):
        extra = {name for name in live_sets[k] | exit_reads[k] if origin.get(name) == k} - {block.outputs[0]}
        block.outputs = [block.outputs[0], *sorted(extra, key=index.order.__getitem__)]
    live = [list(contract.inputs)] + [sorted(s, key=index.order.__getitem__) for s in live_sets[1:count]] + [[]]
    return Layout(inferred, index, blocks, exits, live)


def _shape_problem(shape: tuple, batch_dims: set | None) -> str | None:
    """Why a tensor of this shape cannot be sent sample by sample, or None when it can."""
    if not shape:
        return f"has no known shape with a batch axis (found {list(shape)})"
    if batch_dims is not None and shape[0] not in batch_dims:
        return (f"has shape {list(shape)}, whose first axis is not the batch axis "
                f"({', '.join(map(str, sorted(batch_dims, key=str)))}), so it cannot be split by sample")
    if any(not isinstance(d, int) for d in shape[1:]):
        return f"has shape {list(shape)}: no static size beyond the batch axis (export with fixed sizes but the batch)"
    return None


def tensor_info(inferred: onnx.ModelProto, name: str, *, batch_dims: set | None = None) -> TensorInfo:
    """Dtype, shape and bytes per sample of one tensor of a shape-inferred model.

    Raises CutError when the shape beyond the batch axis is not static, or (given
    ``batch_dims``, the graph inputs' first dimensions) when the first axis is not the batch.
    """
    shape = tuple(tensor_shape(inferred, name))
    problem = _shape_problem(shape, batch_dims)
    if problem:
        raise CutError(f"tensor {name!r} {problem}", tensor=name)
    dtype = tensor_dtype(inferred, name)
    return TensorInfo(name, dtype.name, shape, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def batch_dims_of(inferred: onnx.ModelProto, inputs) -> set:
    """The first dimensions of the graph inputs: what a tensor's batch axis looks like."""
    return {(tuple(tensor_shape(inferred, name)) or (None,))[0] for name in inputs}


def layout_boundaries(layout: Layout, contract: Contract) -> list[tuple[TensorInfo, ...]]:
    """TensorInfo of every live set of a computed layout (see ``boundaries``). Raises CutError."""
    dims = batch_dims_of(layout.inferred, contract.inputs)
    result = []
    for k, names in enumerate(layout.live):
        for name in names:
            problem = _shape_problem(tuple(tensor_shape(layout.inferred, name)), dims)
            if problem:
                where = "graph input" if k == 0 else \
                    f"the live set after block {contract.blocks[k - 1].name!r} holds tensor"
                raise CutError(f"{where} {name!r}, which {problem}", block=None if k == 0 else k - 1, tensor=name)
        result.append(tuple(tensor_info(layout.inferred, name) for name in names))
    return result


def boundaries(model: onnx.ModelProto, contract: Contract) -> list[tuple[TensorInfo, ...]]:
    """What crosses each cut of a validated branchy model.

    Parameters
    ----------
    model : onnx.ModelProto
        A model whose ``contract`` passed ``validate_contract``.
    contract : Contract

    Returns
    -------
    list of tuple of TensorInfo
        ``len(contract.blocks) + 1`` entries. Entry 0: the graph inputs. Entry k (1 <= k < B):
        the live set after block k, every graph input or tensor produced by blocks 1..k that
        block k+1.. or an exit head after block k+1.. still reads (a mask read by every layer,
        a skip from block 1 to block 3 in entries 1 and 2), graph inputs first, then in order
        of production. Entry B: empty (nothing follows the last block).

    Raises
    ------
    CutError
        A live tensor without a static size beyond its batch axis.

    Notes
    -----
    One shape inference plus ``compute_layout``: O(B * N) for N nodes.
    """
    inferred = infer_shapes(model)
    return layout_boundaries(compute_layout(inferred, contract), contract)


@dataclass
class Part:
    """One block (its live set in -> its new tensors out) or one exit head (-> its class scores)."""

    kind: str  # "block" or "exit"
    name: str
    inputs: list[str]
    outputs: list[str]  # outputs[0]: the contract tensor (block output or exit output)
    model: onnx.ModelProto = field(repr=False)
    after: str | None = None  # exits: the block they follow


def split_branchy(model: onnx.ModelProto, contract: Contract) -> tuple[list[Part], list[Part]]:
    """Cut a validated branchy model into standalone block parts and exit-head parts.

    Returns (blocks in order, exits in contract order); each part has a dynamic batch axis.
    Block k reads the tensors of boundary k-1 it needs and writes its contract output first,
    then (in order of production) the tensors it computes that cross boundary k or that an
    exit head after it reads. A tensor only passing through a block is not among its
    outputs: the runtime forwards it. An exit head reads what is available after its block.
    Single-input chains give ``inputs == [previous block output]``, ``outputs == [output]``.
    """
    layout = compute_layout(infer_shapes(model), contract)
    return _extract_parts(layout)


def _extract_parts(layout: Layout) -> tuple[list[Part], list[Part]]:
    def part(spec: PartSpec) -> Part:
        return Part(spec.kind, spec.name, list(spec.inputs), list(spec.outputs),
                    extract_part(layout.inferred, spec.inputs, spec.outputs, name=spec.name, index=layout.index),
                    after=spec.after)

    return [part(s) for s in layout.blocks], [part(s) for s in layout.exits]


def describe_branchy(model: onnx.ModelProto, contract: Contract) -> dict:
    """Shapes and sizes of every block and exit, and what crosses each cut: what ``finplan inspect`` shows."""
    layout = compute_layout(infer_shapes(model), contract)
    inferred = layout.inferred
    live = layout_boundaries(layout, contract)
    blocks, exits = _extract_parts(layout)

    def row(part: Part) -> dict:
        out = part.outputs[0]
        return {
            "name": part.name,
            **({"after": part.after} if part.after else {}),
            "inputs": part.inputs,
            "outputs": part.outputs,
            "output": out,
            "output_shape": tensor_shape(inferred, out),
            "dtype": str(tensor_dtype(inferred, out)),
            "params_bytes": params_bytes(part.model),
            "output_bytes": bytes_per_sample(inferred, out),
            "nodes": len(part.model.graph.node),
        }

    block_rows = []
    for k, part in enumerate(blocks, start=1):
        crossing = live[k]
        block_rows.append({**row(part), "live_set": [t.to_dict() for t in crossing],
                           "live_set_bytes": sum(t.bytes_per_sample for t in crossing)})
    return {
        "inputs": [t.to_dict() for t in live[0]],
        "input_bytes": sum(t.bytes_per_sample for t in live[0]),
        "blocks": block_rows,
        "exits": [row(p) for p in exits],
    }
