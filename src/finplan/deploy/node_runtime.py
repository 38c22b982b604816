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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finplan.deploy.manifest import Manifest, Stage, TensorSpec, load_manifest, sha256_bytes
from finplan.deploy.policy import exits_here, max_softmax
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
    changing between versions: all graph optimisations, sequential execution, one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 0 if threads is None else int(threads)
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return options


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
        self.check_input(tensor, entry=entry)
        start = time.perf_counter()
        n = tensor.shape[0]
        exit_names: list[str | None] = [None] * n
        predictions = np.full(n, -1, dtype=np.int64)
        confidences = np.full(n, np.nan, dtype=np.float64)
        logits: list[np.ndarray | None] = [None] * n
        offsets = np.full(n, np.nan, dtype=np.float64)
        alive = np.arange(n, dtype=np.int64)  # batch positions still running
        current = tensor
        stage_index = self._entries[entry]
        stage_samples: list[tuple[str, int]] = []
        block_samples: dict[str, int] = {}
        exit_samples: dict[str, int] = {}
        forward = None
        while alive.size:
            stage = self.manifest.stages[stage_index]
            outputs = self.run_stage(stage_index, current)
            stage_samples.append((stage.part, int(alive.size)))
            for block in stage.blocks:
                block_samples[block] = block_samples.get(block, 0) + int(alive.size)
            keep = np.ones(alive.size, dtype=bool)  # positions in ``alive`` that go on
            for exit_ in stage.exits:
                exit_samples[exit_.name] = exit_samples.get(exit_.name, 0) + int(keep.sum())
                head = outputs[exit_.output]
                confidence, predicted = max_softmax(head)
                leaving = keep & exits_here(confidence, exit_.threshold)
                now = time.perf_counter() - start
                for position in np.flatnonzero(leaving):
                    sample = int(alive[position])
                    exit_names[sample] = exit_.name
                    predictions[sample] = predicted[position]
                    confidences[sample] = confidence[position]
                    logits[sample] = head[position].copy()
                    offsets[sample] = now
                keep &= ~leaving
            if not keep.any() or stage.next is None:
                alive = alive[keep]
                break
            remaining = outputs[stage.next.tensor]
            if not keep.all():
                remaining = remaining[keep]
            alive = alive[keep]
            if stage.next.node == self.node:
                current, stage_index = np.ascontiguousarray(remaining), self._stage_by_input[stage.next.tensor]
                continue
            forward = Forward(alive, np.ascontiguousarray(remaining), stage.next.tensor, stage.next.node)
            break
        busy_s = time.perf_counter() - start
        if forward is None and alive.size:  # a manifest without a final exit would lose samples; parse_manifest forbids it
            raise RuntimeError(f"node {self.node!r}: {alive.size} samples reached the end of the chain without exiting")
        return NodeResult(
            node=self.node, batch_size=n, exit_names=exit_names, predictions=predictions, confidences=confidences,
            logits=logits, exit_offset_s=offsets, forward=forward, busy_s=busy_s, bytes_in=int(tensor.nbytes),
            bytes_out=0 if forward is None else int(forward.tensor.nbytes), stage_samples=stage_samples,
            block_samples=block_samples, exit_samples=exit_samples)

    def __repr__(self) -> str:
        return f"NodeRuntime(node={self.node!r}, stages={len(self.manifest.stages)}, folder={str(self.folder)!r})"

