"""``run_on_ray``: the ``ray`` engine of ``finplan run`` (same ``Measurements`` as the local executor).

Inputs go to the application's ingress through a DeploymentHandle (no HTTP on this path),
one batch per request, ``concurrency`` requests in flight (1 by default, like the local
executor). Every answer carries the hops it took (node, busy time, bytes, counts), which
are summed into ``Measurements``; ``latency_s`` is the round trip seen by this process
(request sent to answer received, the return path included).

The engine's own cost is measured per hop: the caller's round trip to the next node minus
that node's own handling time (serialisation, routing, scheduling and, between machines,
the real network). ``engine_overhead_s`` holds, per hop ``a->b``, its mean (key
``hop[a->b].engine_s``) beside the link model's prediction for the same bytes
(``hop[a->b].link_model_s``), so a user sees what the engine costs next to what the plan
assumed the network costs. On one machine the link model's part did not happen (no network).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from finplan.deploy.deployment import load_deployment
from finplan.deploy.executor import Measurements, link_key
from finplan.deploy.ray_serve.graph import DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_TIMEOUT_S, build_graph
from finplan.deploy.ray_serve.wire import encode_inputs, encode_tensor
from finplan.errors import FinplanInputError

INGRESS_KEY = "ingress"


class RunCollector:
    """Sums the hops of every answer into the fields of ``Measurements`` (thread-safe)."""

    def __init__(self, deployment, n: int):
        self.deployment = deployment
        self.nodes = list(deployment.nodes)
        self.n = n
        self.exit_names: list[str | None] = [None] * n
        self.predictions = np.full(n, -1, dtype=np.int64)
        self.confidences = np.full(n, np.nan)
        self.latency_s = np.full(n, np.nan)
        self.node_busy_s = {node: 0.0 for node in self.nodes}
        self.node_calls = {node: 0 for node in self.nodes}
        self.block_samples: dict[str, dict[str, int]] = {node: {} for node in self.nodes}
        self.exit_samples: dict[str, dict[str, int]] = {node: {} for node in self.nodes}
        self.link_bytes: dict[str, int] = {}
        self.link_samples: dict[str, int] = {}
        self.link_delay_s: dict[str, float] = {}
        self.link_delay_actual_s: dict[str, float] = {}
        self.link_tensor_bytes: dict[str, dict[str, int]] = {}
        self.hop_overhead_s: dict[str, list[float]] = {}
        self.hop_bytes: dict[str, list[int]] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def add(self, positions: np.ndarray, answer: dict, latency_s: float) -> None:
        with self._lock:
            if "error" in answer:
                self.errors.append(answer["error"]["message"])
                return
            for local, position in enumerate(positions):
                self.exit_names[position] = answer["exit_names"][local]
                self.predictions[position] = answer["predictions"][local]
                self.confidences[position] = answer["confidences"][local]
                self.latency_s[position] = latency_s
            for hop in answer["hops"]:
                node = hop["node"]
                ingress = hop.get("kind") == "ingress"
                if not ingress:
                    self.node_busy_s[node] = self.node_busy_s.get(node, 0.0) + hop["busy_s"]
                    self.node_calls[node] = self.node_calls.get(node, 0) + 1
                    for table, key in ((self.block_samples, "block_samples"), (self.exit_samples, "exit_samples")):
                        per_node = table.setdefault(node, {})
                        for name, count in hop[key].items():
                            per_node[name] = per_node.get(name, 0) + int(count)
                target = hop.get("forward_to")
                if target is None:
                    continue
                key = link_key(node, target)
                if target != node:  # the ingress hands over on the same machine when source == entry node
                    self.link_bytes[key] = self.link_bytes.get(key, 0) + int(hop["bytes_out"])
                    self.link_samples[key] = self.link_samples.get(key, 0) + int(hop["forward_samples"])
                    per_tensor = self.link_tensor_bytes.setdefault(key, {})
                    for tensor, size in (hop.get("tensors_out") or {}).items():
                        per_tensor[tensor] = per_tensor.get(tensor, 0) + int(size)
                    self.link_delay_s[key] = self.link_delay_s.get(key, 0.0) + float(hop.get("emulated_delay_s") or 0.0)
                    self.link_delay_actual_s[key] = (self.link_delay_actual_s.get(key, 0.0)
                                                     + float(hop.get("emulated_delay_actual_s") or 0.0))
                name = f"{INGRESS_KEY}->{target}" if ingress else key
                if hop.get("overhead_s") is not None:
                    self.hop_overhead_s.setdefault(name, []).append(float(hop["overhead_s"]))
                    self.hop_bytes.setdefault(name, []).append(int(hop["bytes_out"] if not ingress else hop["bytes_in"]))

    def engine_overhead_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in self.hop_overhead_s.items():
            out[f"hop[{name}].engine_s"] = float(np.mean(values))
            out[f"hop[{name}].engine_p50_s"] = float(np.median(values))
            if not name.startswith(INGRESS_KEY):
                src, dst = name.split("->", 1)
                link = self.deployment.links.get((src, dst))
                if link is not None:
                    out[f"hop[{name}].link_model_s"] = float(np.mean([link.time_s(b) for b in self.hop_bytes[name]]))
        return out


def engine_overhead_rows(engine_overhead_s: dict[str, float]) -> list[dict]:
    """``Measurements.engine_overhead_s`` as rows ``{hop, engine_s, engine_p50_s, link_model_s}`` (for printing)."""
    rows: dict[str, dict] = {}
    for key, value in engine_overhead_s.items():
        if not key.startswith("hop[") or "]." not in key:
            continue
        hop, _, what = key[4:].partition("].")
        rows.setdefault(hop, {"hop": hop, "engine_s": None, "engine_p50_s": None, "link_model_s": None})[what] = value
    return list(rows.values())



def checked_inputs(deployment, x) -> dict:
    """``x`` (one array, or arrays by graph input name) as arrays by name, each checked against
    the deployment's input specs on its first sample: one line naming a missing or wrong input."""
    specs = deployment.input_specs
    x = x if isinstance(x, dict) else {specs[0].name: x}
    for spec in specs:
        if spec.name not in x:
            raise FinplanInputError(f"input {spec.name!r} is missing (the model takes {', '.join(s.name for s in specs)})",
                                    field="input")
        spec.check(x[spec.name][:1], field="input")
    return x


def run_on_ray(folder: str | Path, x, labels: np.ndarray | None = None, *, batch_size: int = 1,
               emulate_links: bool = False, threads: int | None = None,
               progress: Callable[[str, int, int], None] | None = None, address: str | None = None,
               concurrency: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S, session=None) -> Measurements:
    """Run ``x`` through the deployment on Ray Serve and measure it like the local executor.

    Without ``session`` it starts one (a local multi-node instance, or joins ``address``) and
    closes it afterwards. Raises FinplanInputError when any request failed, saying how many
    and the first error: no input is silently left out of the report.
    """
    if batch_size < 1:
        raise FinplanInputError(f"is {batch_size}; expected an integer >= 1", field="--batch-size")
    if concurrency < 1:
        raise FinplanInputError(f"is {concurrency}; expected an integer >= 1", field="--concurrency")
    deployment = load_deployment(folder)
    x = checked_inputs(deployment, x)
    specs = deployment.input_specs
    if session is None:
        from finplan.deploy.ray_serve.cluster import ServeSession

        graph = build_graph(folder, timeout_s=timeout_s, threads=threads, emulate_links=emulate_links,
                            max_concurrent_requests=max(concurrency, DEFAULT_MAX_CONCURRENT_REQUESTS),
                            deployment=deployment)
        with ServeSession(graph, address=address, http=False) as own:
            return run_on_ray(folder, x, labels, batch_size=batch_size, emulate_links=emulate_links, threads=threads,
                              progress=progress, concurrency=concurrency, timeout_s=timeout_s, session=own)

    handle = session.deployment_handle(session.graph.ingress.deployment)
    n = int(next(iter(x.values())).shape[0])
    collector = RunCollector(deployment, n)
    batches = [np.arange(begin, min(begin + batch_size, n)) for begin in range(0, n, batch_size)]
    done = [0]
    lock = threading.Lock()

    def one(positions: np.ndarray) -> None:
        rows = {name: np.ascontiguousarray(array[positions]) for name, array in x.items()}
        # one input: a .npy, as before; several: a .npz of named arrays (parse_request reads both)
        payload = encode_tensor(rows[specs[0].name]) if len(rows) == 1 else encode_inputs(rows)
        started = time.perf_counter()
        try:
            answer = handle.infer.remote(payload).result(timeout_s=timeout_s + 5.0)
        except Exception as exc:  # a timeout or a dead ingress: counted, never dropped
            answer = {"error": {"status": 503, "message": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}}
        collector.add(positions, answer, time.perf_counter() - started)
        if progress is not None:
            with lock:
                done[0] += len(positions)
                progress("running on ray", done[0], n)

    wall_start = time.perf_counter()
    if concurrency == 1:
        for positions in batches:
            one(positions)
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="finplan-ray-run") as pool:
            list(pool.map(one, batches))
    wall_s = time.perf_counter() - wall_start
    if collector.errors:
        raise FinplanInputError(f"{len(collector.errors)} of {len(batches)} requests failed on Ray Serve "
                                f"(first: {collector.errors[0]})", field="--engine ray")
    return Measurements(
        engine="ray", application=deployment.name, n_samples=n, batch_size=batch_size, emulate_links=emulate_links,
        exit_names=list(collector.exit_names), predictions=collector.predictions, confidences=collector.confidences,
        labels=None if labels is None else np.asarray(labels, dtype=np.int64), latency_s=collector.latency_s,
        node_busy_s=collector.node_busy_s, node_calls=collector.node_calls, block_samples=collector.block_samples,
        exit_samples=collector.exit_samples, link_bytes=collector.link_bytes, link_samples=collector.link_samples,
        link_delay_s=collector.link_delay_s, link_delay_actual_s=collector.link_delay_actual_s,
        link_tensor_bytes=collector.link_tensor_bytes, wall_s=wall_s, engine_overhead_s=collector.engine_overhead_s(),
        threads=threads, engine_mode=f"Ray Serve, {session.mode}; batches of up to {session.graph.max_batch_size} "
                                     f"samples per stage (wait {session.graph.batch_wait_s * 1e3:g} ms under load)")
