"""The per-node manifest (``finplan.manifest/1``): parse and validate once, at load time.

The format is documented in docs/deployment-format.md and written down as
finplan/schemas/manifest.schema.json, which every manifest is checked against first
(finplan.validation); this module checks what a schema cannot say. Everything a runtime needs to
run one node comes from here; after parsing, the runtime trusts these dataclasses.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from finplan.errors import FinplanInputError
from finplan.fileio import load_document
from finplan.validation import validate_document

MANIFEST_KIND = "manifest"
MANIFEST_SCHEMA = "finplan.manifest/1"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as a node sees it: ``shape`` holds ints, with ``"batch"`` (or another string) for
    the dynamic axes."""
    name: str
    shape: tuple[int | str, ...]
    dtype: str  # numpy dtype name, e.g. "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def describe(self) -> str:
        return f"{self.name} [{', '.join(str(d) for d in self.shape)}] {self.dtype}"

    @cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @cached_property
    def _fixed(self) -> tuple[tuple[int, int], ...]:
        return tuple((axis, dim) for axis, dim in enumerate(self.shape) if isinstance(dim, int))

    def fits(self, array: np.ndarray) -> bool:
        shape = array.shape
        return (array.dtype == self.np_dtype and len(shape) == len(self.shape)
                and all(shape[axis] == dim for axis, dim in self._fixed))

    def check(self, array: np.ndarray, *, file=None, field: str = "input") -> None:
        """Raise FinplanInputError naming shape and dtype when ``array`` does not fit this spec."""
        if not self.fits(array):
            expected = f"shape ({', '.join(str(d) for d in self.shape)}) dtype {self.dtype}"
            raise FinplanInputError(
                f"tensor {self.name!r} has shape {tuple(array.shape)} dtype {array.dtype}; expected {expected}",
                file=file, field=field)


@dataclass(frozen=True)
class ExitSpec:
    name: str
    output: str
    policy: str
    threshold: float | None  # None: the final exit, every remaining sample leaves


@dataclass(frozen=True)
class NextHop:
    """Where the samples that stay go: ``node``, its entry ``tensor`` (the key naming the entry: the contract
    tensor of the cut), and ``tensors``, the live set sent (several named tensors; a legacy manifest: one)."""
    node: str
    tensor: str
    tensors: tuple[TensorSpec, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)


@dataclass(frozen=True)
class Stage:
    part: str
    sha256: str
    inputs: tuple[TensorSpec, ...]      # what the part reads (a subset of the tensors the stage receives)
    outputs: tuple[TensorSpec, ...]
    output_roles: tuple[str, ...]
    blocks: tuple[str, ...]
    exits: tuple[ExitSpec, ...]
    next: NextHop | None


@dataclass(frozen=True)
class Entry:
    """Samples arrive at ``stage`` from ``from_node`` carrying ``tensors`` (the live set at that cut),
    named by the key ``tensor``."""
    tensor: str
    stage: int
    from_node: str | None
    tensors: tuple[TensorSpec, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)


@dataclass(frozen=True)
class Manifest:
    node: str
    application: str
    model_name: str
    model_hash: str | None
    is_source: bool
    inputs: tuple[TensorSpec, ...]  # what the node's first entry receives (the source: the graph inputs)
    entries: tuple[Entry, ...]
    stages: tuple[Stage, ...]
    predicted: dict
    path: str
    doc: dict
    session_threads: int | None = None  # intra-op threads the node's profile timed the parts with

    @property
    def input(self) -> TensorSpec:
        """The first entry's first tensor (the sole one for a single-input chain)."""
        return self.inputs[0]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- parsing

def _tensor(doc: dict, *, file, field: str) -> TensorSpec:
    """A schema-checked tensor spec; its dtype must be one numpy knows (a schema cannot say)."""
    try:
        np.dtype(doc["dtype"])
    except TypeError:
        raise FinplanInputError(f"is {doc['dtype']!r}; expected a numpy dtype name such as float32", file=file,
                                field=f"{field}.dtype") from None
    return TensorSpec(doc["name"], tuple(doc["shape"]), doc["dtype"])


def _tensors(listed: list, *, file, field: str) -> tuple[TensorSpec, ...]:
    """A schema-checked, non-empty list of tensor specs; their names must be distinct."""
    specs = tuple(_tensor(t, file=file, field=f"{field}[{j}]") for j, t in enumerate(listed))
    names = [t.name for t in specs]
    if len(set(names)) != len(names):
        raise FinplanInputError(f"names a tensor twice ({', '.join(names)}); expected distinct names", file=file,
                                field=field)
    return specs


def _check_flow(node: str, stages: list[Stage], entries: list[Entry], file: str) -> None:
    """Every stage is fed: what it receives (an entry's tensors, or what the previous stage hands on when
    that hop stays on this node: stages are in chain order) holds every tensor its part reads, with the
    same spec; what a stage hands on is what it received or computed."""
    received: dict[int, tuple[TensorSpec, ...]] = {e.stage: e.tensors for e in entries}
    for i, stage in enumerate(stages):
        where = f"stages[{i}]"
        if i not in received:
            raise FinplanInputError("is neither an entry nor reached from the previous stage on this node; "
                                    "re-run finplan emit", file=file, field=where)
        have = {t.name: t for t in received[i]}
        for j, spec in enumerate(stage.inputs):
            if have.get(spec.name) != spec:
                got = "nothing" if spec.name not in have else have[spec.name].describe()
                raise FinplanInputError(f"is {spec.describe()}, but the stage receives {got} under that name; "
                                        "re-run finplan emit", file=file, field=f"{where}.inputs[{j}]")
        if stage.next is None:
            continue
        available = {**have, **{t.name: t for t in stage.outputs}}
        for j, spec in enumerate(stage.next.tensors):
            if available.get(spec.name) != spec:
                raise FinplanInputError(f"sends {spec.describe()}, which the stage neither receives nor computes with "
                                        "that spec; re-run finplan emit", file=file, field=f"{where}.next.tensors[{j}]")
        if stage.next.node == node:
            if i + 1 >= len(stages) or (i + 1) in received:
                raise FinplanInputError(f"stays on node {node!r}, but no stage of this node follows it; re-run finplan emit",
                                        file=file, field=f"{where}.next")
            received[i + 1] = stage.next.tensors


def parse_manifest(doc: Any, path: str | os.PathLike) -> Manifest:
    """Validate a manifest document against finplan/schemas/manifest.schema.json, then what the
    schema cannot say (distinct tensor names, numpy dtypes, part files inside the node folder,
    exits and hops naming tensors of their stage, every stage fed, entries naming existing
    stages), and turn it into a Manifest."""
    file = str(path)
    validate_document(doc, MANIFEST_KIND, file=file)
    model = doc["model"]
    if "inputs" in doc:  # several named tensors
        input_specs = _tensors(doc["inputs"], file=file, field="inputs")
    else:  # a manifest written before several inputs: one tensor
        input_specs = (_tensor(doc["input"], file=file, field="input"),)
    stages = []
    for i, sd in enumerate(doc["stages"]):
        where = f"stages[{i}]"
        part = sd["part"]
        if Path(part).name != part or part in (".", ".."):
            raise FinplanInputError(f"is {part!r}; expected a file name inside the node folder", file=file, field=f"{where}.part")
        inputs = _tensors(sd["inputs"], file=file, field=f"{where}.inputs")
        outputs = tuple(_tensor(t, file=file, field=f"{where}.outputs[{j}]") for j, t in enumerate(sd["outputs"]))
        roles = tuple(t.get("role", "block") for t in sd["outputs"])
        output_names = {t.name for t in outputs}
        exits = []
        for j, ed in enumerate(sd["exits"]):
            if ed["output"] not in output_names:
                raise FinplanInputError(f"names tensor {ed['output']!r}, which is not an output of the stage", file=file,
                                        field=f"{where}.exits[{j}].output")
            threshold = ed.get("threshold")
            exits.append(ExitSpec(ed["name"], ed["output"], ed["policy"], None if threshold is None else float(threshold)))
        nd = sd.get("next")
        hop = None
        if nd is not None:
            key = nd["tensor"]
            if "tensors" in nd:
                sent = _tensors(nd["tensors"], file=file, field=f"{where}.next.tensors")
            else:  # legacy: the one output named
                sent = tuple(t for t in outputs if t.name == key)
                if not sent:
                    raise FinplanInputError(f"names tensor {key!r}, which is not an output of the stage",
                                            file=file, field=f"{where}.next.tensor")
            if key not in {t.name for t in sent}:
                raise FinplanInputError(f"names tensor {key!r}, which is not among the tensors sent "
                                        f"({', '.join(t.name for t in sent)})", file=file, field=f"{where}.next.tensor")
            hop = NextHop(nd["node"], key, sent)
        elif not exits or exits[-1].threshold is not None:
            raise FinplanInputError("is null but the stage has no final exit (threshold null); samples would be lost",
                                    file=file, field=f"{where}.next")
        stages.append(Stage(part, sd["sha256"], inputs, outputs, roles, tuple(sd["blocks"]), tuple(exits), hop))
    entries = []
    for i, ed in enumerate(doc.get("entries") or [{"tensor": input_specs[0].name, "stage": 0, "from": None}]):
        tensor, stage = ed["tensor"], ed["stage"]
        if stage >= len(stages):
            raise FinplanInputError(f"names stage {stage}; the node has stages 0..{len(stages) - 1}", file=file,
                                    field=f"entries[{i}].stage")
        received = _tensors(ed["tensors"], file=file, field=f"entries[{i}].tensors") if "tensors" in ed \
            else stages[stage].inputs  # legacy: the stage's one input
        if tensor not in {t.name for t in received}:
            raise FinplanInputError(f"names stage {stage} for tensor {tensor!r}, which does not take that tensor",
                                    file=file, field=f"entries[{i}]")
        entries.append(Entry(tensor, stage, ed.get("from"), received))
    _check_flow(doc["node"], stages, entries, file)
    first = entries[0].tensors
    if input_specs != first:
        # runtimes check what arrives against ``inputs``, the part against its stage's spec: one truth
        raise FinplanInputError(f"is {', '.join(t.describe() for t in input_specs)}, but the first entry takes "
                                f"{', '.join(t.describe() for t in first)} (entries[0]); re-run finplan emit",
                                file=file, field="inputs" if "inputs" in doc else "input")
    threads = (doc.get("session") or {}).get("intra_op_threads")
    return Manifest(doc["node"], doc["application"], model["name"], model.get("hash"), doc["is_source"], input_specs,
                    tuple(entries), tuple(stages), doc.get("predicted") or {}, file, doc, threads)


def load_manifest(folder: str | os.PathLike) -> Manifest:
    """Read ``folder/manifest.json``; raises FinplanInputError on a missing folder, an unknown
    schema major or a malformed field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FinplanInputError("node folder not found" if not folder.exists() else "is not a folder", file=folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FinplanInputError("manifest not found; expected a node folder written by finplan emit", file=path)
    return parse_manifest(load_document(path, MANIFEST_KIND), path)  # validated there
