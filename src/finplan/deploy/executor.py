"""The local engine: every node of a deployment in this process, chained by their ``next`` hops.

``LocalExecutor`` runs inputs through the chain exactly as the manifests say (exit or
forward, per sample), optionally waits for each transfer as long as the network's link model
predicts (``emulate_links``, with ``emulate_delay``: accurate to about a microsecond, where
``time.sleep`` overshoots by tens of microseconds), and collects ``Measurements``: the engine-independent record
that ``report.build_report`` compares with the plan. Another engine (Ray Serve) produces the
same ``Measurements`` and gets the same report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from finplan.deploy.deployment import Deployment, load_deployment
from finplan.deploy.node_runtime import Answers, NodeResult, NodeRuntime
from finplan.errors import FinplanInputError


def link_key(src: str, dst: str) -> str:
    return f"{src}->{dst}"


# time.sleep wakes up late by tens of microseconds (70-90 us measured on a loaded 2-core
# machine, more under load), which would swamp the link model's sub-microsecond transfers.
# So emulate_delay sleeps only for the bulk of a delay, ending this margin before the
# deadline, and spins on perf_counter for the rest; delays below the margin are spun entirely.
SLEEP_MARGIN_S = 2e-3


def emulate_delay(delay_s: float, *, start: float | None = None) -> float:
    """Wait ``delay_s`` seconds as accurately as this process can; returns the seconds that
    actually elapsed (>= ``delay_s``: the wait never ends early).

    ``start`` (a ``time.perf_counter`` reading) counts time already waited since then, e.g. an
    ``asyncio.sleep`` of the bulk in the Ray layer, which then spins the rest here.
    """
    if delay_s <= 0:
        return 0.0
    clock = time.perf_counter
    start = clock() if start is None else start
    bulk_s = delay_s - SLEEP_MARGIN_S - (clock() - start)
    if bulk_s > 0:
        time.sleep(bulk_s)
    # compare elapsed time, not start + delay_s with now: the sum can round below the deadline
    elapsed = clock() - start
    while elapsed < delay_s:
        elapsed = clock() - start
    return elapsed


@dataclass
class Measurements:
    """What one run of a deployment measured; every number is per run (totals), not per sample,
    unless its name says so."""
    engine: str
    application: str
    n_samples: int
    batch_size: int
    emulate_links: bool
    exit_names: list[str]                  # per sample
    predictions: np.ndarray                # int64 per sample
    confidences: np.ndarray                # float64 per sample
    labels: np.ndarray | None              # int64 per sample, when the data has labels
    latency_s: np.ndarray                  # end-to-end per sample: batch start to its exit decision
    node_busy_s: dict[str, float]          # total busy time per node
    node_calls: dict[str, int]             # process() calls per node
    block_samples: dict[str, dict[str, int]]  # node -> block -> samples it ran on
    exit_samples: dict[str, dict[str, int]]   # node -> exit head -> samples it ran on
    link_bytes: dict[str, int]             # "a->b" -> bytes sent in total
    link_samples: dict[str, int]           # "a->b" -> samples sent
    link_delay_s: dict[str, float]         # "a->b" -> intended emulated delay in total: the link model's (0 without emulation)
    wall_s: float
    engine_overhead_s: dict[str, float] = field(default_factory=dict)  # engine-specific (e.g. per-hop cost)
    threads: int | dict | None = None  # as given; or per node, as the manifests (profiles) set them
    threads_how: dict[str, str] | None = None  # node -> how its thread count was chosen (thread_choice)
    # "a->b" -> delay that actually elapsed in total while emulating; None: the engine does not record it
    link_delay_actual_s: dict[str, float] | None = None
    # "a->b" -> tensor name -> bytes sent in total (the live set, tensor by tensor); empty: not recorded
    link_tensor_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    # how the engine ran, in words (e.g. Ray Serve's mode and batching); None: nothing to say
    engine_mode: str | None = None
    # what went wrong and was recovered during the run (e.g. an actor died, the graph rebuilt)
    engine_events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "engine": self.engine, "application": self.application, "samples": self.n_samples,
            "batch_size": self.batch_size, "links_emulated": self.emulate_links, "threads": self.threads,
            "threads_how": self.threads_how,
            "node_busy_s": self.node_busy_s, "node_calls": self.node_calls, "block_samples": self.block_samples,
            "exit_samples": self.exit_samples, "link_bytes": self.link_bytes, "link_samples": self.link_samples,
            "link_delay_s": self.link_delay_s, "link_delay_actual_s": self.link_delay_actual_s,
            "link_tensor_bytes": self.link_tensor_bytes,
            "wall_s": self.wall_s, "engine_overhead_s": self.engine_overhead_s, "engine_mode": self.engine_mode,
            "engine_events": list(self.engine_events),
        }


class BatchOutcome(Answers):
    """One batch's answers, per sample. Kept as Python lists (``prediction_list``,
    ``confidence_list``, ``latency_list``); the numpy arrays are built on first access."""

    def __init__(self, exit_names: list[str], prediction_list: list[int], confidence_list: list[float],
                 logits: list[np.ndarray], latency_list: list[float], results: list[NodeResult]):
        self.exit_names = exit_names
        self.prediction_list = prediction_list
        self.confidence_list = confidence_list
        self.logits = logits
        self.latency_list = latency_list  # end-to-end per sample: batch start to its exit decision
        self.results = results            # every process() call, in order (for tests and tracing)

    @cached_property
    def latency_s(self) -> np.ndarray:
        return np.asarray(self.latency_list, dtype=np.float64)


class LocalExecutor:
    """All nodes of a deployment folder in this process."""

    def __init__(self, folder: str | Path, *, threads: int | None = None, emulate_links: bool = False,
                 providers: list[str] | None = None):
        self.deployment: Deployment = load_deployment(folder)
        self.threads = threads
        self.emulate_links = emulate_links
        self.runtimes: dict[str, NodeRuntime] = {}
        for node in self.deployment.nodes:
            runtime = NodeRuntime(self.deployment.node_folder(node), threads=threads, providers=providers)
            if runtime.manifest.model_hash != self.deployment.model_hash:
                raise FinplanInputError(f"is for model hash {runtime.manifest.model_hash!r}, the deployment for "
                                        f"{self.deployment.model_hash!r}", file=runtime.manifest.path, field="model.hash")
            self.runtimes[node] = runtime
        entry = self.runtimes[self.deployment.entry_node]
        self.input_specs = entry.input_specs  # the graph inputs, in graph order
        self.input_spec = self.input_specs[0]
        self._entry_name = entry.manifest.entries[0].tensor
        # check every hop now, so a broken folder fails before any input runs
        for node, runtime in self.runtimes.items():
            for i, stage in enumerate(runtime.stages):
                if stage.next is not None and stage.next.node != node:
                    if stage.next.node not in self.runtimes:
                        raise FinplanInputError(f"sends to node {stage.next.node!r}, which the deployment does not have",
                                                file=runtime.manifest.path, field=f"stages[{i}].next.node")
                    self.deployment.link(node, stage.next.node)
        if self.deployment.source != self.deployment.entry_node:
            self.deployment.link(self.deployment.source, self.deployment.entry_node)
        self._reset()

    def _reset(self) -> None:
        self.node_busy_s = {n: 0.0 for n in self.runtimes}
        self.node_calls = {n: 0 for n in self.runtimes}
        self.block_samples: dict[str, dict[str, int]] = {n: {} for n in self.runtimes}
        self.exit_samples: dict[str, dict[str, int]] = {n: {} for n in self.runtimes}
        self.link_bytes: dict[str, int] = {}
        self.link_samples: dict[str, int] = {}
        self.link_delay_s: dict[str, float] = {}
        self.link_delay_actual_s: dict[str, float] = {}
        self.link_tensor_bytes: dict[str, dict[str, int]] = {}

    def _transfer(self, src: str, dst: str, tensors: dict[str, np.ndarray]) -> None:
        """Count (and with emulation, wait for) one transfer of ``tensors``: bytes are their nbytes, summed."""
        key = link_key(src, dst)
        per_tensor = self.link_tensor_bytes.setdefault(key, {})
        nbytes = 0
        for name, array in tensors.items():
            size = int(array.nbytes)
            per_tensor[name] = per_tensor.get(name, 0) + size
            nbytes += size
        samples = next(iter(tensors.values())).shape[0]
        self.link_bytes[key] = self.link_bytes.get(key, 0) + nbytes
        self.link_samples[key] = self.link_samples.get(key, 0) + samples
        delay = actual = 0.0
        if self.emulate_links:
            delay = self.deployment.link(src, dst).time_s(nbytes)
            actual = emulate_delay(delay)
        self.link_delay_s[key] = self.link_delay_s.get(key, 0.0) + delay
        self.link_delay_actual_s[key] = self.link_delay_actual_s.get(key, 0.0) + actual

    def inputs_of(self, x) -> dict[str, np.ndarray]:
        """``x`` as the entry's name -> array dict (a bare array stands for a single-input model)."""
        return x if isinstance(x, dict) else self.runtimes[self.deployment.entry_node].environment(x, entry=self._entry_name)

    def run_batch(self, x) -> BatchOutcome:
        """One batch (name -> array per graph input, or one array for a single-input model) through
        the chain; samples leave at their exit, the rest go on together with their live set."""
        # Python lists per sample (numpy only when asked): at batch 1 this loop is the whole
        # cost of the engine, next to the parts themselves.
        clock = time.perf_counter
        start = clock()
        deployment = self.deployment
        if deployment.source != deployment.entry_node:
            self._transfer(deployment.source, deployment.entry_node, self.inputs_of(x))
        node = deployment.entry_node
        hop_start = clock() - start
        result = self.runtimes[node].process(x, entry=self._entry_name)
        self._count(node, result)
        latency = [hop_start + offset for offset in result.offset_list]
        if result.forward is None:  # every sample answered by the first node (e.g. all blocks on one node)
            return BatchOutcome(result.exit_names, result.prediction_list, result.confidence_list, result.logits,
                                latency, [result])
        n = result.batch_size
        exit_names: list[str | None] = list(result.exit_names)
        predictions = list(result.prediction_list)
        confidences = list(result.confidence_list)
        logits: list[np.ndarray | None] = list(result.logits)
        results = [result]
        positions = None  # None: 0..n-1
        while True:
            forward = result.forward
            if forward is None:
                break
            self._transfer(node, forward.node, forward.tensors)
            indices = forward.indices.tolist()
            positions = indices if positions is None else [positions[i] for i in indices]
            node = forward.node
            hop_start = clock() - start
            result = self.runtimes[node].process(forward.tensors, entry=forward.tensor_name)
            results.append(result)
            self._count(node, result)
            for local, name in enumerate(result.exit_names):
                if name is not None:
                    sample = positions[local]
                    exit_names[sample] = name
                    predictions[sample] = result.prediction_list[local]
                    confidences[sample] = result.confidence_list[local]
                    logits[sample] = result.logits[local]
                    latency[sample] = hop_start + result.offset_list[local]
        if None in exit_names:  # cannot happen with a valid manifest; never lose a sample silently
            raise RuntimeError(f"{exit_names.count(None)} of {n} samples left the chain without an exit")
        return BatchOutcome(exit_names, predictions, confidences, logits, latency, results)

    def _count(self, node: str, result: NodeResult) -> None:
        self.node_busy_s[node] += result.busy_s
        self.node_calls[node] += 1
        blocks, exits = self.block_samples[node], self.exit_samples[node]
        for block, count in result.block_samples.items():
            blocks[block] = blocks.get(block, 0) + count
        for exit_name, count in result.exit_samples.items():
            exits[exit_name] = exits.get(exit_name, 0) + count

    def run(self, x, labels: np.ndarray | None = None, *, batch_size: int = 1,
            progress: Callable[[str, int, int], None] | None = None) -> Measurements:
        """Run every sample of ``x`` (name -> [N, ...] per graph input, or one array for a
        single-input model) in batches of ``batch_size``."""
        if batch_size < 1:
            raise FinplanInputError(f"is {batch_size}; expected an integer >= 1", field="--batch-size")
        x = self.inputs_of(x)
        self.runtimes[self.deployment.entry_node].check_input({k: v[:1] for k, v in x.items()}, entry=self._entry_name)
        self._reset()
        n = next(iter(x.values())).shape[0]
        exit_names, predictions, confidences, latency = [], [], [], []
        wall_start = time.perf_counter()
        for begin in range(0, n, batch_size):
            outcome = self.run_batch({k: np.ascontiguousarray(v[begin:begin + batch_size]) for k, v in x.items()})
            exit_names += outcome.exit_names
            predictions += outcome.prediction_list
            confidences += outcome.confidence_list
            latency += outcome.latency_list
            if progress is not None:
                progress("running", min(begin + batch_size, n), n)
        wall = time.perf_counter() - wall_start
        return Measurements(
            engine="local", application=self.deployment.name, n_samples=n, batch_size=batch_size,
            emulate_links=self.emulate_links, exit_names=exit_names,
            predictions=np.asarray(predictions, dtype=np.int64), confidences=np.asarray(confidences, dtype=np.float64),
            labels=None if labels is None else np.asarray(labels, dtype=np.int64),
            latency_s=np.asarray(latency, dtype=np.float64),
            node_busy_s=dict(self.node_busy_s), node_calls=dict(self.node_calls),
            block_samples={k: dict(v) for k, v in self.block_samples.items()},
            exit_samples={k: dict(v) for k, v in self.exit_samples.items()},
            link_bytes=dict(self.link_bytes), link_samples=dict(self.link_samples), link_delay_s=dict(self.link_delay_s),
            link_delay_actual_s=dict(self.link_delay_actual_s),
            link_tensor_bytes={k: dict(v) for k, v in self.link_tensor_bytes.items()}, wall_s=wall,
            threads=self.threads if self.threads is not None else
            {node: runtime.threads for node, runtime in self.runtimes.items()},
            threads_how={node: runtime.threads_how for node, runtime in self.runtimes.items()})


def run_local(folder: str | Path, x, labels: np.ndarray | None = None, *, batch_size: int = 1,
              emulate_links: bool = False, threads: int | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> Measurements:
    """The ``local`` engine of ``finplan run``: load the folder, run the inputs, return Measurements."""
    executor = LocalExecutor(folder, threads=threads, emulate_links=emulate_links)
    return executor.run(x, labels, batch_size=batch_size, progress=progress)
