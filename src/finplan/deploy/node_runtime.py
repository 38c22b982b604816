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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finplan.deploy.manifest import Manifest, Stage, TensorSpec, load_manifest, sha256_bytes
from finplan.deploy.policy import SCORERS, exits_here
from finplan.errors import FinplanInputError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


@dataclass
class Forward:
    """The samples that leave this node without an answer: send ``tensor`` to ``node``."""
    indices: np.ndarray  # positions in the batch given to ``process`` (int64)
    tensor: np.ndarray   # the remaining samples only, in the order of ``indices``
    tensor_name: str     # the destination's entry tensor
    node: str


@dataclass
class NodeResult:
    """What one ``process`` call did, per sample of its batch.

    For sample i: ``exit_names[i]`` is the exit it took here, or None when it was forwarded;
    then ``predictions[i]`` is -1, ``confidences[i]`` NaN and ``logits[i]`` None.
    """
    node: str
    batch_size: int
    exit_names: list[str | None]
    predictions: np.ndarray         # int64 [N]
    confidences: np.ndarray         # float64 [N]
    logits: list[np.ndarray | None]
    exit_offset_s: np.ndarray       # float64 [N]: seconds from the start of process to the sample's exit decision (NaN if forwarded)
    forward: Forward | None
    busy_s: float                   # wall time spent in this call (parts and exit heads)
    bytes_in: int                   # bytes of the tensor received
    bytes_out: int                  # bytes of the forwarded tensor (0 when nothing is forwarded)
    stage_samples: list[tuple[str, int]] = field(default_factory=list)  # (part, samples it ran on), in order
    block_samples: dict[str, int] = field(default_factory=dict)         # block -> samples it ran on
    exit_samples: dict[str, int] = field(default_factory=dict)          # exit head -> samples it ran on

    @property
    def exited(self) -> np.ndarray:
        return np.array([name is not None for name in self.exit_names], dtype=bool)


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


@dataclass(frozen=True)
class _StageRun:
    """What ``process`` needs of one stage, resolved once at load time."""
    session: object
    part: str
    input_name: str
    output_names: list[str]
    blocks: tuple[str, ...]
    exits: tuple[tuple[str, int, float | None, object], ...]  # (exit name, output index, threshold, scorer)
    next: object
    next_output_index: int | None


class NodeRuntime:
    """One node of a deployment folder, ready to run.

    Loading checks the manifest's schema major, that every part exists and has the sha256 the
    manifest lists (a missing or altered part raises FinplanInputError naming file and field),
    and that each onnxruntime session has the inputs and outputs the manifest names.
    """

    def __init__(self, folder: Path, *, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        self.node: str = self.manifest.node
        self.input_spec: TensorSpec = self.manifest.input
        self.threads = threads
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self._sessions = []
        self._runs: list[_StageRun] = []
        options = session_options(threads)
        for i, stage in enumerate(self.manifest.stages):
            path = self.folder / stage.part
            field = f"stages[{i}].part"
            if not path.is_file():
                raise FinplanInputError(f"part {str(path)!r} is missing", file=self.manifest.path, field=field)
            data = path.read_bytes()  # hash the very bytes the session is built from
            if sha256_bytes(data) != stage.sha256:
                raise FinplanInputError(f"part {str(path)!r} was altered: its sha256 differs from the manifest's",
                                        file=self.manifest.path, field=f"stages[{i}].sha256")
            try:
                session = ort.InferenceSession(data, sess_options=options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise FinplanInputError(f"onnxruntime cannot load the part ({str(exc).splitlines()[0]})",
                                        file=path) from None
            got_in = [x.name for x in session.get_inputs()]
            got_out = {x.name for x in session.get_outputs()}
            if got_in != [t.name for t in stage.inputs] or not {t.name for t in stage.outputs} <= got_out:
                raise FinplanInputError(f"the part's inputs {got_in} / outputs {sorted(got_out)} differ from the manifest's",
                                        file=self.manifest.path, field=f"stages[{i}]")
            self._sessions.append(session)
            output_names = [t.name for t in stage.outputs]
            self._runs.append(_StageRun(
                session=session, part=stage.part, input_name=stage.inputs[0].name, output_names=output_names,
                blocks=stage.blocks, exits=tuple((e.name, output_names.index(e.output), e.threshold, SCORERS[e.policy]) for e in stage.exits),
                next=stage.next, next_output_index=None if stage.next is None else output_names.index(stage.next.tensor)))
        self._entries = {e.tensor: e.stage for e in self.manifest.entries}
        # stage index by input tensor, for hops that stay on this node
        self._stage_by_input = {s.inputs[0].name: i for i, s in enumerate(self.manifest.stages)}

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
        # Plain Python lists per sample, converted once at the end: at batch 1 numpy's per-call
        # cost on tiny arrays would otherwise rival the model's own run time.
        self.check_input(tensor, entry=entry)
        clock = time.perf_counter
        start = clock()
        n = tensor.shape[0]
        exit_names: list[str | None] = [None] * n
        predictions = [-1] * n
        confidences = [math.nan] * n
        logits: list[np.ndarray | None] = [None] * n
        offsets = [math.nan] * n
        alive = list(range(n))  # batch positions of the samples in ``current``
        current = tensor
        stage_index = self._entries[entry]
        stage_samples: list[tuple[str, int]] = []
        block_samples: dict[str, int] = {}
        exit_samples: dict[str, int] = {}
        forward = None
        while alive:
            run = self._runs[stage_index]
            values = run.session.run(run.output_names, {run.input_name: current})
            count = len(alive)
            stage_samples.append((run.part, count))
            for block in run.blocks:
                block_samples[block] = block_samples.get(block, 0) + count
            staying = range(count)  # positions in ``current`` still undecided
            for exit_name, output_index, threshold, scorer in run.exits:
                # the head ran inside the part on every sample of the batch: that is what it cost
                exit_samples[exit_name] = exit_samples.get(exit_name, 0) + count
                if not staying:
                    continue
                head = values[output_index]
                confidence, predicted = scorer(head)
                passed = None if threshold is None else exits_here(confidence, threshold).tolist()
                confidence_list, predicted_list = confidence.tolist(), predicted.tolist()
                now = clock() - start
                undecided = []
                for local in staying:
                    if passed is None or passed[local]:
                        sample = alive[local]
                        exit_names[sample] = exit_name
                        predictions[sample] = predicted_list[local]
                        confidences[sample] = confidence_list[local]
                        logits[sample] = head[local]
                        offsets[sample] = now
                    else:
                        undecided.append(local)
                staying = undecided
            if not staying:
                alive = []
                break
            if run.next is None:  # parse_manifest forbids a last stage without a final exit
                raise RuntimeError(f"node {self.node!r}: {len(staying)} samples reached the end of the chain without exiting")
            remaining = values[run.next_output_index]
            if len(staying) < count:
                remaining = remaining[list(staying)]  # per-sample split: only these go on
            alive = [alive[local] for local in staying]
            if run.next.node == self.node:
                current, stage_index = np.ascontiguousarray(remaining), self._stage_by_input[run.next.tensor]
                continue
            forward = Forward(np.asarray(alive, dtype=np.int64), np.ascontiguousarray(remaining), run.next.tensor,
                              run.next.node)
            break
        busy_s = clock() - start
        return NodeResult(
            node=self.node, batch_size=n, exit_names=exit_names, predictions=np.asarray(predictions, dtype=np.int64),
            confidences=np.asarray(confidences, dtype=np.float64), logits=logits,
            exit_offset_s=np.asarray(offsets, dtype=np.float64), forward=forward, busy_s=busy_s,
            bytes_in=int(tensor.nbytes), bytes_out=0 if forward is None else int(forward.tensor.nbytes),
            stage_samples=stage_samples, block_samples=block_samples, exit_samples=exit_samples)

    def __repr__(self) -> str:
        return f"NodeRuntime(node={self.node!r}, stages={len(self.manifest.stages)}, folder={str(self.folder)!r})"

