"""Ray Serve engine vs the local executor on the same 3-node deployment (one machine).

    .venv/bin/python benchmarks/ray_serve.py [--requests 200] [--json]

A 3-block branchy conv net (tests/onnx_builders.py, 16 channels, 64x64 input, so each hop
carries 64 KiB per sample) is emitted for device -> edge -> cloud with no early exit (every
input makes both hops). Then, at concurrency 1, 4 and 16 (one sample per request):

* local: the local executor (one per client thread, onnxruntime 1 thread), in this process;
* ray:   ``finplan serve``'s application on a local Ray instance with one labelled Ray node
         per plan node, called over HTTP by ``finplan infer``'s client.

Latency is per request as the client sees it; throughput is inputs per second of wall time.
Bursts: ``--bursts`` times, ``--requests`` requests all sent at once (concurrency = requests),
with the ingress admitting ``--max-concurrent-requests`` (finplan's default) and, on a second
Serve application, ``--baseline-limit`` (64: what every hop admitted before); the slowest
request and the burst's wall time show what waiting in Serve's router costs. Serve queues as
many again as the limit admits, so with the baseline a burst of 200 also gets 503s.
The engine's per-hop overhead (round trip minus the next node's own time) comes from
``run_on_ray`` at concurrency 1, beside the link model's prediction for the same bytes.
Numbers are for the machine it runs on; compare ratios, not absolute values.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "deploy")]

from helpers import plan_doc, write_json  # noqa: E402
from onnx_builders import tiny_branchy_model  # noqa: E402

from finplan.contract import model_hash  # noqa: E402
from finplan.deploy.emit import emit  # noqa: E402
from finplan.deploy.executor import LocalExecutor  # noqa: E402

CONCURRENCY = (1, 4, 16)


def percentiles(values) -> dict:
    lat = np.asarray(values, dtype=float)
    return {"p50_s": float(np.percentile(lat, 50)), "p90_s": float(np.percentile(lat, 90)),
            "p99_s": float(np.percentile(lat, 99)), "mean_s": float(lat.mean())}


def bench_local(folder: Path, x: np.ndarray, concurrency: int) -> dict:
    executors = [LocalExecutor(folder, threads=1) for _ in range(concurrency)]
    free = list(executors)
    lock = threading.Lock()
    latencies = []

    def one(i: int) -> None:
        with lock:
            executor = free.pop()
        started = time.perf_counter()
        executor.run_batch(x[i:i + 1])
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            free.append(executor)

    for i in range(min(8, len(x))):  # warm-up
        executors[0].run_batch(x[i:i + 1])
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(len(x))))
    wall = time.perf_counter() - start
    return {"engine": "local", "concurrency": concurrency, "requests": len(x), "failed": 0,
            "throughput_per_s": len(x) / wall, **percentiles(latencies)}


def bench_ray(url: str, x: np.ndarray, concurrency: int) -> dict:
    from finplan.deploy.ray_serve.client import infer_many

    infer_many(url, x[:8], concurrency=1, timeout_s=60)  # warm-up
    report = infer_many(url, x, concurrency=concurrency, timeout_s=60)
    return {"engine": "ray", "concurrency": concurrency, "requests": report.requests, "failed": report.failed,
            "throughput_per_s": report.answered / report.wall_s, **percentiles(report.latency_s)}


def bench_bursts(url: str, x: np.ndarray, bursts: int, limit: int) -> dict:
    from finplan.deploy.ray_serve.client import infer_many

    infer_many(url, x[:8], concurrency=1, timeout_s=60)  # warm-up
    walls, slowest, failed, statuses = [], [], 0, {}
    for _ in range(bursts):
        report = infer_many(url, x, concurrency=len(x), timeout_s=120)
        walls.append(report.wall_s)
        slowest.append(max(report.latency_s) if report.latency_s else float("nan"))
        failed += report.failed
        for key, count in report.errors.items():
            status = key.split(" ", 1)[0]
            statuses[status] = statuses.get(status, 0) + count
    return {"max_concurrent_requests": limit, "requests_per_burst": len(x), "bursts": bursts, "failed": failed,
            "failed_by_status": statuses,
            "wall_s": walls, "slowest_request_s": slowest}


def main() -> int:
    from finplan.cli._console import foreign_output_to_stderr

    # Ray's processes print to descriptor 1 ("(raylet) Task ... failed" at shutdown): keep it for --json
    with foreign_output_to_stderr() as real_stdout:
        return report(real_stdout)


def report(out) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--max-concurrent-requests", type=int, default=None)
    parser.add_argument("--baseline-limit", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from finplan.deploy.ray_serve.cluster import ServeSession
    from finplan.deploy.ray_serve.graph import DEFAULT_MAX_CONCURRENT_REQUESTS, build_graph
    from finplan.deploy.ray_serve.runner import engine_overhead_rows, run_on_ray

    work = Path(tempfile.mkdtemp(prefix="finplan-bench-"))
    model = tiny_branchy_model(channels=16, size=64, seed=1)
    onnx.save(model, work / "model.onnx")
    plan = write_json(work / "plan.json", plan_doc(["device", "edge", "cloud"], model_hash=model_hash(model)))
    folder = work / "deploy"
    emit(plan, work / "model.onnx", folder)
    x = np.random.default_rng(0).standard_normal((args.requests, 1, 64, 64)).astype(np.float32)

    rows = [bench_local(folder, x, c) for c in CONCURRENCY]
    limit = args.max_concurrent_requests or DEFAULT_MAX_CONCURRENT_REQUESTS
    graph = build_graph(folder, threads=1, timeout_s=60, max_concurrent_requests=limit)
    started = time.perf_counter()
    with ServeSession(graph) as session:
        start_s = time.perf_counter() - started
        rows += [bench_ray(session.url, x, c) for c in CONCURRENCY]
        m = run_on_ray(folder, x[:100], session=session)
        hops = engine_overhead_rows(m.engine_overhead_s)
        hop_bytes = {k: v / max(m.link_samples.get(k, 1), 1) for k, v in m.link_bytes.items()}
        busy = {node: m.node_busy_s[node] / max(m.node_calls[node], 1) for node in m.node_busy_s}
        bursts = [bench_bursts(session.url, x, args.bursts, limit)]
    if args.baseline_limit:
        baseline = build_graph(folder, threads=1, timeout_s=60, max_concurrent_requests=args.baseline_limit)
        with ServeSession(baseline) as session:
            bursts.append(bench_bursts(session.url, x, args.bursts, args.baseline_limit))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor() or None,
                    "python": platform.python_version()},
        "deployment": {"nodes": ["device", "edge", "cloud"], "early_exits": False, "bytes_per_hop": hop_bytes},
        "ray_start_s": start_s, "rows": rows, "per_hop": hops, "node_busy_s_per_call": busy,
        "bursts": bursts,
    }
    if args.json:
        print(json.dumps(result, indent=2), file=out)
        return 0
    say = functools.partial(print, file=out)
    say(f"machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}")
    say(f"deployment: device -> edge -> cloud, no early exit, bytes per hop {hop_bytes}; Ray start {start_s:.1f} s")
    say(f"{'engine':<7}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'failed':>8}")
    for r in rows:
        say(f"{r['engine']:<7}{r['concurrency']:>5}{r['throughput_per_s']:>9.1f}{1e3 * r['p50_s']:>9.2f}"
            f"{1e3 * r['p90_s']:>9.2f}{1e3 * r['p99_s']:>9.2f}{r['failed']:>8}")
    say("per hop (engine = round trip minus the next node's own time; link model = plan's bytes*8/bw + latency):")
    for h in hops:
        link = "-" if h["link_model_s"] is None else f"{1e3 * h['link_model_s']:.3f} ms"
        say(f"  {h['hop']:<18} engine mean {1e3 * h['engine_s']:.3f} ms  p50 {1e3 * h['engine_p50_s']:.3f} ms  "
            f"link model {link}")
    say("node busy per call: " + ", ".join(f"{k} {1e3 * v:.3f} ms" for k, v in busy.items()))
    for b in bursts:
        say(f"bursts of {b['requests_per_burst']} at once, ingress admits {b['max_concurrent_requests']}: "
            f"wall {', '.join(f'{w:.2f}' for w in b['wall_s'])} s; slowest request "
            f"{', '.join(f'{w:.2f}' for w in b['slowest_request_s'])} s; failed {b['failed']}"
              + (f" (by status {b['failed_by_status']})" if b["failed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
