"""What the profiler times besides the parts: IO-bound runners, onnxruntime's per-call cost and
one runtime stage (``stage_overhead_s``), each a zero-argument callable for ``time_round_robin``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from finplan.contract import Contract
from finplan.exit_policy import StageRunner, run_chain
from finplan.onnx_graph import extract_part
from finplan.profiler.timing import SessionConfig, make_session


def io_runner(session, feed: dict) -> Callable[[], object]:
    """One run of ``session`` on ``feed``, through an IO binding: inputs are bound once, so a
    timed call is the part's work plus onnxruntime's own dispatch, not Python's feed handling
    (about 3 us less per call than ``session.run`` on a 2-core VM)."""
    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for output in session.get_outputs():
        binding.bind_output(output.name)

    def run():
        session.run_with_iobinding(binding)
    return run


def overhead_probe(config: SessionConfig) -> Callable[[], object]:
    """A run of a session that only copies a 1-element tensor: its latency is onnxruntime's per-call cost."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "call_overhead",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = make_session(model, config, what="the call-overhead probe")
    return io_runner(session, {"x": np.zeros(1, np.float32)})


@dataclass
class StageProbe:
    """A stage as finplan's runtime would emit it (the first blocks and the first exit head
    fused into one part), run through the runtime's own stage code."""
    session: object
    input_names: list[str]
    output_names: list[str]
    exit_name: str
    policy: str
    parts: tuple[str, ...]  # the profiled parts it fuses (blocks, then the exit)

    def runner(self, x: dict[str, np.ndarray]) -> Callable[[], object]:
        # threshold 0: every sample leaves, after the same scoring and decision as an active exit
        stages = [StageRunner(self.session, self.input_names if len(self.input_names) > 1 else self.input_names[0],
                              self.output_names, [(self.exit_name, len(self.output_names) - 1, 0.0, self.policy)],
                              next_output=0, next_stage=None)]
        # one array for a single-input stage (the runtime's fast path), else the named tensors
        tensor = (np.ascontiguousarray(x[self.input_names[0]]) if len(self.input_names) == 1
                  else {name: np.ascontiguousarray(x[name]) for name in self.input_names})
        clock = time.perf_counter

        def run() -> float:  # seconds from entry to the exit decision, as the runtime clocks a sample
            return run_chain(stages, 0, tensor, clock(), clock).offsets[0]
        return run


def stage_probe(inferred: onnx.ModelProto, contract: Contract, config: SessionConfig, policies: list[str],
                path: Path) -> StageProbe | None:
    """The probe of ``stage_overhead_s``: input -> (first exit's block output, first exit's output);
    ``policies``: each exit's policy (contract order)."""
    if not contract.exits:
        return None
    exit_ = contract.exits[0]
    last = contract.block_index(exit_.after)
    block_out = contract.blocks[last].output
    inputs = list(contract.inputs)
    part = extract_part(inferred, inputs, [block_out, exit_.output], name="stage_probe")
    session = make_session(part, config, what="the runtime-stage probe", file=path)
    parts = tuple(b.name for b in contract.blocks[:last + 1]) + (exit_.name,)
    return StageProbe(session, inputs, [block_out, exit_.output], exit_.name, policies[0], parts)
