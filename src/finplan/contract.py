"""The branchy-ONNX contract: where the blocks and exits of an ONNX model are.

A branchy model is one static ONNX graph computing every block output and every exit
output. Model metadata key ``finplan`` holds JSON::

    {"input": "x",
     "blocks": [{"name": "block1", "output": "t1"}, ...],          # in execution order
     "exits":  [{"name": "exit1", "after": "block1", "output": "logits1"}, ...]}

Block k is the part of the graph between boundary k-1 (the input for k = 1) and boundary
k; exit head e is the part between the output of the block it follows and its own output.
``validate`` proves that these parts really separate the graph.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import onnx

from finplan.errors import FinplanInputError

METADATA_KEY = "finplan"


@dataclass(frozen=True)
class Block:
    name: str
    output: str


@dataclass(frozen=True)
class Exit:
    name: str
    after: str  # name of the block this exit head follows
    output: str


@dataclass(frozen=True)
class Contract:
    input: str
    blocks: tuple[Block, ...]
    exits: tuple[Exit, ...]

    def to_dict(self) -> dict:
        return {
            "input": self.input,
            "blocks": [{"name": b.name, "output": b.output} for b in self.blocks],
            "exits": [{"name": e.name, "after": e.after, "output": e.output} for e in self.exits],
        }

    @classmethod
    def from_dict(cls, doc: dict, *, file: str | os.PathLike | None = None) -> "Contract":
        field = f"metadata_props[{METADATA_KEY}]"
        try:
            return cls(
                input=str(doc["input"]),
                blocks=tuple(Block(str(b["name"]), str(b["output"])) for b in doc["blocks"]),
                exits=tuple(Exit(str(e["name"]), str(e["after"]), str(e["output"])) for e in doc["exits"]),
            )
        except (KeyError, TypeError) as exc:
            raise FinplanInputError(
                f"malformed contract ({exc!r} missing or wrong type); expected "
                '{"input", "blocks": [{"name", "output"}], "exits": [{"name", "after", "output"}]}',
                file=file, field=field) from None

    def block_index(self, name: str) -> int:
        for index, block in enumerate(self.blocks):
            if block.name == name:
                return index
        raise KeyError(name)

    def boundary_before(self, index: int) -> str:
        """Tensor that feeds block ``index`` (0-based): the model input or the previous block's output."""
        return self.input if index == 0 else self.blocks[index - 1].output

    def exits_after(self, block_name: str) -> tuple[Exit, ...]:
        return tuple(e for e in self.exits if e.after == block_name)


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
        "has no finplan contract (metadata_props key 'finplan'); describe the model with "
        "--block TENSOR (repeated, in order) and --exit NAME=BLOCK:TENSOR", file=file)


def has_contract(model: onnx.ModelProto) -> bool:
    return any(prop.key == METADATA_KEY for prop in model.metadata_props)


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
    inputs = graph_input_names(model)
    if len(inputs) != 1:
        raise FinplanInputError(f"the graph has {len(inputs)} inputs ({', '.join(inputs)}); finplan needs exactly one",
                                file=file, field="graph.input")
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
    return Contract(input=inputs[0], blocks=tuple(parsed_blocks), exits=tuple(parsed_exits))


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
    block and exit head can be cut out on its own, and the graph is static.

    ``where`` names the contract in messages when it does not come from the file's metadata
    (e.g. the command line's --block/--exit). Raises FinplanInputError naming the file, the
    contract field and the offending tensor.
    """
    from finplan.onnx_parts import GraphIndex  # local: onnx_parts imports this module's types

    field = where or f"metadata_props[{METADATA_KEY}]"
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            raise FinplanInputError(f"node {node.name or node.output[0]!r} is {node.op_type}; finplan needs a static graph "
                                    "without If/Loop/Scan (export every block and exit output unconditionally)",
                                    file=file, field="graph.node")
    if not contract.blocks:
        raise FinplanInputError("lists no blocks; expected at least one", file=file, field=f"{field}.blocks")
    _check_unique_names([b.name for b in contract.blocks], file, f"{field}.blocks")
    _check_unique_names([e.name for e in contract.exits], file, f"{field}.exits")
    index = GraphIndex(model)
    if contract.input not in graph_input_names(model):
        raise FinplanInputError(f"names tensor {contract.input!r}, which is not a graph input "
                                f"(inputs: {', '.join(graph_input_names(model))})", file=file, field=f"{field}.input")
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
    for i in range(1, len(contract.blocks)):
        before, block = contract.boundary_before(i), contract.blocks[i]
        if not index.depends_on(block.output, before):
            raise FinplanInputError(
                f"block {block.name!r} (tensor {block.output!r}) does not depend on the previous block's output "
                f"{before!r}: blocks must be listed in execution order", file=file, field=f"{field}.blocks[{i}]")
    for i, block in enumerate(contract.blocks):
        crossing = index.crossing_tensor([contract.boundary_before(i)], [block.output])
        if crossing is not None:
            raise FinplanInputError(
                f"block {block.name!r} cannot be cut out between {contract.boundary_before(i)!r} and {block.output!r}: "
                f"it also needs tensor {crossing!r} from before its input (a skip connection crosses the cut; "
                "move the boundary after the connection rejoins)", file=file, field=f"{field}.blocks[{i}]")
    for i, exit_ in enumerate(contract.exits):
        boundary = contract.blocks[contract.block_index(exit_.after)].output
        if exit_.output != boundary and not index.depends_on(exit_.output, boundary):
            raise FinplanInputError(f"exit {exit_.name!r} (tensor {exit_.output!r}) does not depend on the output "
                                    f"{boundary!r} of block {exit_.after!r}", file=file, field=f"{field}.exits[{i}]")
        crossing = index.crossing_tensor([boundary], [exit_.output])
        if crossing is not None:
            raise FinplanInputError(
                f"exit head {exit_.name!r} cannot be cut out from {boundary!r}: it also needs tensor {crossing!r} "
                "from before that block's output", file=file, field=f"{field}.exits[{i}]")


def _check_unique_names(names: list[str], file, field: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise FinplanInputError(f"duplicate name {name!r}", file=file, field=f"{field}[{i}].name")
        seen.add(name)


# --------------------------------------------------------------------------- loading

def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with one clear error for anything that is not one."""
    from pathlib import Path

    from finplan.fileio import MAX_ONNX_BYTES, require_input_file

    path = require_input_file(path, max_bytes=MAX_ONNX_BYTES, what="model file (.onnx)")
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
