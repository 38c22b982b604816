"""The per-node manifest (``finplan.manifest/1``): parse and validate once, at load time.

The format is documented in docs/deployment-format.md. Everything a runtime needs to run one
node comes from here; after parsing, the runtime trusts these dataclasses.
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

MANIFEST_KIND = "manifest"
MANIFEST_SCHEMA = "finplan.manifest/1"
MANIFEST_FILE = "manifest.json"
POLICIES = ("max_softmax", "max_probability")


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
    node: str
    tensor: str


@dataclass(frozen=True)
class Stage:
    part: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output_roles: tuple[str, ...]
    blocks: tuple[str, ...]
    exits: tuple[ExitSpec, ...]
    next: NextHop | None


@dataclass(frozen=True)
class Entry:
    tensor: str
    stage: int
    from_node: str | None


@dataclass(frozen=True)
class Manifest:
    node: str
    application: str
    model_name: str
    model_hash: str | None
    is_source: bool
    input: TensorSpec
    entries: tuple[Entry, ...]
    stages: tuple[Stage, ...]
    predicted: dict
    path: str
    doc: dict
    session_threads: int | None = None  # intra-op threads the node's profile timed the parts with


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- parsing

def _get(doc: Any, key: str, *, file, field: str, kind: type | tuple = object, what: str = "a value"):
    if not isinstance(doc, dict) or key not in doc:
        raise FinplanInputError(f"missing; expected {what}", file=file, field=field)
    value = doc[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise FinplanInputError(f"is {value!r}; expected {what}", file=file, field=field)
    return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _tensor(doc: Any, *, file, field: str) -> TensorSpec:
    name = _get(doc, "name", file=file, field=f"{field}.name", kind=str, what="a tensor name")
    shape = _get(doc, "shape", file=file, field=f"{field}.shape", kind=list, what="a list of dimensions")
    for i, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, (int, str)) or (isinstance(dim, int) and dim < 0):
            raise FinplanInputError(f"is {dim!r}; expected an int >= 0 or a symbolic name", file=file, field=f"{field}.shape[{i}]")
    dtype = _get(doc, "dtype", file=file, field=f"{field}.dtype", kind=str, what="a numpy dtype name")
    try:
        np.dtype(dtype)
    except TypeError:
        raise FinplanInputError(f"is {dtype!r}; expected a numpy dtype name such as float32", file=file,
                                field=f"{field}.dtype") from None
    return TensorSpec(name, tuple(shape), dtype)


def parse_manifest(doc: dict, path: str | os.PathLike) -> Manifest:
    """Validate a manifest document already checked for its schema (see ``load_manifest``)."""
    file = str(path)
    node = _get(doc, "node", file=file, field="node", kind=str, what="the node name")
    application = _get(doc, "application", file=file, field="application", kind=str, what="the application name")
    model = _get(doc, "model", file=file, field="model", kind=dict, what="a mapping {name, hash}")
    model_name = _get(model, "name", file=file, field="model.name", kind=str, what="the model name")
    model_hash = model.get("hash")
    if model_hash is not None and not isinstance(model_hash, str):
        raise FinplanInputError(f"is {model_hash!r}; expected a string or null", file=file, field="model.hash")
    is_source = _get(doc, "is_source", file=file, field="is_source", kind=bool, what="true or false")
    input_spec = _tensor(_get(doc, "input", file=file, field="input", kind=dict, what="a tensor spec"), file=file, field="input")
    stages_doc = _get(doc, "stages", file=file, field="stages", kind=list, what="a non-empty list of stages")
    if not stages_doc:
        raise FinplanInputError("is empty; expected at least one stage", file=file, field="stages")
    stages = []
    for i, sd in enumerate(stages_doc):
        where = f"stages[{i}]"
        part = _get(sd, "part", file=file, field=f"{where}.part", kind=str, what="a part file name")
        if Path(part).name != part or part in ("", ".", ".."):
            raise FinplanInputError(f"is {part!r}; expected a file name inside the node folder", file=file, field=f"{where}.part")
        digest = _get(sd, "sha256", file=file, field=f"{where}.sha256", kind=str, what="a sha256 hex digest")
        inputs = tuple(_tensor(t, file=file, field=f"{where}.inputs[{j}]")
                       for j, t in enumerate(_get(sd, "inputs", file=file, field=f"{where}.inputs", kind=list, what="a list")))
        outputs_doc = _get(sd, "outputs", file=file, field=f"{where}.outputs", kind=list, what="a list")
        outputs = tuple(_tensor(t, file=file, field=f"{where}.outputs[{j}]") for j, t in enumerate(outputs_doc))
        roles = tuple(str(t.get("role", "block")) for t in outputs_doc)
        if len(inputs) != 1:
            raise FinplanInputError(f"has {len(inputs)} inputs; a stage takes exactly one tensor", file=file, field=f"{where}.inputs")
        blocks = tuple(_get(sd, "blocks", file=file, field=f"{where}.blocks", kind=list, what="a list of block names"))
        exits = []
        output_names = {t.name for t in outputs}
        for j, ed in enumerate(_get(sd, "exits", file=file, field=f"{where}.exits", kind=list, what="a list")):
            ew = f"{where}.exits[{j}]"
            ename = _get(ed, "name", file=file, field=f"{ew}.name", kind=str, what="an exit name")
            eout = _get(ed, "output", file=file, field=f"{ew}.output", kind=str, what="a tensor name")
            if eout not in output_names:
                raise FinplanInputError(f"names tensor {eout!r}, which is not an output of the stage", file=file, field=f"{ew}.output")
            policy = _get(ed, "policy", file=file, field=f"{ew}.policy", kind=str, what="an exit policy")
            if policy not in POLICIES:
                raise FinplanInputError(f"is {policy!r}; this finplan knows {', '.join(POLICIES)}", file=file, field=f"{ew}.policy")
            threshold = ed.get("threshold")
            if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                          or not 0.0 <= float(threshold) <= 1.0):
                raise FinplanInputError(f"is {threshold!r}; expected a number in [0, 1] or null", file=file, field=f"{ew}.threshold")
            exits.append(ExitSpec(ename, eout, policy, None if threshold is None else float(threshold)))
        nd = sd.get("next")
        hop = None
        if nd is not None:
            hop = NextHop(_get(nd, "node", file=file, field=f"{where}.next.node", kind=str, what="a node name"),
                          _get(nd, "tensor", file=file, field=f"{where}.next.tensor", kind=str, what="a tensor name"))
            if hop.tensor not in output_names:
                raise FinplanInputError(f"names tensor {hop.tensor!r}, which is not an output of the stage",
                                        file=file, field=f"{where}.next.tensor")
        elif not exits or exits[-1].threshold is not None:
            raise FinplanInputError("is null but the stage has no final exit (threshold null); samples would be lost",
                                    file=file, field=f"{where}.next")
        stages.append(Stage(part, digest, inputs, outputs, roles, blocks, tuple(exits), hop))
    entries = []
    for i, ed in enumerate(doc.get("entries") or [{"tensor": input_spec.name, "stage": 0, "from": None}]):
        tensor = _get(ed, "tensor", file=file, field=f"entries[{i}].tensor", kind=str, what="a tensor name")
        stage = _get(ed, "stage", file=file, field=f"entries[{i}].stage", kind=int, what="a stage index")
        if not 0 <= stage < len(stages) or stages[stage].inputs[0].name != tensor:
            raise FinplanInputError(f"names stage {stage} for tensor {tensor!r}, which does not take that tensor",
                                    file=file, field=f"entries[{i}]")
        entries.append(Entry(tensor, stage, ed.get("from")))
    first = stages[entries[0].stage].inputs[0]
    if input_spec != first:
        # runtimes check what arrives against ``input``, the part against its stage's spec: one truth
        raise FinplanInputError(f"is {input_spec.describe()}, but the first stage takes {first.describe()} "
                                f"(stages[{entries[0].stage}].inputs[0]); re-run finplan emit", file=file, field="input")
    predicted = doc.get("predicted") or {}
    if not isinstance(predicted, dict):
        raise FinplanInputError("expected a mapping", file=file, field="predicted")
    session = doc.get("session")
    threads = None
    if session is not None:
        if not isinstance(session, dict):
            raise FinplanInputError(f"is {session!r}; expected a mapping {{intra_op_threads, ...}}", file=file,
                                    field="session")
        threads = session.get("intra_op_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise FinplanInputError(f"is {threads!r}; expected an integer >= 1", file=file,
                                    field="session.intra_op_threads")
    return Manifest(node, application, model_name, model_hash, is_source, input_spec, tuple(entries),
                    tuple(stages), predicted, file, doc, threads)


def load_manifest(folder: str | os.PathLike) -> Manifest:
    """Read ``folder/manifest.json``; raises FinplanInputError on a missing folder, an unknown
    schema major or a malformed field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FinplanInputError("node folder not found" if not folder.exists() else "is not a folder", file=folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise FinplanInputError("manifest not found; expected a node folder written by finplan emit", file=path)
    return parse_manifest(load_document(path, MANIFEST_KIND), path)
