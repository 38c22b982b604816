"""Runtime overhead and closed-loop accuracy of the local executor, on this machine.

1. Overhead of splitting: a static plan that puts every block of the embedded model on one
   node; ``finplan run``'s executor at batch 1 against one onnxruntime session running the whole
   model (every output), same inputs, same session options, input by input in alternating
   order; the ratio is the median over repeats (all in one run).
2. Closed loop on the profiled machine: the model is profiled here, a dynamic plan keeps every
   block on this machine, and the executor's measured mean latency and exit rates on the
   calibration set are compared with the plan's expected values.

Usage: python benchmarks/runtime_overhead.py [--repeats 7] [--limit 300] [--budget-s 10] [--json]
Targets (issue 5): ratio within 5% (<= 1.05); latency within 10%; exit rates within 2 points.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _cli(*argv) -> None:
    """One finplan command in-process; its own output is kept off stdout (ours may be --json)."""
    from finplan.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"finplan {' '.join(map(str, argv))} failed with exit code {code}")


def _network(profile: Path) -> str:
    return ("schema: finplan.network/1\n"
            f"nodes:\n  - {{name: this, tier: mobile, profile: {profile}}}\n"
            "links: []\n")


def _time_interleaved(executor, session, input_name: str, outputs: list[str], x: np.ndarray) -> tuple[float, float]:
    """Seconds per input of (executor at batch 1, whole-model session), input by input in
    alternating order, so that load from other processes on a shared machine hits both alike."""
    clock = time.perf_counter
    executor_s = whole_s = 0.0
    for i in range(x.shape[0]):
        sample = x[i:i + 1]
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = clock()
            if which == 0:
                executor.run_batch(sample)
                executor_s += clock() - start
            else:
                session.run(outputs, {input_name: sample})
                whole_s += clock() - start
    return executor_s / x.shape[0], whole_s / x.shape[0]


def main() -> None:
    import onnxruntime as ort

    from finplan.data import embedded_model_path, load_data
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.executor import LocalExecutor
    from finplan.deploy.node_runtime import session_options
    from finplan.deploy.report import build_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--limit", type=int, default=300, help="calibration samples (profile, plan and run)")
    parser.add_argument("--budget-s", type=float, default=10.0, help="profiler time budget")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = embedded_model_path()
    work = Path(tempfile.mkdtemp(prefix="finplan-overhead-"))
    profile, card = work / "this.profile.json", work / "card.json"
    _cli("profile", model, "--calib", "embedded", "--limit", args.limit, "--budget-s", args.budget_s, "--quiet",
         "-o", profile, "--card", card, *(["--threads", args.threads] if args.threads else []))
    (work / "network.yaml").write_text(_network(profile))
    card_doc = json.loads(card.read_text())
    final_accuracy = card_doc["exits"][-1]["accuracy"]

    # 1. static: every block on one node, only the final exit active
    _cli("plan", "--model", card, "--network", work / "network.yaml", "--source", "this", "--mode", "static",
         "--max-latency", "10s", "--min-accuracy", f"{final_accuracy - 1e-6:.6f}", "-o", work / "static.plan.json")
    _cli("emit", work / "static.plan.json", "--model", model, "-o", work / "static")
    static_index = json.loads((work / "static" / "deployment.json").read_text())
    data = load_data("embedded", (1, 32, 32), split="calibration", limit=args.limit)
    x = data.x
    executor = LocalExecutor(work / "static", threads=args.threads)
    stages = [len(executor.runtimes[n].stages) for n in executor.runtimes]
    # the executor's parts run with the profile's thread count (from the manifest): so does the whole model
    threads = args.threads or json.loads(profile.read_text())["session_options"]["intra_op_threads"]
    session = ort.InferenceSession(str(model), sess_options=session_options(threads),
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    all_outputs = [o.name for o in session.get_outputs()]
    _time_interleaved(executor, session, input_name, all_outputs, x[:20])  # warm-up
    executor_s, whole_s = [], []
    for _ in range(args.repeats):
        e, w = _time_interleaved(executor, session, input_name, all_outputs, x)
        executor_s.append(e)
        whole_s.append(w)
    ratio = statistics.median(e / w for e, w in zip(executor_s, whole_s))

    # 2. dynamic: every block on this machine, early exits where the planner wants them
    _cli("plan", "--model", card, "--network", work / "network.yaml", "--source", "this", "--mode", "dynamic",
         "--max-latency", "10s", "--min-accuracy", f"{final_accuracy - 1e-6:.6f}", "-o", work / "dynamic.plan.json")
    _cli("emit", work / "dynamic.plan.json", "--model", model, "-o", work / "dynamic")
    dyn_executor = LocalExecutor(work / "dynamic", threads=args.threads)
    dyn_executor.run(x[:20])  # warm-up
    runs = [dyn_executor.run(x, data.y, batch_size=1) for _ in range(3)]
    measured = runs[int(np.argsort([float(np.mean(r.latency_s)) for r in runs])[1])]  # the median run
    report = build_report(measured, load_deployment(work / "dynamic"))
    rows = {row["metric"]: row for row in report["comparison"]}
    app = json.loads((work / "dynamic.plan.json").read_text())["applications"][0]
    profile_doc = json.loads(profile.read_text())

    result = {
        "machine": {"cpu": profile_doc["device"]["cpu"], "cores": profile_doc["device"]["cores"],
                    "onnxruntime": ort.__version__, "threads": threads,
                    "threads_chosen_by": "--threads" if args.threads else "the profiler (fastest whole model)",
                    "threads_choice": profile_doc["session_options"].get("threads_choice")},
        "overhead": {
            "samples": int(x.shape[0]), "repeats": args.repeats, "final_exit": static_index["final_exit"],
            "stages_per_node": stages,
            "executor_batch1_s_median": statistics.median(executor_s),
            "whole_model_session_s_median": statistics.median(whole_s),
            "ratio_median": ratio, "target": "<= 1.05",
        },
        "closed_loop": {
            "plan": {"final_exit": app["final_exit"], "thresholds": app.get("thresholds"),
                     "expected_latency_s": app["predicted"]["expected_latency_s"],
                     "exit_rates": app["predicted"]["exit_rates"]},
            "measured_mean_latency_s": report["latency_s"]["mean"],
            "latency_relative_error": rows["latency_mean"]["relative_error"],
            "exit_rates_measured": report["exit_rates"],
            "measured_mean_latency_s_per_exit": {
                name: float(np.mean([t for t, e in zip(measured.latency_s, measured.exit_names) if e == name]))
                for name in report["exit_rates"] if report["exit_counts"].get(name)},
            "exit_rate_difference_points": {k: 100 * (rows[f"exit_rate[{k}]"]["difference"] or 0.0)
                                            for k in report["exit_rates"]},
            "targets": "latency within 10%, exit rates within 2 points",
            # the per-stage runtime cost the planner added once per stage (measured by the profiler)
            "stage_overhead_s": (profile_doc.get("stage_overhead_s") or {}).get("value"),
            "profile_block_latency_s": {b["name"]: {"mean": b["latency_s"]["mean"], "p50": b["latency_s"]["p50"]}
                                        for b in profile_doc["blocks"] + profile_doc["exits"]},
        },
        "work_dir": str(work),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    o, c = result["overhead"], result["closed_loop"]
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, {m['threads']} intra-op "
          f"thread(s) chosen by {m['threads_chosen_by']}")
    print(f"[overhead] all blocks on one node ({o['stages_per_node']} stage(s)), batch 1, {o['samples']} inputs x "
          f"{o['repeats']} repeats: executor {o['executor_batch1_s_median'] * 1e6:.1f} us, whole-model session "
          f"{o['whole_model_session_s_median'] * 1e6:.1f} us per input; ratio {o['ratio_median']:.3f} (target <= 1.05)")
    print(f"[closed loop] plan: final {c['plan']['final_exit']}, thresholds {c['plan']['thresholds']}")
    if c["stage_overhead_s"] is not None:
        print(f"  profiled stage overhead (added once per runtime stage): {c['stage_overhead_s'] * 1e6:.1f} us")
    print(f"  mean latency: predicted {c['plan']['expected_latency_s'] * 1e6:.1f} us, measured "
          f"{c['measured_mean_latency_s'] * 1e6:.1f} us ({100 * c['latency_relative_error']:+.1f}%, target 10%)")
    print("  measured mean latency per exit: " + ", ".join(
        f"{k} {v * 1e6:.1f} us" for k, v in c["measured_mean_latency_s_per_exit"].items()))
    for name, rate in c["exit_rates_measured"].items():
        print(f"  exit rate {name}: predicted {100 * c['plan']['exit_rates'].get(name, 0):.1f}%, measured "
              f"{100 * rate:.1f}% ({c['exit_rate_difference_points'][name]:+.1f} points, target 2)")
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
