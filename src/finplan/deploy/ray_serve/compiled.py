"""``run_compiled``: the ``ray-compiled`` engine of ``finplan run`` (a Ray Compiled Graph).

One Ray actor per plan node, pinned by label (or resource) as Serve's deployments are, each
holding the node's ``NodeRuntime``; the plan's chain (device -> edge -> cloud, a node may come
back) is compiled once with ``experimental_compile``, so that a hop is a write into a channel
the next actor already listens on instead of a task submission (about 0.3 ms per hop on one
machine, against 1.5-3 ms for a Serve handle call).

A message carries the batch's remaining samples (their positions in the input and the live
set of the cut) and the answers so far: a sample that exits at a node is answered there and
is simply absent from the next node's batch; a node left with no sample passes the message on
without running anything (and records no call).

Per-hop engine cost: each actor stamps the wall clock when it sends and when it receives, so
a hop's cost is the one-way delivery time (sender's send to receiver's receipt: channel,
serialisation, scheduling), beside the link model's prediction for the same bytes. The clocks
are one clock on one machine; across machines the figure includes their clock offset.

Faults: when an execution fails because an actor died, the graph is torn down, each actor is
asked to answer within a few seconds, the dead ones are reported by plan node and recreated,
the graph is compiled again and every batch without an answer is submitted again: each input
is answered or, after ``MAX_REBUILDS``, counted as an error (``FinplanInputError``).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from finplan.deploy.deployment import load_deployment
from finplan.deploy.executor import Measurements, emulate_delay
from finplan.deploy.ray_serve.core import link_delay_s
from finplan.deploy.ray_serve.graph import build_graph
from finplan.deploy.ray_serve.runner import RunCollector, checked_inputs
from finplan.deploy.ray_serve.wire import answer_from_result, encode_tensors, hop_record
from finplan.errors import FinplanInputError

ENGINE = "ray-compiled"
MAX_REBUILDS = 3               # graph rebuilds after actor deaths before the remaining batches count as errors
PING_TIMEOUT_S = 5.0           # an actor that does not answer a ping by then is taken for dead
EXECUTE_TIMEOUT_S = 60.0       # one batch's result; a hung graph fails rather than hangs
# batches in the graph at once: 1, like the other engines' default concurrency, so that a hop's
# measured cost is the delivery alone (with more, it includes waiting behind earlier batches)
DEFAULT_INFLIGHT = 1


def _actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class FinplanNodeActor:
        """One plan node of the compiled graph: its NodeRuntime, exit or forward per sample."""

        def __init__(self, node: str, files: dict, links: dict, emulate_links: bool, threads):
            from finplan.deploy.ray_serve.app import runtime_from_files

            self.node = node
            self._tmp, self.runtime = runtime_from_files(node, files, threads)
            self.links = {k: tuple(v) for k, v in links.items()}
            self.emulate_links = emulate_links

        def ping(self) -> str:
            return self.node

        def describe(self) -> dict:
            """Where this actor runs (pid, Ray node, labels): for tests and fault drills."""
            from finplan.deploy.ray_serve.app import replica_placement

            return {"node": self.node, **replica_placement()}

        def step(self, message: dict) -> dict:
            from finplan.deploy.executor import emulate_delay
            from finplan.deploy.ray_serve.wire import decode_tensors, encode_tensors

            received = time.time()
            hops = message["hops"]
            if hops and hops[-1].get("forward_to") == self.node and hops[-1].get("sent_at") is not None:
                hops[-1]["overhead_s"] = max(received - hops[-1].pop("sent_at"), 0.0)
            positions = message["positions"]
            if "error" in message or len(positions) == 0 or message["to"] != self.node:
                return message  # nothing for this node: pass it on untouched
            try:
                result = self.runtime.process(decode_tensors(message["tensors"]), entry=message["entry"])
            except Exception as exc:  # a bad part or input: named by node, the graph stays up
                text = str(exc).strip().splitlines()
                return {**message, "error": f"node {self.node!r} failed: {exc.__class__.__name__}"
                                            f"{': ' + text[0] if text else ''}"}
            answer = answer_from_result(result)
            for local, position in enumerate(positions):
                if answer["exit_names"][local] is not None:
                    for key in ("exit_names", "predictions", "confidences"):
                        message[key][int(position)] = answer[key][local]
            hop = hop_record(result)
            forward = result.forward
            if forward is None:
                message.update(positions=[], tensors={}, to=None)
            else:
                delay = link_delay_s(self.links.get(forward.node), result.bytes_out) if self.emulate_links else 0.0
                hop["emulated_delay_s"] = delay
                hop["emulated_delay_actual_s"] = emulate_delay(delay)
                message.update(positions=[positions[int(i)] for i in forward.indices],
                               tensors=encode_tensors(forward.tensors), entry=forward.tensor_name, to=forward.node)
            hop["handled_s"] = time.time() - received
            hop["sent_at"] = time.time()
            hops.append(hop)
            return message

        def __del__(self):
            shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    return FinplanNodeActor


@contextlib.contextmanager
def ray_instance(graph, address: str | None, *, throughput_optimized: bool = False):
    """Ray for the compiled graph: a local instance with one labelled Ray node per plan node
    (stopped on exit, its temporary folder removed), or the cluster at ``address`` (left running).
    ``throughput_optimized``: the local instance's processes run Serve in that mode (benchmarks
    put a Serve application of their own on it)."""
    from finplan.deploy.ray_serve import cluster as c

    workdir = None
    if address is not None:
        c.check_reachable(address)
        env = c.patched_environ(c.quiet_environment(None))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="finplan-ray-", dir="/tmp"))  # short: Ray's socket paths
        env = c.patched_environ(c.quiet_environment(workdir, throughput_optimized=throughput_optimized))
    local = None
    connected = False
    # the graph's own teardown (also when Ray's monitor sees an actor die) logs each dead actor's
    # traceback; the run reports the death in one line by plan node instead
    dag_logger = logging.getLogger("ray.dag.compiled_dag_node")
    level = dag_logger.level
    dag_logger.setLevel(logging.CRITICAL)
    with env:
        try:
            c.require_ray()
            import ray

            with c.keep_sigterm_handler():
                if address is None:
                    c._loopback_only()
                    local = c.LocalCluster(graph, workdir)
                ray.init(address=local.address if local is not None else address, logging_level="WARNING",
                         log_to_driver=False)
                connected = True
            missing = c.missing_plan_nodes(graph, ray.nodes())
            if missing:
                raise c.missing_nodes_error(graph, missing)
            yield local
        finally:
            if connected:
                import ray

                with contextlib.suppress(Exception):
                    ray.shutdown()
            if local is not None:
                with contextlib.suppress(Exception):
                    local.shutdown()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            dag_logger.setLevel(level)


class CompiledChain:
    """The actors and the compiled graph over the plan's chain; rebuilt after an actor dies."""

    def __init__(self, graph, *, threads, emulate_links: bool, inflight: int):
        from finplan.deploy.ray_serve.app import node_files

        self.graph = graph
        self.inflight = inflight
        self.files = {node: node_files(spec.folder) for node, spec in graph.stages.items()}
        self.threads = threads
        self.emulate_links = emulate_links
        self.actors: dict = {}
        self.dag = None
        self.generation = 0
        for node in graph.stages:
            self.actors[node] = self._start(node)
        self.compile()

    def _start(self, node: str):
        spec = self.graph.stages[node]
        options = {k: v for k, v in spec.actor_options.items() if k in ("label_selector", "resources", "num_cpus")}
        return _actor_class().options(**options, max_restarts=0).remote(
            node, self.files[node], {k: list(v) for k, v in spec.links.items()}, self.emulate_links, self.threads)

    def compile(self) -> None:
        import ray
        from ray.dag import InputNode

        ray.get([actor.ping.remote() for actor in self.actors.values()], timeout=120)
        with InputNode() as source:
            out = source
            for node in self.graph.chain:
                out = self.actors[node].step.bind(out)
        self.dag = out.experimental_compile(_max_inflight_executions=self.inflight)
        self.generation += 1
        # the first execution sets the channels up (about a second): paid here, outside the run's
        # wall time, by a message with no sample (every actor passes it on without running)
        self.dag.execute(_empty_message()).get(timeout=EXECUTE_TIMEOUT_S)

    def teardown(self) -> None:
        if self.dag is not None:
            with contextlib.suppress(Exception):
                self.dag.teardown()
            self.dag = None

    def dead_nodes(self) -> list[str]:
        """Plan nodes whose actor does not answer a ping (call after ``teardown``)."""
        import ray

        dead = []
        for node, actor in self.actors.items():
            try:
                ray.get(actor.ping.remote(), timeout=PING_TIMEOUT_S)
            except Exception:
                dead.append(node)
        return dead

    def rebuild(self) -> list[str]:
        """Tear down, find and restart the dead actors, compile again; returns the dead nodes."""
        import ray

        self.teardown()
        dead = self.dead_nodes()
        for node in dead:
            with contextlib.suppress(Exception):
                ray.kill(self.actors[node])
            self.actors[node] = self._start(node)
        self.compile()
        return dead

    def close(self) -> None:
        import ray

        self.teardown()
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _empty_message() -> dict:
    return {"positions": [], "tensors": {}, "entry": None, "to": None, "exit_names": [], "predictions": [],
            "confidences": [], "hops": []}


def _message(rows: dict[str, np.ndarray], positions: np.ndarray, entry: str, to: str, source: str) -> dict:
    n = len(positions)
    return {"positions": list(range(n)), "tensors": encode_tensors(rows), "entry": entry, "to": to,
            "exit_names": [None] * n, "predictions": [-1] * n, "confidences": [float("nan")] * n,
            "hops": [{"node": source, "kind": "ingress", "samples_in": n, "busy_s": 0.0,
                      "bytes_in": sum(int(a.nbytes) for a in rows.values()),
                      "bytes_out": 0 if source == to else sum(int(a.nbytes) for a in rows.values()),
                      "tensors_out": {} if source == to else {k: int(v.nbytes) for k, v in rows.items()},
                      "forward_to": to, "forward_samples": n, "block_samples": {}, "exit_samples": {},
                      "overhead_s": None, "emulated_delay_s": 0.0, "emulated_delay_actual_s": 0.0,
                      "sent_at": time.time()}]}


@contextlib.contextmanager
def compiled_chain(folder: str | Path, *, threads: int | None = None, emulate_links: bool = False,
                   inflight: int = DEFAULT_INFLIGHT, address: str | None = None):
    """Ray (local or joined) plus the compiled graph of ``folder``, closed on exit: for running
    ``run_compiled`` several times on one graph (benchmarks). ``inflight`` bounds the batches a
    run may keep in the graph at once."""
    if inflight < 1:
        raise FinplanInputError(f"is {inflight}; expected an integer >= 1", field="inflight")
    graph = build_graph(folder, threads=threads, emulate_links=emulate_links)
    with ray_instance(graph, address):
        chain = CompiledChain(graph, threads=threads, emulate_links=emulate_links, inflight=inflight)
        try:
            yield chain
        finally:
            chain.close()


def run_compiled(folder: str | Path, x, labels: np.ndarray | None = None, *, batch_size: int = 1,
                 emulate_links: bool = False, threads: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None, address: str | None = None,
                 inflight: int = DEFAULT_INFLIGHT, on_chain: Callable[[CompiledChain], None] | None = None,
                 chain: CompiledChain | None = None) -> Measurements:
    """Run ``x`` through the deployment as a Ray Compiled Graph and measure it like the local executor.

    ``inflight`` batches are in the graph at once. Without ``chain`` (from ``compiled_chain``)
    the run starts Ray and the graph and stops them afterwards. ``on_chain`` (tests) is called
    with the ``CompiledChain`` once it is built and after each batch's answer (e.g. to kill an
    actor mid-run). Raises FinplanInputError when any batch could not be answered, saying how
    many and why: no input is silently left out of the report.
    """
    if batch_size < 1:
        raise FinplanInputError(f"is {batch_size}; expected an integer >= 1", field="--batch-size")
    if inflight < 1:
        raise FinplanInputError(f"is {inflight}; expected an integer >= 1", field="inflight")
    deployment = load_deployment(folder)
    x = checked_inputs(deployment, x)
    specs = deployment.input_specs
    if chain is None:
        with compiled_chain(folder, threads=threads, emulate_links=emulate_links, inflight=inflight,
                            address=address) as own:
            return run_compiled(folder, x, labels, batch_size=batch_size, emulate_links=emulate_links, threads=threads,
                                progress=progress, inflight=inflight, on_chain=on_chain, chain=own)
    if inflight > chain.inflight:
        raise ValueError(f"inflight {inflight} exceeds the {chain.inflight} the graph was compiled for")
    graph = chain.graph
    n = int(next(iter(x.values())).shape[0])
    collector = RunCollector(deployment, n)
    batches = [np.arange(begin, min(begin + batch_size, n)) for begin in range(0, n, batch_size)]
    events: list[str] = []
    source, entry_node = graph.ingress.node, graph.ingress.entry_node
    delays_in: dict[int, tuple[float, float]] = {}  # batch -> (link model's delay, what the wait took)
    if on_chain is not None:
        on_chain(chain)
    pending = list(range(len(batches)))  # batch indices without an answer yet
    done = 0
    rebuilds = 0
    wall_start = time.perf_counter()
    while pending:
        failed_at = None
        queue = list(pending)
        in_graph: list[tuple[int, object, float]] = []
        while queue or in_graph:
            try:
                while queue and len(in_graph) < inflight:
                    index = queue.pop(0)
                    positions = batches[index]
                    rows = {name: np.ascontiguousarray(array[positions]) for name, array in x.items()}
                    if emulate_links and source != entry_node:
                        delay = link_delay_s(graph.ingress.link, sum(int(a.nbytes) for a in rows.values()))
                        delays_in[index] = (delay, emulate_delay(delay))
                    message = _message(rows, positions, specs[0].name, entry_node, source)
                    in_graph.append((index, chain.dag.execute(message), time.perf_counter()))
                index, ref, started = in_graph.pop(0)
                answer = ref.get(timeout=EXECUTE_TIMEOUT_S)
            except Exception as exc:  # an actor died (or the graph broke): rebuild, resubmit
                failed_at = exc
                break
            latency_s = time.perf_counter() - started
            if "error" in answer:
                collector.add(batches[index], {"error": {"message": answer["error"]}}, latency_s)
            else:
                intended, actual = delays_in.get(index, (0.0, 0.0))
                answer["hops"][0]["emulated_delay_s"] = intended
                answer["hops"][0]["emulated_delay_actual_s"] = actual
                collector.add(batches[index], answer, latency_s)
            pending.remove(index)
            done += len(batches[index])
            if progress is not None:
                progress("running on a ray compiled graph", done, n)
            if on_chain is not None:
                on_chain(chain)
        if failed_at is None:
            break
        rebuilds += 1
        if rebuilds > MAX_REBUILDS:
            for index in pending:
                collector.add(batches[index], {"error": {"message": f"the graph failed {rebuilds} times "
                                                                    f"({_first_line(failed_at)})"}}, np.nan)
            break
        dead = chain.rebuild()
        what = ", ".join(repr(node) for node in dead) if dead else "no node (every actor answered)"
        events.append(f"the compiled graph failed ({_first_line(failed_at)}); dead actor of plan node {what}; "
                      f"graph rebuilt, {len(pending)} unanswered batches sent again")
    wall_s = time.perf_counter() - wall_start
    if collector.errors:
        raise FinplanInputError(f"{len(collector.errors)} of {len(batches)} batches failed on the compiled graph "
                                f"(first: {collector.errors[0]})", field=f"--engine {ENGINE}")
    mode = f"Ray Compiled Graph, one actor per plan node, {inflight} batch{'es' if inflight > 1 else ''} in flight"
    return Measurements(
        engine=ENGINE, application=deployment.name, n_samples=n, batch_size=batch_size, emulate_links=emulate_links,
        exit_names=list(collector.exit_names), predictions=collector.predictions, confidences=collector.confidences,
        labels=None if labels is None else np.asarray(labels, dtype=np.int64), latency_s=collector.latency_s,
        node_busy_s=collector.node_busy_s, node_calls=collector.node_calls, block_samples=collector.block_samples,
        exit_samples=collector.exit_samples, link_bytes=collector.link_bytes, link_samples=collector.link_samples,
        link_delay_s=collector.link_delay_s, link_delay_actual_s=collector.link_delay_actual_s,
        link_tensor_bytes=collector.link_tensor_bytes, wall_s=wall_s, engine_overhead_s=collector.engine_overhead_s(),
        threads=threads, engine_mode=mode, engine_events=events)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0]}" if text else exc.__class__.__name__
