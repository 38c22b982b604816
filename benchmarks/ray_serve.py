"""Serving on Ray: finplan serve, a hand-written Ray Serve chain, and run --engine ray-compiled.

    .venv/bin/python benchmarks/ray_serve.py [--requests 200] [--rounds 3] [--out benchmarks/results]

One 3-node deployment (device -> edge -> cloud, no early exit, so every input makes both hops)
of a 3-block branchy conv net (tests/onnx_builders.py: 16 channels, 32x32 input, 16 KiB per
sample on each hop), on a local Ray instance with one labelled Ray node per plan node. One
after the other, in one run, each on a Ray instance of its own:

* ``finplan serve``: finplan's Serve application (exit-aware batching per stage, throughput-
  optimised mode where the installed Ray has it), called through its ingress's handle;
* ``hand-written``: the chain in benchmarks/ray_handwritten_chain.py (what a Ray user writes:
  model composition, handles passed through ``.bind()``, ``max_ongoing_requests`` 100), in
  Serve's default mode, called through its first stage's handle;
* ``hand-written, throughput-optimised``: the same chain with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
  (only where the installed Ray has the mode);
* ``ray-compiled``: ``run_compiled`` (``finplan run --engine ray-compiled``) with as many
  batches of one sample in flight as the concurrency.

The Serve engines get the same client: ``concurrency`` threads in this process, each sending
one sample per request and waiting for its answer. Throughput is answered requests per
second of wall time, the median over ``--rounds`` rounds; latency is per request (the
median round's). Per-hop
cost: finplan's own measurement for ``finplan serve`` (``run_on_ray`` at concurrency 1: the
round trip minus the next node's own time) and for ``ray-compiled`` (one batch in flight:
sender's send to receiver's receipt); for every engine also a derived figure, (its median
latency at concurrency 1 minus the local executor's) / the handle calls or channel
transfers on the path. Numbers are for the machine and the moment it ran; compare ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "deploy"), str(ROOT / "benchmarks")]

from common import DEFAULT_OUT, machine, md_table, write_csv, write_text  # noqa: E402
from helpers import plan_doc, write_json  # noqa: E402
from onnx_builders import tiny_branchy_model  # noqa: E402

from finplan.contract import model_hash  # noqa: E402
from finplan.deploy.emit import emit  # noqa: E402
from finplan.deploy.executor import LocalExecutor  # noqa: E402

CONCURRENCY = (1, 4, 16, 64)
WARMUP_REQUESTS = 16
# the targets of issue 15, checked against this run's ratios
TARGET_VS_HANDWRITTEN = 2.0
TARGET_VS_HANDWRITTEN_TO = 1.3
TARGET_HOP_SERVE_S = 1.5e-3
TARGET_HOP_COMPILED_S = 0.5e-3
SERVE = "finplan serve"
HAND = "hand-written chain"
HAND_TO = "hand-written chain, throughput-optimised"
COMPILED = "run --engine ray-compiled"


def percentiles(values) -> dict:
    lat = np.asarray(values, dtype=float)
    return {"p50_s": float(np.percentile(lat, 50)), "p90_s": float(np.percentile(lat, 90)),
            "p99_s": float(np.percentile(lat, 99)), "mean_s": float(lat.mean())}


def drive(call, n: int, concurrency: int) -> dict:
    """``call(i)`` for i in 0..n-1 from ``concurrency`` threads; answered/s and latencies."""
    latencies: list[float] = []
    failed = [0]
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            try:
                ok = call(i)
            except Exception:  # counted: a lost request would otherwise look like a fast one
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failed[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    wall_s = time.perf_counter() - start
    return {"answered": len(latencies), "failed": failed[0], "wall_s": wall_s,
            "throughput_per_s": len(latencies) / wall_s, "latency_s": latencies}


def rounds_of(measure, rounds: int) -> dict:
    """The median round by throughput (its latencies), with every round's throughput."""
    results = [measure() for _ in range(rounds)]
    results.sort(key=lambda r: r["throughput_per_s"])
    median = results[len(results) // 2]
    return {"throughput_per_s": statistics.median(r["throughput_per_s"] for r in results),
            "throughput_rounds": [r["throughput_per_s"] for r in results],
            "failed": sum(r["failed"] for r in results), **percentiles(median["latency_s"])}


def bench_client(name: str, call, n: int, rounds: int) -> list[dict]:
    drive(call, WARMUP_REQUESTS, 1)
    rows = []
    for concurrency in CONCURRENCY:
        rows.append({"engine": name, "concurrency": concurrency, "requests": n, "rounds": rounds,
                     **rounds_of(lambda c=concurrency: drive(call, n, c), rounds)})
        print(f"  {name} c={concurrency}: {rows[-1]['throughput_per_s']:.1f} req/s", file=sys.stderr, flush=True)
    return rows


def bench_finplan_serve(folder: Path, x: np.ndarray, rounds: int) -> tuple[list[dict], dict, str]:
    from finplan.deploy.ray_serve.cluster import ServeSession
    from finplan.deploy.ray_serve.graph import build_graph
    from finplan.deploy.ray_serve.runner import run_on_ray
    from finplan.deploy.ray_serve.wire import encode_tensor

    graph = build_graph(folder, threads=1, timeout_s=60)
    with ServeSession(graph, http=False) as session:
        handle = session.deployment_handle(graph.ingress.deployment)
        payloads = [encode_tensor(x[i:i + 1]) for i in range(len(x))]

        def call(i: int) -> bool:
            return "error" not in handle.infer.remote(payloads[i]).result(timeout_s=60)

        rows = bench_client(SERVE, call, len(x), rounds)
        m = run_on_ray(folder, x, session=session)  # concurrency 1: each hop's own cost, measured
        mode = session.mode
    return rows, m.engine_overhead_s, mode


@contextlib.contextmanager
def handwritten_chain(folder: Path, throughput_optimized: bool):
    from ray import serve

    from finplan.deploy.ray_serve.cluster import _shutdown_serve_within
    from finplan.deploy.ray_serve.compiled import ray_instance
    from finplan.deploy.ray_serve.graph import build_graph

    with ray_instance(build_graph(folder), None, throughput_optimized=throughput_optimized):
        from ray_handwritten_chain import chain_application

        serve.start(proxy_location="Disabled")
        try:
            serve.run(chain_application(folder, threads=1), name="handwritten", route_prefix=None)
            handle = serve.get_deployment_handle("stage-device", app_name="handwritten")
            handle._init(_run_router_in_separate_loop=True)  # waited on from plain threads, as finplan's
            yield handle
        finally:
            with contextlib.suppress(Exception):
                _shutdown_serve_within(1.0)


def bench_handwritten(folder: Path, x: np.ndarray, rounds: int, throughput_optimized: bool) -> list[dict]:
    name = HAND_TO if throughput_optimized else HAND
    with handwritten_chain(folder, throughput_optimized) as handle:
        rows_in = [{"x": x[i:i + 1]} for i in range(len(x))]

        def call(i: int) -> bool:
            answer = handle.remote(rows_in[i], "x").result(timeout_s=60)
            return answer["exit_names"][0] is not None

        return bench_client(name, call, len(x), rounds)


def bench_compiled(folder: Path, x: np.ndarray, rounds: int) -> tuple[list[dict], dict]:
    from finplan.deploy.ray_serve.compiled import compiled_chain, run_compiled

    rows = []
    with compiled_chain(folder, threads=1, inflight=max(CONCURRENCY)) as chain:
        run_compiled(folder, x[:WARMUP_REQUESTS], threads=1, chain=chain)
        for concurrency in CONCURRENCY:
            def measure(c=concurrency):
                m = run_compiled(folder, x, threads=1, inflight=c, chain=chain)
                return {"throughput_per_s": len(x) / m.wall_s, "latency_s": list(m.latency_s), "failed": 0}

            rows.append({"engine": COMPILED, "concurrency": concurrency, "requests": len(x), "rounds": rounds,
                         **rounds_of(measure, rounds)})
            print(f"  {COMPILED} c={concurrency}: {rows[-1]['throughput_per_s']:.1f} req/s", file=sys.stderr,
                  flush=True)
        hops = run_compiled(folder, x, threads=1, inflight=1, chain=chain).engine_overhead_s
    return rows, hops


def bench_local(folder: Path, x: np.ndarray) -> dict:
    executor = LocalExecutor(folder, threads=1)
    for i in range(WARMUP_REQUESTS):
        executor.run_batch(x[i:i + 1])
    latencies = []
    for i in range(len(x)):
        started = time.perf_counter()
        executor.run_batch(x[i:i + 1])
        latencies.append(time.perf_counter() - started)
    return {"engine": "local executor (no Ray)", "concurrency": 1, "requests": len(x), "rounds": 1,
            "throughput_per_s": len(x) / sum(latencies), "throughput_rounds": [len(x) / sum(latencies)], "failed": 0,
            **percentiles(latencies)}


def merge_rounds(per_round: list[dict]) -> list[dict]:
    """One row per (engine, concurrency): the median round's throughput and latencies, every
    round's throughput listed."""
    groups: dict[tuple, list[dict]] = {}
    for row in per_round:
        groups.setdefault((row["engine"], row["concurrency"]), []).append(row)
    rows = []
    for group in groups.values():
        in_order = [r["throughput_per_s"] for r in group]  # round by round, to pair engines by round
        group = sorted(group, key=lambda r: r["throughput_per_s"])
        median = dict(group[len(group) // 2])
        median.update(rounds=len(group), throughput_per_s=statistics.median(in_order), throughput_rounds=in_order,
                      failed=sum(r["failed"] for r in group))
        rows.append(median)
    return rows


def median_hops(rounds: list[dict]) -> dict:
    """Each per-hop figure's median over the rounds."""
    keys = list(dict.fromkeys(k for hops in rounds for k in hops))
    return {k: statistics.median(hops[k] for hops in rounds if k in hops) for k in keys}


def node_hops(engine_overhead_s: dict) -> dict:
    """hop -> p50 engine seconds, for the hops between plan nodes (the ingress hop left out)."""
    from finplan.deploy.ray_serve.runner import engine_overhead_rows

    return {row["hop"]: row["engine_p50_s"] for row in engine_overhead_rows(engine_overhead_s)
            if not row["hop"].startswith("ingress")}


def main() -> int:
    from finplan.cli._console import foreign_output_to_stderr
    from finplan.deploy.ray_serve.cluster import throughput_optimized_supported

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per round and concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all the engines")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    # Ray's worker processes import the hand-written chain's module (and finplan) by name: they
    # inherit this environment from the Ray instances started below
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "benchmarks")] + [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    load_before = os.getloadavg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="finplan-bench-"))
    model = tiny_branchy_model(channels=16, size=32, seed=1)
    onnx.save(model, work / "model.onnx")
    plan = write_json(work / "plan.json", plan_doc(["device", "edge", "cloud"], model_hash=model_hash(model)))
    folder = work / "deploy"
    emit(plan, work / "model.onnx", folder)
    x = np.random.default_rng(0).standard_normal((args.requests, 1, 32, 32)).astype(np.float32)

    local = bench_local(folder, x)
    # Rounds go over all the engines in turn (each round starts every engine's Ray instance
    # afresh), so that a change in the machine's load meets every engine alike
    per_round, serve_hops, compiled_hops = [], [], []
    with foreign_output_to_stderr():  # Ray's processes print to descriptor 1 at shutdown
        for index in range(args.rounds):
            print(f"round {index + 1} of {args.rounds}", file=sys.stderr, flush=True)
            rows, hops, serve_mode = bench_finplan_serve(folder, x, 1)
            per_round += rows
            serve_hops.append(hops)
            per_round += bench_handwritten(folder, x, 1, throughput_optimized=False)
            if throughput_optimized_supported():
                per_round += bench_handwritten(folder, x, 1, throughput_optimized=True)
            rows, hops = bench_compiled(folder, x, 1)
            per_round += rows
            compiled_hops.append(hops)
    shutil.rmtree(work, ignore_errors=True)  # the model and the deployment folder: this run's only
    rows = merge_rounds(per_round)
    serve_hops, compiled_hops = median_hops(serve_hops), median_hops(compiled_hops)
    rows.append(local)
    result = summarise(rows, local, serve_hops, compiled_hops, serve_mode, args,
                       load=(load_before, os.getloadavg()), wall_s=time.perf_counter() - started)
    write_outputs(result, args.out)
    print(result["markdown"])
    return 0


def summarise(rows, local, serve_hops, compiled_hops, serve_mode, args, *, load, wall_s) -> dict:
    by = {(r["engine"], r["concurrency"]): r for r in rows}
    engines = list(dict.fromkeys(r["engine"] for r in rows if r is not local))
    # calls on the path of one request: Serve handle calls (finplan: driver -> ingress -> device
    # -> edge -> cloud; hand-written: driver -> device -> edge -> cloud), compiled-graph channel
    # transfers (driver -> device -> edge -> cloud -> driver)
    calls = {SERVE: 4, HAND: 3, HAND_TO: 3, COMPILED: 4}
    derived = {e: (by[(e, 1)]["p50_s"] - local["p50_s"]) / calls[e] for e in engines}
    measured = {SERVE: node_hops(serve_hops), COMPILED: node_hops(compiled_hops)}
    targets = []
    serve16 = by[(SERVE, 16)]["throughput_per_s"]
    for other, target in ((HAND, TARGET_VS_HANDWRITTEN), (HAND_TO, TARGET_VS_HANDWRITTEN_TO)):
        if (other, 16) in by:
            ratio = serve16 / by[(other, 16)]["throughput_per_s"]
            paired = [a / b for a, b in zip(by[(SERVE, 16)]["throughput_rounds"], by[(other, 16)]["throughput_rounds"])]
            targets.append({"what": f"finplan serve / {other}, throughput at concurrency 16", "target": f">= {target}x",
                            "measured": f"{ratio:.2f}x (round by round: {', '.join(f'{r:.2f}' for r in paired)})",
                            "met": ratio >= target})
        else:
            targets.append({"what": f"finplan serve / {other}, throughput at concurrency 16", "target": f">= {target}x",
                            "measured": "not measured (the installed Ray has no throughput-optimised mode)",
                            "met": None})
    for engine, limit in ((SERVE, TARGET_HOP_SERVE_S), (COMPILED, TARGET_HOP_COMPILED_S)):
        worst = max(measured[engine].values())
        targets.append({"what": f"per-hop engine cost, {engine} (worst node hop, p50, measured)",
                        "target": f"<= {limit * 1e3:g} ms", "measured": f"{worst * 1e3:.3f} ms",
                        "met": worst <= limit})
    conditions = (f"{machine()}; Ray {ray_version()}; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after "
                  "(1-minute; the machine is shared with other engineers' test runs); finplan serve's Serve mode: "
                  f"{serve_mode}; onnxruntime 1 thread per part; benchmark wall time {wall_s:.0f} s")
    table_rows = []
    for engine in engines + [local["engine"]]:
        cells = [engine]
        for c in CONCURRENCY:
            r = by.get((engine, c))
            cells.append("-" if r is None else f"{r['throughput_per_s']:.0f}")
        r1 = by[(engine, 1)]
        cells.append(f"{r1['p50_s'] * 1e3:.2f}")
        cells.append("-" if engine not in derived else f"{derived[engine] * 1e3:.2f}")
        hops = measured.get(engine)
        cells.append("-" if not hops else ", ".join(f"{k} {v * 1e3:.2f}" for k, v in hops.items()))
        table_rows.append(cells)
    headers = ["engine"] + [f"c={c} (req/s)" for c in CONCURRENCY] + [
        "p50 latency c=1 (ms)", "per hop, derived (ms)", "per hop, measured p50 (ms)"]
    command = (f".venv/bin/python benchmarks/ray_serve.py --requests {args.requests} --rounds {args.rounds}")
    md = ["# Serving on Ray: measured results", "",
          f"Command: `{command}`. {conditions}.", "",
          "Deployment: device -> edge -> cloud on one machine (one local Ray node per plan node), a 3-block "
          "branchy conv net, no early exit (every input makes both hops), 16 KiB per sample per hop; one sample "
          f"per request; {args.requests} requests per round, throughput the median of {args.rounds} rounds, each "
          "round running every engine in turn on a fresh Ray instance of its own.", "",
          md_table(headers, table_rows), "",
          "Per hop, derived: (the engine's median latency at concurrency 1 minus the local executor's) divided by "
          "the calls on a request's path (finplan serve 4 handle calls, driver -> ingress -> device -> edge -> "
          "cloud; the hand-written chain 3; the compiled graph 4 channel transfers, the answer's return included). "
          "Per hop, measured: finplan's own per-hop measurement (Serve: round trip minus the next node's own time, "
          "run_on_ray at concurrency 1; compiled: send to receipt, one batch in flight).", "",
          "## Targets (issue 15)", "",
          md_table(["what", "target", "measured", ""],
                   [[t["what"], t["target"], t["measured"],
                     "met" if t["met"] else ("not met" if t["met"] is False else "-")] for t in targets], "lllc"), ""]
    return {"conditions": conditions, "command": command, "rows": rows, "per_hop_derived_s": derived,
            "per_hop_measured_s": {SERVE: serve_hops, COMPILED: compiled_hops}, "targets": targets,
            "markdown": "\n".join(md)}


def ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def write_outputs(result: dict, out: Path) -> None:
    columns = ["engine", "concurrency", "requests", "rounds", "throughput_per_s", "throughput_rounds", "failed",
               "p50_s", "p90_s", "p99_s", "mean_s"]
    write_csv(out / "ray_serve.csv", result["rows"], columns)
    write_text(out / "ray_serve.json", json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2) + "\n")
    write_text(out / "ray_serve.md", result["markdown"])


if __name__ == "__main__":
    sys.exit(main())
