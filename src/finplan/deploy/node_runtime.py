"""Run one node of a deployment: its ONNX parts, its exit heads, exit-or-forward per sample.

``NodeRuntime`` knows nothing about engines or transports: it takes a batch for one of the
node's entries and returns which samples exited here and which must be forwarded (and where).
The local executor calls it in a loop; the Ray Serve layer wraps one instance per deployment.

Stable API (the Ray Serve layer depends on it):
    NodeRuntime(folder: Path, *, threads: int | None = None, providers: list[str] | None = None)
    .node: str    .input_specs: tuple[TensorSpec, ...]    .manifest: Manifest
    .process(tensors: dict[str, np.ndarray] | np.ndarray, *, entry: str) -> NodeResult
A stage works on an environment of named tensors: what arrives at an entry (the live set of that
cut: several tensors when a mask or a skip crosses it), the part's outputs added to it, and the
next cut's live set handed on (``Forward.tensors``). A bare array stands for a one-tensor entry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from finplan.deploy.manifest import Manifest, Stage, TensorSpec, load_manifest
# check_parts: re-exported, the Ray layer imports it from here
from finplan.deploy.part_checks import check_parts, check_stage_tensors, part_bytes, session_tensors  # noqa: F401
from finplan.errors import FinplanInputError
from finplan.exit_policy import StageRunner, run_chain

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass
class Forward:
    """The samples that leave this node without an answer: send ``tensors`` to ``node``."""
    indices: np.ndarray  # positions in the batch given to ``process`` (int64)
    tensors: dict[str, np.ndarray]  # the live set, the remaining samples only, in the order of ``indices``
    tensor_name: str     # the destination's entry (its key tensor)
    node: str

    @property
    def tensor(self) -> np.ndarray:
        """The entry's key tensor (the only one of a single-tensor cut)."""
        return self.tensors[self.tensor_name]

    @property
    def nbytes(self) -> int:
        """Bytes sent: every tensor of the live set."""
        return sum(int(array.nbytes) for array in self.tensors.values())


class Answers:
    """Per-sample answers kept as Python lists (``prediction_list``, ``confidence_list``: what
    the hot path appends to); the numpy arrays are built on first access."""

    prediction_list: list[int]
    confidence_list: list[float]

    @cached_property
    def predictions(self) -> np.ndarray:
        """int64 [N]"""
        return np.asarray(self.prediction_list, dtype=np.int64)

    @cached_property
    def confidences(self) -> np.ndarray:
        """float64 [N]"""
        return np.asarray(self.confidence_list, dtype=np.float64)


class NodeResult(Answers):
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
        self.bytes_in = bytes_in         # bytes of the tensors received
        self.bytes_out = bytes_out       # bytes of the forwarded tensors (0 when nothing is forwarded)
        self.stage_samples = stage_samples if stage_samples is not None else []  # (part, samples it ran on), in order
        self.block_samples = block_samples if block_samples is not None else {}  # block -> samples it ran on
        self.exit_samples = exit_samples if exit_samples is not None else {}     # exit head -> samples it ran on

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
        self.input_specs: tuple[TensorSpec, ...] = self.manifest.inputs
        # as the node's profile timed its parts (manifest "session"), unless the caller says otherwise
        self.threads, self.threads_how = thread_choice(threads, self.manifest)
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self._sessions = []
        self._runs: list[StageRunner] = []
        options = session_options(self.threads)
        for i, stage in enumerate(self.manifest.stages):
            path = self.folder / stage.part
            data = part_bytes(self.manifest, self.folder, i)
            try:
                session = ort.InferenceSession(data, sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise FinplanInputError(f"onnxruntime cannot load the part ({str(exc).splitlines()[0]})",
                                        file=path) from None
            # names, shapes and dtypes as the session sees them: a manifest that disagrees is refused
            # here, in one line, instead of failing inside onnxruntime at the first run
            check_stage_tensors(self.manifest, i, session_tensors(session.get_inputs()),
                                 session_tensors(session.get_outputs()))
            self._sessions.append(session)
            output_names = [t.name for t in stage.outputs]
            heads = [(e.name, output_names.index(e.output), e.threshold, e.policy) for e in stage.exits]
            nxt = stage.next
            self._runs.append(StageRunner(
                session, [t.name for t in stage.inputs], output_names, heads,
                next_output=None if nxt is None or nxt.tensor not in output_names else output_names.index(nxt.tensor),
                next_stage=i + 1 if nxt is not None and nxt.node == self.node else None,  # checked by the manifest
                carry=[] if nxt is None else list(nxt.names)))
        self._entries = {e.tensor: e.stage for e in self.manifest.entries}
        self._entry_specs = {e.tensor: e.tensors for e in self.manifest.entries}
        # per stage: its part, blocks and exit names, for the per-call counts
        self._stage_info = [(s.part, s.blocks, tuple(e.name for e in s.exits)) for s in self.manifest.stages]
        self._accepted: dict[str, tuple] = {}  # entry -> shapes and dtypes last checked, so a stream is checked once
        self.warm_up()

    @property
    def input_spec(self) -> TensorSpec:
        """The first entry's tensor of a single-input node (kept for callers written before several inputs)."""
        return self.input_specs[0]

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Run every stage ``runs`` times on zeros (batch 1), as the profiler warms up each part
        before timing it: the first runs of a session allocate its memory arenas and pick kernels,
        a one-time cost that is not the steady state the plan predicts. Stages whose input has a
        symbolic size other than the batch axis are skipped (no shape to make zeros of)."""
        for i, stage in enumerate(self.manifest.stages):
            feed = {}
            for spec in stage.inputs:
                dims = [1 if axis == 0 else dim for axis, dim in enumerate(spec.shape)]
                if not all(isinstance(dim, int) for dim in dims):
                    break
                feed[spec.name] = np.zeros(dims, dtype=spec.np_dtype)
            else:
                for _ in range(runs):
                    self._sessions[i].run(None, feed)

    # ------------------------------------------------------------------ introspection

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.manifest.stages

    def entry_specs(self, entry: str) -> tuple[TensorSpec, ...]:
        """The tensors entry ``entry`` receives (the live set of its cut)."""
        if entry not in self._entries:
            raise FinplanInputError(f"node {self.node!r} has no entry {entry!r} (entries: {', '.join(self._entries)})",
                                    file=self.manifest.path, field="entries")
        return self._entry_specs[entry]

    def entry_spec(self, entry: str) -> TensorSpec:
        """The key tensor of entry ``entry``."""
        return next(t for t in self.entry_specs(entry) if t.name == entry)

    def environment(self, tensors, *, entry: str) -> dict[str, np.ndarray]:
        """``tensors`` as the name -> array dict of ``entry`` (a bare array for a one-tensor entry)."""
        specs = self.entry_specs(entry)
        if isinstance(tensors, dict):
            return tensors
        if len(specs) != 1:
            raise FinplanInputError(f"entry {entry!r} of node {self.node!r} takes {len(specs)} named tensors "
                                    f"({', '.join(t.name for t in specs)}); got one unnamed array", field="input")
        return {specs[0].name: tensors}

    def check_input(self, tensors, *, entry: str) -> None:
        """Raise FinplanInputError naming the tensor, shape and dtype when ``tensors`` do not fit ``entry``:
        a missing or unknown name, a shape or dtype that is not the spec's, different sample counts."""
        specs = self.entry_specs(entry)
        env = tensors if isinstance(tensors, dict) else None
        if env is None:
            if not isinstance(tensors, np.ndarray):
                raise FinplanInputError(f"expected a numpy array for {entry!r}, got {type(tensors).__name__}",
                                        field="input")
            env = self.environment(tensors, entry=entry)
        where = f"input of node {self.node!r}"
        names = [t.name for t in specs]
        for name in env:
            if name not in names:
                raise FinplanInputError(f"tensor {name!r} is not one entry {entry!r} takes (expected: {', '.join(names)})",
                                        field=where)
        counts = set()
        for spec in specs:
            if spec.name not in env:
                raise FinplanInputError(f"tensor {spec.name!r} is missing (entry {entry!r} takes {', '.join(names)})",
                                        field=where)
            array = env[spec.name]
            if not isinstance(array, np.ndarray):
                raise FinplanInputError(f"expected a numpy array for {spec.name!r}, got {type(array).__name__}",
                                        field=where)
            spec.check(array, field=where)
            counts.add(array.shape[0])
        if len(counts) > 1:
            listed = ", ".join(f"{n} {env[n].shape[0]}" for n in names)
            raise FinplanInputError(f"tensors hold different numbers of samples ({listed}); expected one batch",
                                    field=where)

    # ------------------------------------------------------------------ running

    def run_stage(self, index: int, tensors) -> dict[str, np.ndarray]:
        """All outputs of stage ``index`` on ``tensors`` (what it receives, or a bare array for a
        one-input stage; no exit decision). For verification."""
        stage = self.manifest.stages[index]
        env = tensors if isinstance(tensors, dict) else {stage.inputs[0].name: tensors}
        values = self._sessions[index].run([t.name for t in stage.outputs], {t.name: env[t.name] for t in stage.inputs})
        return dict(zip((t.name for t in stage.outputs), values))

    def stage_for(self, entry: str) -> int:
        """The stage entry ``entry`` feeds."""
        self.entry_specs(entry)
        return self._entries[entry]

    def process(self, tensors, *, entry: str) -> NodeResult:
        """Run the stages from ``entry`` on ``tensors`` (name -> array: the entry's live set; or a bare
        array for a one-tensor entry), exiting samples as soon as an exit head is confident.

        Samples that exit leave the batch; the rest continue together to the next stage (on
        this node) or are returned in ``forward`` for the next node. Downstream parts run only
        on the remaining samples, and not at all when none remain.
        """
        # The input is checked in full once per (entry, shapes, dtypes): a stream of same-shaped
        # batches pays one tuple comparison per call.
        if type(tensors) is np.ndarray:
            signature = (tensors.shape, tensors.dtype)
        elif isinstance(tensors, dict):
            signature = tuple((name, getattr(a, "shape", None), getattr(a, "dtype", None), type(a))
                              for name, a in tensors.items())
        else:
            signature = None
        if signature is None or self._accepted.get(entry) != signature:
            self.check_input(tensors, entry=entry)
            self._accepted[entry] = signature
        env = tensors if type(tensors) is not np.ndarray else {self._entry_specs[entry][0].name: tensors}
        clock = time.perf_counter
        start = clock()
        out = run_chain(self._runs, self._entries[entry], env, start, clock)
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
        batch = next(iter(env.values())).shape[0]
        return NodeResult(
            node=self.node, batch_size=batch, exit_names=out.exits, prediction_list=out.predictions,
            confidence_list=out.confidences, logits=out.logits, offset_list=out.offsets, forward=forward,
            busy_s=busy_s, bytes_in=sum(int(a.nbytes) for a in env.values()),
            bytes_out=0 if forward is None else forward.nbytes,
            stage_samples=stage_samples, block_samples=block_samples, exit_samples=exit_samples)

    def __repr__(self) -> str:
        return f"NodeRuntime(node={self.node!r}, stages={len(self.manifest.stages)}, folder={str(self.folder)!r})"

