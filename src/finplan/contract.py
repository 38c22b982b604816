"""The branchy-ONNX contract: where the blocks and exits of an ONNX model are.

A branchy model is one static ONNX graph computing every block output and every exit
output. Model metadata key ``finplan`` holds JSON::

    {"inputs": ["input_ids", "attention_mask"],                    # the graph inputs, in graph order
     "blocks": [{"name": "block1", "output": "t1"}, ...],          # one cut tensor per block, in execution order
     "exits":  [{"name": "exit1", "after": "block1", "output": "logits1"}, ...]}

A contract written before several inputs were allowed (``"input": "x"``) loads as
``inputs=("x",)``. The boundary after block k is not listed: it is the block's *live set*
(every graph input or earlier tensor that later blocks or exit heads still read), computed
from the graph by ``finplan.onnx_parts.boundaries``. ``validate_contract`` proves that every
block and exit head can be cut out from its live set.

The types (``Contract``, ``Block``, ``Exit``) live in ``finplan.contract_types``, below both this
module and ``finplan.onnx_parts``, and are imported from here.
"""
from __future__ import annotations

import hashlib
import json
import os

import onnx

from finplan.contract_types import METADATA_KEY, Block, Contract, Exit
from finplan.errors import FinplanInputError
import finplan.fileio as fileio
from finplan.onnx_graph import GraphIndex, infer_shapes, tensor_shape
from finplan.onnx_parts import CutError, compute_layout, layout_boundaries
from finplan.validation import check_unique

__all__ = ["METADATA_KEY", "Block", "Contract", "Exit", "FORBIDDEN_OPS", "contract_from_cli", "graph_input_names",
           "load_branchy_model", "load_onnx", "model_hash", "read_contract", "strip_node_metadata",
           "validate_contract", "write_contract"]


# --------------------------------------------------------------------------- metadata

def read_contract(model: onnx.ModelProto, file: str | os.PathLike | None = None) -> Contract:
    """The contract stored in ``model``'s metadata. Raises FinplanInputError when absent or malformed."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                doc = json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise FinplanInputError(f"not valid JSON ({exc.msg})", file=file,
                                        field=f"metadata_props[{METADATA_KEY}]") from None
            if not isinstance(doc, dict):
                raise FinplanInputError("expected a JSON object", file=file, field=f"metadata_props[{METADATA_KEY}]")
            return Contract.from_dict(doc, file=file)
    raise FinplanInputError(
        "has no finplan contract (metadata_props key 'finplan'); write one into a copy with "
        "`finplan annotate MODEL.onnx --block TENSOR ... --exit NAME=BLOCK:TENSOR -o OUT.onnx` "
        "(`finplan cuts MODEL.onnx` lists the tensors), or describe it with --block/--exit where a command takes them",
        file=file)


def write_contract(model: onnx.ModelProto, contract: Contract) -> None:
    """Store ``contract`` in ``model``'s metadata, replacing any earlier one (in place)."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(contract.to_dict(), separators=(",", ":"))


def contract_from_cli(model: onnx.ModelProto, blocks: list[str], exits: list[str],
                      file: str | os.PathLike | None = None) -> Contract:
    """Build a contract from ``--block [NAME=]TENSOR`` and ``--exit NAME=BLOCK:TENSOR`` arguments.

    Unnamed blocks are called block1, block2, ... in the order given.
    """
    inputs = graph_input_names(model)  # all of them, in graph order, any dtype
    parsed_blocks = []
    for index, spec in enumerate(blocks, start=1):
        name, sep, tensor = spec.partition("=")
        if not sep:
            name, tensor = f"block{index}", spec
        if not name or not tensor:
            raise FinplanInputError(f"--block {spec!r}: expected TENSOR or NAME=TENSOR", file=file)
        parsed_blocks.append(Block(name, tensor))
    parsed_exits = []
    for spec in exits:
        name, sep, rest = spec.partition("=")
        block, sep2, tensor = rest.partition(":")
        if not (sep and sep2 and name and block and tensor):
            raise FinplanInputError(f"--exit {spec!r}: expected NAME=BLOCK:TENSOR (e.g. exit1=block1:logits1)", file=file)
        parsed_exits.append(Exit(name, block, tensor))
    return Contract(inputs=tuple(inputs), blocks=tuple(parsed_blocks), exits=tuple(parsed_exits))


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


# --------------------------------------------------------------------------- hash

def strip_node_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node metadata (the exporter records source paths there) and doc strings, in place."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""


def model_hash(model: onnx.ModelProto) -> str:
    """A content hash of the computation: graph, weights and opsets.

    Stable across re-exports of the same weights: node metadata, doc strings, producer
    fields and model metadata (where the contract lives) do not enter it.
    """
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    graph.doc_string = ""
    digest = hashlib.sha256()
    digest.update(graph.SerializeToString(deterministic=True))
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(f"{opset[0]}:{opset[1]};".encode())
    for function in model.functions:
        digest.update(function.SerializeToString(deterministic=True))
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------- validation

FORBIDDEN_OPS = ("If", "Loop", "Scan")


def validate_contract(model: onnx.ModelProto, contract: Contract, file: str | os.PathLike | None = None,
                      *, where: str | None = None) -> None:
    """Prove that the contract describes ``model``: names exist, blocks are in order, every
    block and exit head can be cut out from its live set, every live tensor can be sent sample
    by sample, every exit is a class-score vector, and the graph is static.

    ``where`` names the contract in messages when it does not come from the file's metadata
    (e.g. the command line's --block/--exit). Raises FinplanInputError naming the file, the
    contract field and the offending tensor.
    """
    field = where or f"metadata_props[{METADATA_KEY}]"
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            raise FinplanInputError(f"node {node.name or node.output[0]!r} is {node.op_type}; finplan needs a static graph "
                                    "without If/Loop/Scan (export every block and exit output unconditionally)",
                                    file=file, field="graph.node")
    if not contract.blocks:
        raise FinplanInputError("lists no blocks; expected at least one", file=file, field=f"{field}.blocks")
    if not contract.exits:
        raise FinplanInputError("lists no exits; expected at least one exit head (NAME=BLOCK:TENSOR, a class-score "
                                "output) for an early-exit model", file=file, field=f"{field}.exits")
    check_unique([b.name for b in contract.blocks], file=file, field=f"{field}.blocks")
    check_unique([e.name for e in contract.exits], file=file, field=f"{field}.exits")
    index = GraphIndex(model)
    graph_inputs = graph_input_names(model)
    if list(contract.inputs) != graph_inputs:
        unknown = [name for name in contract.inputs if name not in graph_inputs]
        what = (f"names tensor {unknown[0]!r}, which is not a graph input" if unknown
                else f"names {list(contract.inputs)}")
        raise FinplanInputError(f"{what}; expected every graph input in graph order: {graph_inputs}",
                                file=file, field=f"{field}.inputs")
    for i, block in enumerate(contract.blocks):
        if not index.exists(block.output):
            raise FinplanInputError(f"names tensor {block.output!r}, which the graph does not have",
                                    file=file, field=f"{field}.blocks[{i}].output")
    for i, exit_ in enumerate(contract.exits):
        if exit_.after not in {b.name for b in contract.blocks}:
            raise FinplanInputError(f"names block {exit_.after!r}, which the contract does not list "
                                    f"(blocks: {', '.join(b.name for b in contract.blocks)})",
                                    file=file, field=f"{field}.exits[{i}].after")
        if not index.exists(exit_.output):
            raise FinplanInputError(f"names tensor {exit_.output!r}, which the graph does not have",
                                    file=file, field=f"{field}.exits[{i}].output")
    try:
        inferred = infer_shapes(model)
    except Exception as exc:  # onnx raises InferenceError / ValidationError with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise FinplanInputError(f"ONNX shape inference failed ({first}); finplan needs the shapes of the cut tensors",
                                file=file, field="graph") from None
    try:
        layout_boundaries(compute_layout(inferred, contract), contract)
    except CutError as exc:
        at = (f".exits[{exc.exit}]" if exc.exit is not None
              else f".blocks[{exc.block}]" if exc.block is not None else ".inputs")
        raise FinplanInputError(str(exc), file=file, field=f"{field}{at}") from None
    for i, exit_ in enumerate(contract.exits):
        shape = tensor_shape(inferred, exit_.output)
        if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 2:
            raise FinplanInputError(
                f"exit {exit_.name!r} (tensor {exit_.output!r}) has shape {shape}; expected a class-score vector "
                "[batch, classes] with classes >= 2 (attach a head: pooling + linear)",
                file=file, field=f"{field}.exits[{i}].output")


# --------------------------------------------------------------------------- loading

def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with one clear error for anything that is not one."""
    # the limit read at call time, through the module, so a caller (or a test) that changes it is heard
    path = fileio.require_input_file(path, max_bytes=fileio.MAX_ONNX_BYTES, what="model file (.onnx)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx may raise ValueError/OSError
        raise FinplanInputError(f"not an ONNX model ({exc.__class__.__name__}); expected a .onnx protobuf file",
                                file=path) from None
    if not model.graph.node:
        raise FinplanInputError("not an ONNX model (the graph has no nodes); expected a .onnx protobuf file", file=path)
    return model


def load_branchy_model(path: str | os.PathLike, *, blocks: list[str] | None = None,
                       exits: list[str] | None = None) -> tuple[onnx.ModelProto, Contract]:
    """Load an ONNX model and its contract (from metadata, or from ``--block/--exit`` arguments), validated."""
    model = load_onnx(path)
    where = None
    if blocks:
        contract = contract_from_cli(model, blocks, exits or [], file=path)
        where = "the --block/--exit contract"
    elif exits:
        raise FinplanInputError("--exit given without --block; describe the blocks too", file=path)
    else:
        contract = read_contract(model, file=path)
    validate_contract(model, contract, file=path, where=where)
    return model, contract
