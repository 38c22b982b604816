"""Many applications sharing capacity: joint FIN against sequential FIN and the joint MILP.

    .venv/bin/python benchmarks/multi_app.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/multi_app.py --quick    # small sizes only (seconds; the smoke test)

Two families of instances:

- paper: the contended setting of benchmarks/paper.py (n users per model, each with its own
  device, sharing the paper's edge and cloud at max_utilization 0.2, 200 inferences/s each),
  n = 10 .. 333 (30 .. 999 applications);
- tiered: random tiered networks with several edge servers (seeded): one device per
  application, of one of three speeds, linked to one or two of the edge servers (and to the cloud
  with probability 1/2); every edge linked to the cloud; edge and cloud max_utilization 0.3;
  the paper's three models in turn at 200 inferences/s with the paper setting's constraints.

Per instance: served applications, total energy, the lower bound and the gap to it
(``solver.lower_bound``), for joint FIN (``--solver fin``), sequential FIN
(``fin-sequential``; up to SEQUENTIAL_MAX_APPS) and the joint MILP (HiGHS, cold and
warm-started from FIN's plan, MILP_TIME_LIMIT_S; up to MILP_MAX_APPS). Times are the solver's
own clock (SolveResult.solve_time_s, the cost tables excluded), medians over --repeats for FIN
and one run for the slow solvers; the CLI row times ``finplan plan --solver fin --timings``
(the plan's solve_time_s and the whole command's wall time). The fitted growth of FIN's time
is the least-squares exponent k of time ~ applications^k.

Writes into --out (default benchmarks/results/): multi_app_joint.csv, multi_app_joint.md,
multi_app_joint.json. Only timing columns change between runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import MODELS, fit_exponent, md_table, paper_card, paper_network, write_csv, write_text  # noqa: E402

MILP_TIME_LIMIT_S = 60.0
MILP_MAX_APPS = 120
SEQUENTIAL_MAX_APPS = 120
RATE_HZ = 200.0
TIERED_MAX_UTILIZATION = 0.3
CONSTRAINTS = {"b-alexnet": (0.005, 0.80), "b-resnet": (0.0015, 0.80), "b-lenet": (0.00002, 0.95)}


def tiered_scenario(n_apps: int, n_edges: int, seed: int):
    """A random tiered network (see the module docstring) with ``n_apps`` applications."""
    import numpy as np

    from finplan.partition.documents import network_from_dict
    from finplan.partition.problem import Application, Options, Scenario

    rng = np.random.default_rng(seed)
    ref = paper_network()
    device, edge, cloud = (ref.node(n) for n in ("device", "edge", "cloud"))
    speeds = (0.5, 1.0, 2.0)
    nodes, links = [], []

    def link(src, dst, proto, scale=1.0):
        return {"from": src, "to": dst, "bandwidth_bps": proto.bandwidth_bps * scale, "latency_s": proto.latency_s,
                "energy_j_per_bit": proto.energy_j_per_bit}

    edges = [f"edge-{j + 1}" for j in range(n_edges)]
    for j, name in enumerate(edges):
        nodes.append({"name": name, "tier": "edge", "max_utilization": TIERED_MAX_UTILIZATION,
                      "compute": {"ops_per_s": edge.ops_per_s * (1.0 + 0.25 * j), "power_w": edge.power_w}})
    nodes.append({"name": "cloud", "tier": "cloud", "max_utilization": TIERED_MAX_UTILIZATION,
                  "compute": {"ops_per_s": cloud.ops_per_s, "power_w": cloud.power_w}})
    apps = []
    for a in range(n_apps):
        model = MODELS[a % len(MODELS)]
        name = f"dev-{a + 1}"
        speed = speeds[int(rng.integers(len(speeds)))]
        nodes.append({"name": name, "tier": "mobile",
                      "compute": {"ops_per_s": device.ops_per_s * speed, "power_w": device.power_w}})
        for e in sorted(rng.choice(n_edges, size=int(rng.integers(1, min(2, n_edges) + 1)), replace=False)):
            links.append(link(name, edges[e], ref.link("device", "edge")))
        if rng.random() < 0.5:
            links.append(link(name, "cloud", ref.link("device", "cloud")))
        lat, acc = CONSTRAINTS[model]
        apps.append((name, model, lat, acc))
    for name in edges:
        links.append(link(name, "cloud", ref.link("edge", "cloud")))
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    cards = {m: paper_card(m) for m in MODELS}
    return Scenario(network, tuple(Application(f"app-{i + 1}", cards[m], f"{m}.json", src, lat, acc, RATE_HZ)
                                   for i, (src, m, lat, acc) in enumerate(apps)), Options())


def paper_scenario(users: int):
    from paper import multi_scenario

    return multi_scenario(users)


def _run(scenario, solver, repeats, **kw):
    from finplan.partition.solve import solve

    times, result = [], None
    for _ in range(repeats):
        result = solve(scenario, solver, **kw)
        times.append(result.solve_time_s)
    return result, statistics.median(times)


def _row(family, size, scenario, solver, result, seconds, **more):
    bound = result.extra.get("lower_bound") or {}
    served = sum(r.feasible for r in result.apps)
    return {"family": family, "size": size, "applications": len(scenario.applications), "solver": solver,
            "served": served, "served_at_most": bound.get("served_at_most"), "energy_j": result.energy_j,
            "lower_bound_j": bound.get("energy_j"), "gap_to_bound": bound.get("gap"), "solve_s": seconds,
            "proven_optimal": result.extra.get("proven_optimal", True) if solver.startswith("milp") else None,
            **more}


def _cli_row(family, size, scenario, repeats):
    """``finplan plan --solver fin --timings`` on the scenario written to files."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "network.json").write_text(json.dumps(scenario.network.doc))
        root = common.PAPER
        for m in MODELS:
            (tmp / f"{m}.json").write_text((root / f"{m}.json").read_text())
        apps = [{"name": a.name, "model": f"{a.card.name}.json", "source": a.source, "max_latency_s": a.max_latency_s,
                 "min_accuracy": a.min_accuracy, "rate_hz": a.rate_hz} for a in scenario.applications]
        (tmp / "scenario.json").write_text(json.dumps({"schema": "finplan.scenario/1", "network": "network.json",
                                                       "applications": apps}))
        solve_s, wall_s, doc = [], [], None
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "finplan", "plan", str(tmp / "scenario.json"), "--solver", "fin",
                            "--timings", "-q", "-o", str(tmp / "plan.json")], check=True, cwd=common.ROOT)
            wall_s.append(time.perf_counter() - start)
            doc = json.loads((tmp / "plan.json").read_text())
            solve_s.append(doc["solver"]["solve_time_s"])
    bound = doc["solver"]["lower_bound"]
    return {"family": family, "size": size, "applications": len(apps), "solver": "fin (CLI)",
            "served": doc["totals"]["feasible_applications"], "served_at_most": bound["served_at_most"],
            "energy_j": doc["totals"]["energy_j"], "lower_bound_j": bound["energy_j"], "gap_to_bound": bound["gap"],
            "solve_s": statistics.median(solve_s), "wall_s": statistics.median(wall_s)}


def instance_rows(family, size, scenario, repeats, log, cli: bool = False) -> list[dict]:
    n = len(scenario.applications)
    rows = []
    fin, t = _run(scenario, "fin", repeats)
    rows.append(_row(family, size, scenario, "fin", fin, t))
    if n <= SEQUENTIAL_MAX_APPS:
        seq, t = _run(scenario, "fin-sequential", 1)
        rows.append(_row(family, size, scenario, "fin-sequential", seq, t))
    if n <= MILP_MAX_APPS:
        cold, t = _run(scenario, "milp", 1, warm_start=False, time_limit_s=MILP_TIME_LIMIT_S)
        rows.append(_row(family, size, scenario, "milp", cold, t))
        warm, t = _run(scenario, "milp", 1, time_limit_s=MILP_TIME_LIMIT_S)
        rows.append(_row(family, size, scenario, "milp (warm start)", warm, t))
    if cli:
        rows.append(_cli_row(family, size, scenario, repeats))
    ref = next((r for r in rows if r["solver"] == "milp"), None)
    for r in rows:
        r["energy_vs_milp"] = (r["energy_j"] / ref["energy_j"] - 1 if ref and ref["served"] == r["served"]
                               and ref["energy_j"] > 0 else None)
        r["time_vs_milp"] = r["solve_s"] / ref["solve_s"] if ref and ref["solve_s"] > 0 else None
    log(f"{family} {size}: {n} applications, fin {rows[0]['solve_s']:.3f} s")
    return rows


def summary(rows, growth) -> str:
    out = ["# Many applications: joint FIN, sequential FIN, joint MILP\n",
           f"Machine: {common.machine()}. Times: solver's own clock (s).\n"]
    for family in ("paper", "tiered"):
        sel = [r for r in rows if r["family"] == family]
        if not sel:
            continue
        out.append(f"\n## {family}\n")
        table = []
        for r in sel:
            table.append([r["size"], r["applications"], r["solver"],
                          f"{r['served']}" + (f" (<= {r['served_at_most']})" if r["served_at_most"] is not None
                                              and r["served_at_most"] > r["served"] else ""),
                          f"{r['energy_j']:.6g}", "-" if r["gap_to_bound"] is None else f"{100 * r['gap_to_bound']:.3f}%",
                          "-" if r["energy_vs_milp"] is None else f"{100 * r['energy_vs_milp']:+.3f}%",
                          f"{r['solve_s']:.3g}" + (f" (wall {r['wall_s']:.3g})" if r.get("wall_s") else ""),
                          "-" if r["time_vs_milp"] is None else f"{r['time_vs_milp']:.3g}x"])
        out.append(md_table(["size", "apps", "solver", "served", "energy J", "gap to bound", "energy vs MILP",
                             "solve s", "time / MILP"], table))
        if growth.get(family) is not None:
            out.append(f"\nFIN's time grows as applications^{growth[family]:.2f} (least squares over the sizes above).\n")
    return "".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: python benchmarks/multi_app.py --quick --out /tmp/multi")
    parser.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per FIN timing (median)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", flush=True)

    paper_users = (3, 10) if args.quick else (10, 20, 40, 100, 200, 333)
    tiered = ((12, 2),) if args.quick else ((60, 3), (120, 3), (300, 4), (1000, 4))
    repeats = 1 if args.quick else max(1, args.repeats)
    rows = []
    for users in paper_users:
        rows += instance_rows("paper", users, paper_scenario(users), repeats, log, cli=users in (10, 40))
    for n_apps, n_edges in tiered:
        rows += instance_rows("tiered", f"{n_apps} apps, {n_edges} edges", tiered_scenario(n_apps, n_edges, seed=n_apps),
                              repeats, log)
    growth = {}
    for family in ("paper", "tiered"):
        fin_rows = [r for r in rows if r["family"] == family and r["solver"] == "fin"]
        growth[family] = fit_exponent([r["applications"] for r in fin_rows], [r["solve_s"] for r in fin_rows])
    out = args.out
    columns = ["family", "size", "applications", "solver", "served", "served_at_most", "energy_j", "lower_bound_j",
               "gap_to_bound", "energy_vs_milp", "solve_s", "wall_s", "time_vs_milp", "proven_optimal"]
    write_csv(out / "multi_app_joint.csv", rows, columns)
    write_text(out / "multi_app_joint.md", summary(rows, growth))
    write_text(out / "multi_app_joint.json", json.dumps({"machine": common.machine(), "rows": rows,
                                                          "fin_time_exponent": growth}, indent=1, default=float) + "\n")
    log(f"wrote {out / 'multi_app_joint.md'}")
    if not args.quick and out.resolve() == common.DEFAULT_OUT.resolve():
        from results_doc import render

        render()  # the README's Results section reads multi_app_joint.json
        log("docs/results.md written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
