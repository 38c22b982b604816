"""The branchy-ONNX contract's types: the graph inputs, one cut tensor per block, the exit heads.

A base module: ``finplan.contract`` (reading, writing, hashing and proving a contract against
its graph) and ``finplan.onnx_parts`` (cutting the graph where a contract says) both import
these types, so neither needs the other's types and the two stay one direction
(contract -> onnx_parts -> contract_types). Import them from ``finplan.contract``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass(frozen=True, init=False)
class Contract:
    inputs: tuple[str, ...]  # the graph inputs, in graph order
    blocks: tuple[Block, ...]
    exits: tuple[Exit, ...]

    def __init__(self, inputs: str | tuple[str, ...] | list[str] | None = None, blocks=(), exits=(), *,
                 input: str | None = None):
        # ``input=`` / a single string: contracts (and callers) from before several inputs were allowed.
        if inputs is None:
            inputs = () if input is None else (input,)
        elif input is not None:
            raise TypeError("give inputs or input, not both")
        if isinstance(inputs, str):
            inputs = (inputs,)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "blocks", tuple(blocks))
        object.__setattr__(self, "exits", tuple(exits))

    @property
    def input(self) -> str:
        """The sole graph input of a single-input model (kept for callers written before ``inputs``)."""
        if len(self.inputs) != 1:
            raise ValueError(f"the contract has {len(self.inputs)} inputs; use Contract.inputs")
        return self.inputs[0]

    def to_dict(self) -> dict:
        return {
            "inputs": list(self.inputs),
            "blocks": [{"name": b.name, "output": b.output} for b in self.blocks],
            "exits": [{"name": e.name, "after": e.after, "output": e.output} for e in self.exits],
        }

    @classmethod
    def from_dict(cls, doc: dict, *, file: str | os.PathLike | None = None) -> "Contract":
        field = f"metadata_props[{METADATA_KEY}]"
        try:
            if "inputs" in doc:
                if isinstance(doc["inputs"], (str, bytes)) or not isinstance(doc["inputs"], list):
                    raise TypeError("inputs")
                inputs = tuple(str(i) for i in doc["inputs"])
            else:
                inputs = (str(doc["input"]),)
            return cls(
                inputs=inputs,
                blocks=tuple(Block(str(b["name"]), str(b["output"])) for b in doc["blocks"]),
                exits=tuple(Exit(str(e["name"]), str(e["after"]), str(e["output"])) for e in doc["exits"]),
            )
        except (KeyError, TypeError) as exc:
            raise FinplanInputError(
                f"malformed contract ({exc!r} missing or wrong type); expected "
                '{"inputs": [...], "blocks": [{"name", "output"}], "exits": [{"name", "after", "output"}]}',
                file=file, field=field) from None

    def block_index(self, name: str) -> int:
        for index, block in enumerate(self.blocks):
            if block.name == name:
                return index
        raise KeyError(name)

    def boundary_before(self, index: int) -> str:
        """The contract tensor before block ``index`` (0-based): the sole input or the previous block's output.

        Only the chain view: what really crosses a cut is the live set, ``finplan.onnx_parts.boundaries``.
        """
        return self.input if index == 0 else self.blocks[index - 1].output

    def exits_after(self, block_name: str) -> tuple[Exit, ...]:
        return tuple(e for e in self.exits if e.after == block_name)
