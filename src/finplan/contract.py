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
