"""Run one node of a deployment: its ONNX parts, its exit heads, exit-or-forward per sample.

``NodeRuntime`` knows nothing about engines or transports: it takes a batch for one of the
node's entries and returns which samples exited here and which must be forwarded (and where).
The local executor calls it in a loop; the Ray Serve layer wraps one instance per deployment.

Stable API (the Ray Serve layer depends on it):
    NodeRuntime(folder: Path, *, threads: int | None = None, providers: list[str] | None = None)
    .node: str    .input_spec: TensorSpec    .manifest: Manifest
    .process(tensor: np.ndarray, *, entry: str) -> NodeResult
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from finplan.deploy.manifest import Manifest, Stage, TensorSpec, load_manifest, sha256_bytes
from finplan.errors import FinplanInputError
from finplan.exit_policy import StageRunner, run_chain

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass
class Forward:
    """The samples that leave this node without an answer: send ``tensor`` to ``node``."""
    indices: np.ndarray  # positions in the batch given to ``process`` (int64)
    tensor: np.ndarray   # the remaining samples only, in the order of ``indices``
    tensor_name: str     # the destination's entry tensor
    node: str


class NodeResult:
    """What one ``process`` call did, per sample of its batch.

    For sample i: ``exit_names[i]`` is the exit it took here, or None when it was forwarded;
    then ``predictions[i]`` is -1, ``confidences[i]`` NaN and ``logits[i]`` None.
    The per-sample numbers are kept as Python lists (``prediction_list``, ``confidence_list``,
    ``offset_list``); the numpy views (``predictions``, ``confidences``, ``exit_offset_s``) are
    built on first access, so the executor's hot path at batch 1 builds no tiny arrays.
    """

    def __init__(self, *, node: str, batch_size: int, exit_names: list[str | None], prediction_list: list[int],
                 confidence_list: list[float], logits: list[np.ndarray | None], offset_list: list[float],
                 forward: Forward | None, busy_s: float, bytes_in: int, bytes_out: int,
                 stage_samples: list[tuple[str, int]] | None = None, block_samples: dict[str, int] | None = None,
                 exit_samples: dict[str, int] | None = None):
        self.node = node
        self.batch_size = batch_size
        self.exit_names = exit_names
        self.prediction_list = prediction_list
        self.confidence_list = confidence_list
        self.logits = logits
        self.offset_list = offset_list  # seconds from the start of process to the sample's exit decision (NaN if forwarded)
        self.forward = forward
        self.busy_s = busy_s             # wall time spent in this call (parts and exit heads)
        self.bytes_in = bytes_in         # bytes of the tensor received
        self.bytes_out = bytes_out       # bytes of the forwarded tensor (0 when nothing is forwarded)
        self.stage_samples = stage_samples if stage_samples is not None else []  # (part, samples it ran on), in order
        self.block_samples = block_samples if block_samples is not None else {}  # block -> samples it ran on
        self.exit_samples = exit_samples if exit_samples is not None else {}     # exit head -> samples it ran on

    @cached_property
    def predictions(self) -> np.ndarray:
        """int64 [N]"""
        return np.asarray(self.prediction_list, dtype=np.int64)

    @cached_property
    def confidences(self) -> np.ndarray:
        """float64 [N]"""
        return np.asarray(self.confidence_list, dtype=np.float64)

    @cached_property
    def exit_offset_s(self) -> np.ndarray:
        """float64 [N]: seconds from the start of process to the sample's exit decision (NaN if forwarded)"""
        return np.asarray(self.offset_list, dtype=np.float64)

    @property
    def exited(self) -> np.ndarray:
        return np.array([name is not None for name in self.exit_names], dtype=bool)

    def __repr__(self) -> str:
        return (f"NodeResult(node={self.node!r}, batch_size={self.batch_size}, exit_names={self.exit_names!r}, "
                f"forward={self.forward!r}, busy_s={self.busy_s!r})")


def thread_choice(threads: int | None, manifest: Manifest) -> tuple[int | None, str]:
    """(intra-op threads, how they were chosen) for a node: the caller's count; else the one its
    manifest names (the node's profile, or for a node without one the profile emit borrowed);
    at most the CPUs this machine offers. None (onnxruntime's default) only when no profile
    of the model names one."""
    from finplan.fileio import available_cpus

    if threads is not None:
        count, how = int(threads), "as asked"
    elif manifest.session_threads is not None:
        session = manifest.doc.get("session") or {}
        lender = session.get("from_node")
        count = manifest.session_threads
        how = "its profile" if lender is None else f"the profile of {lender} (it has none)"
    else:
        return None, "onnxruntime's default (no profile names a count)"
    cpus = available_cpus()
    if count > cpus:
        return cpus, f"{how}: {count}, capped at the {cpus} CPUs of this machine"
    return count, how


def session_options(threads: int | None):
    """Explicit options, so that timings and results do not depend on onnxruntime's defaults
    changing between versions: all graph optimisations, sequential execution, one inter-op thread.

    Spinning is off: a deployment runs several sessions (one per part, several nodes in one
    process for the local engine), each with its own intra-op pool; spinning pools starve each
    other and the next part's run (measured: 2x slower at batch 1 on a loaded 2-core machine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 0 if threads is None else int(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return options


WARMUP_RUNS = 3  # per stage, at load (as the profiler's warm-up per part)

# onnxruntime's type names -> numpy's (the manifest's dtypes are numpy names)
ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _show_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else (f'"{d}"' if isinstance(d, str) else str(d)) for d in shape) + "]"


def check_declared(spec: TensorSpec, shape, dtype: str, *, part: str, file, field: str) -> None:
    """Refuse a manifest tensor spec that the part does not declare: a different dtype, rank, or
    size on an axis the part fixes. The manifest must be at least as specific as the part (a
    runtime checks inputs against the manifest only, so a looser spec would let onnxruntime fail
    deep inside a run); symbolic axes of the part (the batch axis) accept any spec.

    ``shape``: the part's dimensions (int, a symbolic name, or None); ``dtype``: a numpy name, or
    the part's own type name when numpy has none."""
    if spec.np_dtype.name != dtype:
        raise FinplanInputError(f"is {spec.dtype!r}, but part {part} declares {spec.name!r} as {dtype}; "
                                "re-run finplan emit", file=file, field=f"{field}.dtype")
    shape = list(shape)
    if len(shape) != len(spec.shape) or any(isinstance(d, int) and d != m for d, m in zip(shape, spec.shape)):
        raise FinplanInputError(f"is {_show_shape(spec.shape)}, but part {part} declares {spec.name!r} with shape "
                                f"{_show_shape(shape)}; re-run finplan emit", file=file, field=f"{field}.shape")


def check_parts_statically(manifest: Manifest, folder: Path) -> None:
    """The load-time checks of ``NodeRuntime`` without onnxruntime and without running anything:
    every part exists, has the listed sha256, and declares the manifest's tensors (names,
    shapes, dtypes). For explaining what is wrong with a manifest before refusing it."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    def declared(value_info) -> tuple[list, str]:
        tensor_type = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
        try:
            dtype = np.dtype(tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        return dims, dtype

    for i, stage in enumerate(manifest.stages):
        data = _part_bytes(manifest, folder, i)
        try:
            model = onnx.load_from_string(data)
        except Exception:  # protobuf's DecodeError and friends: not an ONNX part
            raise FinplanInputError("is not an ONNX model", file=folder / stage.part) from None
        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        inputs = {v.name: v for v in graph.input if v.name not in initializers}
        outputs = {v.name: v for v in graph.output}
        _check_stage_tensors(manifest, i, {k: declared(v) for k, v in inputs.items()},
                             {k: declared(v) for k, v in outputs.items()})


def check_parts(manifest: Manifest, folder: Path) -> None:
    """Every part of the node is there with the sha256 its manifest records (what NodeRuntime
    checks when it loads them), for engines that load parts elsewhere (Ray replicas): a swapped
    part is then named here, at once, not by a replica failing to start."""
    for index in range(len(manifest.stages)):
        _part_bytes(manifest, Path(folder), index)


def _part_bytes(manifest: Manifest, folder: Path, index: int) -> bytes:
    stage = manifest.stages[index]
    path = folder / stage.part
    if not path.is_file():
        raise FinplanInputError(f"part {str(path)!r} is missing", file=manifest.path, field=f"stages[{index}].part")
    data = path.read_bytes()  # hash the very bytes the session is built from
    if sha256_bytes(data) != stage.sha256:
        raise FinplanInputError(f"part {str(path)!r} was altered: its sha256 differs from the manifest's",
                                file=manifest.path, field=f"stages[{index}].sha256")
    return data


def _check_stage_tensors(manifest: Manifest, index: int, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> None:
    """``inputs``/``outputs``: the part's tensors, name -> (shape, numpy dtype name), in order."""
    stage = manifest.stages[index]
    where = f"stages[{index}]"
    if list(inputs) != [t.name for t in stage.inputs] or not {t.name for t in stage.outputs} <= set(outputs):
        raise FinplanInputError(f"the part's inputs {list(inputs)} / outputs {sorted(outputs)} differ from the manifest's",
                                file=manifest.path, field=where)
    for kind, specs, declared in (("inputs", stage.inputs, inputs), ("outputs", stage.outputs, outputs)):
        for j, spec in enumerate(specs):
            shape, dtype = declared[spec.name]
            check_declared(spec, shape, dtype, part=stage.part, file=manifest.path, field=f"{where}.{kind}[{j}]")


def _session_tensors(args) -> dict[str, tuple]:
    return {a.name: (list(a.shape), ORT_DTYPES.get(a.type, a.type)) for a in args}


class NodeRuntime:
    """One node of a deployment folder, ready to run.

    Loading checks the manifest's schema major, that every part exists and has the sha256 the
    manifest lists (a missing or altered part raises FinplanInputError naming file and field),
    and that each onnxruntime session has the inputs and outputs the manifest names, with the
    manifest's shapes and dtypes.
    """

    def __init__(self, folder: Path, *, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        self.node: str = self.manifest.node
        self.input_spec: TensorSpec = self.manifest.input
        # as the node's profile timed its parts (manifest "session"), unless the caller says otherwise
        self.threads, self.threads_how = thread_choice(threads, self.manifest)
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self._sessions = []
        self._runs: list[StageRunner] = []
        options = session_options(self.threads)
        stage_by_input = {s.inputs[0].name: i for i, s in enumerate(self.manifest.stages)}
        for i, stage in enumerate(self.manifest.stages):
            path = self.folder / stage.part
            data = _part_bytes(self.manifest, self.folder, i)
            try:
                session = ort.InferenceSession(data, sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise FinplanInputError(f"onnxruntime cannot load the part ({str(exc).splitlines()[0]})",
                                        file=path) from None
            # names, shapes and dtypes as the session sees them: a manifest that disagrees is refused
            # here, in one line, instead of failing inside onnxruntime at the first run
            _check_stage_tensors(self.manifest, i, _session_tensors(session.get_inputs()),
                                 _session_tensors(session.get_outputs()))
            self._sessions.append(session)
            output_names = [t.name for t in stage.outputs]
            heads = [(e.name, output_names.index(e.output), e.threshold, e.policy) for e in stage.exits]
            nxt = stage.next
            self._runs.append(StageRunner(
                session, stage.inputs[0].name, output_names, heads,
                next_output=None if nxt is None else output_names.index(nxt.tensor),
                next_stage=stage_by_input[nxt.tensor] if nxt is not None and nxt.node == self.node else None))
        self._entries = {e.tensor: e.stage for e in self.manifest.entries}
        # stage index by input tensor, for hops that stay on this node
        self._stage_by_input = stage_by_input
        # per stage: its part, blocks and exit names, for the per-call counts
        self._stage_info = [(s.part, s.blocks, tuple(e.name for e in s.exits)) for s in self.manifest.stages]
        self._accepted: dict[str, tuple] = {}  # entry -> (shape, dtype) last checked, so a stream is checked once
        self.warm_up()

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Run every stage ``runs`` times on zeros (batch 1), as the profiler warms up each part
        before timing it: the first runs of a session allocate its memory arenas and pick kernels,
        a one-time cost that is not the steady state the plan predicts. Stages whose input has a
        symbolic size other than the batch axis are skipped (no shape to make zeros of)."""
        for i, stage in enumerate(self.manifest.stages):
            spec = stage.inputs[0]
            dims = [1 if axis == 0 else dim for axis, dim in enumerate(spec.shape)]
            if not all(isinstance(dim, int) for dim in dims):
                continue
            feed = {spec.name: np.zeros(dims, dtype=spec.np_dtype)}
            for _ in range(runs):
                self._sessions[i].run(None, feed)

    # ------------------------------------------------------------------ introspection

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.manifest.stages

    def entry_spec(self, entry: str) -> TensorSpec:
        if entry not in self._entries:
            raise FinplanInputError(f"node {self.node!r} has no entry {entry!r} (entries: {', '.join(self._entries)})",
                                    file=self.manifest.path, field="entries")
        return self.manifest.stages[self._entries[entry]].inputs[0]

    def check_input(self, tensor: np.ndarray, *, entry: str) -> None:
        """Raise FinplanInputError naming shape and dtype when ``tensor`` does not fit ``entry``."""
        if not isinstance(tensor, np.ndarray):
            raise FinplanInputError(f"expected a numpy array for {entry!r}, got {type(tensor).__name__}", field="input")
        self.entry_spec(entry).check(tensor, field=f"input of node {self.node!r}")

    # ------------------------------------------------------------------ running

    def run_stage(self, index: int, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs of stage ``index`` on ``tensor`` (no exit decision). For verification."""
        stage = self.manifest.stages[index]
        values = self._sessions[index].run([t.name for t in stage.outputs], {stage.inputs[0].name: tensor})
        return dict(zip((t.name for t in stage.outputs), values))

    def stage_for(self, tensor_name: str) -> int:
        return self._stage_by_input[tensor_name]

    def process(self, tensor: np.ndarray, *, entry: str) -> NodeResult:
        """Run the stages from ``entry`` on, exiting samples as soon as an exit head is confident.

        Samples that exit leave the batch; the rest continue together to the next stage (on
        this node) or are returned in ``forward`` for the next node. Downstream parts run only
        on the remaining samples, and not at all when none remain.
        """
        # The input is checked in full once per (entry, shape, dtype): a stream of same-shaped
        # batches pays one tuple comparison per call.
        if type(tensor) is not np.ndarray or self._accepted.get(entry) != (tensor.shape, tensor.dtype):
            self.check_input(tensor, entry=entry)
            self._accepted[entry] = (tensor.shape, tensor.dtype)
        clock = time.perf_counter
        start = clock()
        out = run_chain(self._runs, self._entries[entry], tensor, start, clock)
        busy_s = clock() - start
        info = self._stage_info
        stage_samples = []
        block_samples: dict[str, int] = {}
        exit_samples: dict[str, int] = {}
        for index, count in out.stage_samples:
            part, blocks, exits = info[index]
            stage_samples.append((part, count))
            for block in blocks:
                block_samples[block] = block_samples.get(block, 0) + count
            for exit_name in exits:  # the head ran inside the part on every sample of the batch
                exit_samples[exit_name] = exit_samples.get(exit_name, 0) + count
        forward = None
        if out.alive:
            nxt = self.manifest.stages[out.last].next
            forward = Forward(np.asarray(out.alive, dtype=np.int64), out.remaining, nxt.tensor, nxt.node)
        return NodeResult(
            node=self.node, batch_size=tensor.shape[0], exit_names=out.exits, prediction_list=out.predictions,
            confidence_list=out.confidences, logits=out.logits, offset_list=out.offsets, forward=forward,
            busy_s=busy_s, bytes_in=int(tensor.nbytes), bytes_out=0 if forward is None else int(forward.tensor.nbytes),
            stage_samples=stage_samples, block_samples=block_samples, exit_samples=exit_samples)

    def __repr__(self) -> str:
        return f"NodeRuntime(node={self.node!r}, stages={len(self.manifest.stages)}, folder={str(self.folder)!r})"

