"""How fast and how lean the planner is, on this machine.

    .venv/bin/python benchmarks/speed.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick    # reduced (seconds; used by the smoke test)

1. Scaling of FIN in nodes (3..200), blocks (5..100) and gamma (10..1000) on seeded random
   tiered networks: time (median over repeats of the whole `solve()` call, cost tables
   included) and peak traced memory (tracemalloc, a separate run so tracing does not slow
   the timed runs), each as a ratio to the smallest instance of its sweep, with the fitted
   growth exponent (least squares on log time vs log size).
2. The issue-4 targets: FIN on the paper instance (B-AlexNet, 5 ms, accuracy 0.80): time and
   ratio to MCP's time (solver clocks, same run); 100 nodes x 50 blocks x gamma 100: time and
   peak memory (targets < 2 s and < 1 GiB), on a sparse and on a dense (every upward link) network.
3. FIN against the exact MILP on 20 random mid-size instances (10 nodes, 12 blocks): time
   ratio and energy gap.
4. FIN's quality (issue 16; alone with --only-quality, a few minutes): FIN at default settings
   and at the old fixed gamma 1000 against the MILP (time limit 20 s: stopped runs are reported
   as incumbent and bound, not as optima) on 20-100 nodes x 20-100 blocks, three seeds each;
   FIN's default on the 87 paper points and its time against gamma 1000 there.

    .venv/bin/python benchmarks/speed.py --only-quality
    .venv/bin/python benchmarks/speed.py --skip-quality   # sections 1-3 only

Writes speed.md, speed.csv (scaling), speed_milp.csv, speed_headline.json, speed.png and
speed_quality.{md,csv,json} into --out.
Profiler run time/repeatability and split-execution overhead are measured by
benchmarks/profile_repeatability.py and benchmarks/runtime_overhead.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402
from common import fit_exponent, md_table, one_app, paper_card, paper_network, pct, write_csv, write_text  # noqa: E402

TIERS = (("mobile", 0.5, (5e9, 2e10), (3.0, 10.0)),
         ("edge", 0.35, (5e10, 2e11), (80.0, 200.0)),
         ("cloud", 0.15, (2e11, 5e11), (250.0, 500.0)))
SPARSE_DEGREE = 6


# ---------------------------------------------------------------- random instances

def random_instance(n_nodes: int, n_blocks: int, seed: int, *, degree: int | None = SPARSE_DEGREE,
                    latency_share: float = 0.5, min_accuracy: float = 0.7):
    """A seeded random tiered network and branchy model, as one application.

    Nodes: about 50% mobile, 35% edge, 15% cloud (at least one of each); node 0 (mobile) is
    the source. Links go to the same or a higher tier: with ``degree`` each node gets that many
    random such out-links (the source always reaches an edge node); with degree None every
    upward / same-tier pair is linked (dense). Model: ``n_blocks`` blocks, exits after about a
    third, two thirds and the last block (accuracy 0.6, 0.75, 0.9); max latency =
    ``latency_share`` x the all-on-source latency of the full model (so offloading is needed),
    raised when even the fastest placement could not meet it.
    """
    from finplan.partition.documents import card_from_dict, network_from_dict
    from finplan.partition.problem import Application, Options, Scenario

    rng = np.random.default_rng(seed)
    counts = [max(1, int(round(n_nodes * share))) for _t, share, _o, _p in TIERS]
    counts[0] = n_nodes - counts[1] - counts[2]
    if counts[0] < 1:
        counts = [1, max(1, n_nodes - 2), 1][:3]
        counts[1] = n_nodes - 2
    nodes, tier_of = [], []
    for t, ((tier, _share, ops, power), count) in enumerate(zip(TIERS, counts)):
        for i in range(count):
            nodes.append({"name": f"{tier}-{i}", "tier": tier,
                          "compute": {"ops_per_s": float(rng.uniform(*ops)), "power_w": float(rng.uniform(*power))}})
            tier_of.append(t)
    links = []
    for a in range(len(nodes)):
        targets = [b for b in range(len(nodes)) if b != a and tier_of[b] >= tier_of[a]]
        if degree is not None and len(targets) > degree:
            targets = sorted(rng.choice(targets, size=degree, replace=False).tolist())
        if a == 0 and not any(tier_of[b] == 1 for b in targets):
            targets.append(counts[0])  # the source always reaches an edge node
        for b in targets:
            links.append({"from": nodes[a]["name"], "to": nodes[b]["name"],
                          "bandwidth_bps": float(rng.uniform(1e8, 1e10)), "latency_s": float(rng.uniform(0, 5e-4)),
                          "energy_j_per_bit": float(rng.uniform(1e-8, 7e-8))})
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    flops = rng.uniform(1e6, 5e7, n_blocks)
    out = rng.uniform(1e3, 2e5, n_blocks)
    exits_after = sorted({max(0, n_blocks // 3 - 1), max(0, 2 * n_blocks // 3 - 1), n_blocks - 1})
    accs = [0.6, 0.75, 0.9][-len(exits_after):]
    card = card_from_dict({
        "schema": "finplan.model/1", "name": f"random-{n_blocks}", "input_bytes": 3072,
        "blocks": [{"name": f"b{i + 1}", "flops": float(flops[i]), "output_bytes": float(out[i] if i < n_blocks - 1 else 0)}
                   for i in range(n_blocks)],
        "exits": [{"name": f"exit{j + 1}", "after": f"b{a + 1}", "flops": 0, "accuracy": acc}
                  for j, (a, acc) in enumerate(zip(exits_after, accs))]}, f"random-{seed}")
    limit = latency_share * float(flops.sum()) / nodes[0]["compute"]["ops_per_s"]
    app = Application("app", card, "random.json", nodes[0]["name"], limit, min_accuracy)
    scenario = Scenario(network, (app,), Options())
    fastest = _fastest(scenario)
    if fastest is not None and fastest >= limit:
        app = Application("app", card, "random.json", nodes[0]["name"], 1.2 * fastest, min_accuracy)
        scenario = Scenario(network, (app,), Options())
    return scenario


def _fastest(scenario) -> float | None:
    from finplan.partition.solve import solve

    result = solve(scenario, "min-latency").apps[0]
    return None if result.evaluation is None else result.evaluation.latency_s


# ---------------------------------------------------------------- measurements

def _solve(scenario, solver="fin", **kw):
    from finplan.partition.solve import solve

    return solve(scenario, solver, **kw)


def time_and_memory(scenario, repeats: int, **kw) -> dict:
    """Median wall time of the whole solve() call, and tracemalloc's peak in one more run."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = _solve(scenario, "fin", **kw)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    tracemalloc.reset_peak()
    _solve(scenario, "fin", **kw)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    app = result.apps[0]
    return {"time_s": statistics.median(times), "peak_bytes": peak, "feasible": app.feasible,
            "energy_j": app.evaluation.energy_j if app.feasible else None,
            "links": len(scenario.network.links)}


def scaling(quick: bool, repeats: int, log) -> list[dict]:
    sweeps = {
        "nodes": ([3, 5, 10, 20] if quick else [3, 5, 10, 20, 50, 100, 200], lambda v: (v, 20, 100)),
        "blocks": ([5, 10, 20] if quick else [5, 10, 20, 50, 100], lambda v: (20, v, 100)),
        "gamma": ([10, 100] if quick else [10, 30, 100, 300, 1000], lambda v: (20, 20, v)),
    }
    rows = []
    for name, (values, shape) in sweeps.items():
        first = None
        for v in values:
            n, b, g = shape(v)
            scenario = random_instance(n, b, seed=1000 + n * 7 + b)
            m = time_and_memory(scenario, repeats, gamma=g)
            first = first or m
            rows.append({"sweep": name, "value": v, "nodes": n, "blocks": b, "gamma": g, "links": m["links"],
                         "feasible": m["feasible"], "time_s": m["time_s"], "time_ratio": m["time_s"] / first["time_s"],
                         "peak_mib": m["peak_bytes"] / 2**20, "memory_ratio": m["peak_bytes"] / first["peak_bytes"]})
        sel = [r for r in rows if r["sweep"] == name]
        size = [r["links"] * r["blocks"] if name == "nodes" else r["value"] for r in sel]
        for r in sel:
            r["fitted_time_exponent"] = fit_exponent([r2["value"] for r2 in sel], [r2["time_s"] for r2 in sel])
            r["fitted_memory_exponent"] = fit_exponent([r2["value"] for r2 in sel], [r2["peak_mib"] for r2 in sel])
        del size
        log(f"scaling in {name} done")
    return rows


def paper_instance(repeats: int) -> dict:
    network = paper_network()
    scenario = one_app(network, paper_card("b-alexnet"), 0.005, 0.80)
    for s in ("fin", "mcp"):
        _solve(scenario, s)  # warm-up
    fin_t, mcp_t, fin_call, mcp_call = [], [], [], []
    for _ in range(repeats):  # interleaved
        start = time.perf_counter()
        r = _solve(scenario, "fin")
        fin_call.append(time.perf_counter() - start)
        fin_t.append(r.solve_time_s)
        start = time.perf_counter()
        m = _solve(scenario, "mcp")
        mcp_call.append(time.perf_counter() - start)
        mcp_t.append(m.solve_time_s)
    f, c = statistics.median(fin_t), statistics.median(mcp_t)
    return {"fin_solve_s": f, "mcp_solve_s": c, "ratio": f / c,
            "fin_call_s": statistics.median(fin_call), "mcp_call_s": statistics.median(mcp_call),
            "call_ratio": statistics.median(fin_call) / statistics.median(mcp_call),
            "fin_energy_j": r.apps[0].evaluation.energy_j, "mcp_energy_j": m.apps[0].evaluation.energy_j,
            "repeats": repeats}


def big_instance(quick: bool, repeats: int, log) -> list[dict]:
    shape = (20, 10, 100) if quick else (100, 50, 100)
    rows = []
    for label, degree in (("sparse", SPARSE_DEGREE), ("dense", None)):
        scenario = random_instance(shape[0], shape[1], seed=4242, degree=degree)
        m = time_and_memory(scenario, repeats, gamma=shape[2])
        rows.append({"network": label, "nodes": shape[0], "blocks": shape[1], "gamma": shape[2],
                     "links": m["links"], "feasible": m["feasible"], "time_s": m["time_s"],
                     "peak_mib": m["peak_bytes"] / 2**20,
                     "time_target_met": m["time_s"] < 2.0, "memory_target_met": m["peak_bytes"] < 2**30})
        log(f"{shape[0]} nodes x {shape[1]} blocks x gamma {shape[2]} ({label}) done")
    return rows


def fin_vs_milp(count: int, repeats: int, log) -> list[dict]:
    from finplan.partition.costs import is_close

    rows = []
    for i in range(count):
        scenario = random_instance(10, 12, seed=7000 + i)
        res = {}
        for s in ("fin", "milp"):
            times, result = [], None
            for _ in range(repeats):
                result = _solve(scenario, s)
                times.append(result.solve_time_s)
            res[s] = (result.apps[0], statistics.median(times))
        (fa, ft), (ma, mt) = res["fin"], res["milp"]
        gap = None
        if fa.feasible and ma.feasible:
            gap = 0.0 if is_close(fa.evaluation.energy_j, ma.evaluation.energy_j) else \
                fa.evaluation.energy_j / ma.evaluation.energy_j - 1
        rows.append({"instance": i, "seed": 7000 + i, "links": len(scenario.network.links),
                     "max_latency_ms": scenario.applications[0].max_latency_s * 1e3,
                     "fin_feasible": fa.feasible, "milp_feasible": ma.feasible,
                     "fin_energy_j": fa.evaluation.energy_j if fa.feasible else None,
                     "milp_energy_j": ma.evaluation.energy_j if ma.feasible else None, "energy_gap": gap,
                     "fin_s": ft, "milp_s": mt, "time_ratio_fin_milp": ft / mt})
    log(f"FIN vs MILP on {count} instances done")
    return rows


# ---------------------------------------------------------------- FIN's quality (issue 16)

QUALITY_SHAPES = ((20, 20), (20, 50), (50, 50), (100, 50), (50, 100), (100, 100))
QUALITY_SEEDS = (0, 1, 2)
QUALITY_MILP_LIMIT_S = 20.0


def _fin_row(scenario, repeats: int, **kw):
    times, result = [], None
    for _ in range(repeats):
        result = _solve(scenario, "fin", **kw)
        times.append(result.solve_time_s)
    return result.apps[0], statistics.median(times)


def fin_quality(quick: bool, log) -> list[dict]:
    """FIN at default settings (exact latencies) and at the old fixed gamma 1000, against the
    exact MILP on seeded random instances of 20-100 nodes x 20-100 blocks. The MILP runs under
    a time limit; where it stops there, its incumbent and its dual bound (incumbent x (1 - MIP
    gap)) are reported, not an optimum, and FIN's ratio to the optimum is only known to lie
    between FIN / incumbent and FIN / bound."""
    shapes = ((20, 20), (20, 30)) if quick else QUALITY_SHAPES
    seeds = (0,) if quick else QUALITY_SEEDS
    limit_s = 5.0 if quick else QUALITY_MILP_LIMIT_S
    rows = []
    for n, b in shapes:
        for seed in seeds:
            scenario = random_instance(n, b, seed=seed)
            fa, ft = _fin_row(scenario, 1 if quick else 3)
            ga, gt = _fin_row(scenario, 1, gamma=1000)
            milp_result = _solve(scenario, "milp", time_limit_s=limit_s)
            ma, mt = milp_result.apps[0], milp_result.solve_time_s
            proven = milp_result.extra.get("proven_optimal", True)
            gap = milp_result.extra.get("mip_gap")
            row = {"nodes": n, "blocks": b, "seed": seed, "links": len(scenario.network.links),
                   "fin_feasible": fa.feasible, "fin_energy_j": fa.evaluation.energy_j if fa.feasible else None,
                   "fin_exact": fa.guarantee["exact"] if fa.feasible else None,
                   "fin_epsilon": fa.guarantee["epsilon"] if fa.feasible else None, "fin_s": ft,
                   "gamma1000_energy_j": ga.evaluation.energy_j if ga.feasible else None, "gamma1000_s": gt,
                   "milp_feasible": ma.feasible, "milp_energy_j": ma.evaluation.energy_j if ma.feasible else None,
                   "milp_proven_optimal": proven, "milp_gap": gap, "milp_s": mt,
                   "milp_bound_j": (ma.evaluation.energy_j * (1 - gap) if ma.feasible and not proven and gap is not None
                                    else None)}
            ref = row["milp_energy_j"]
            row["fin_ratio"] = row["fin_energy_j"] / ref if ref and row["fin_energy_j"] is not None else None
            row["gamma1000_ratio"] = row["gamma1000_energy_j"] / ref if ref and row["gamma1000_energy_j"] else None
            row["fin_ratio_to_bound"] = (row["fin_energy_j"] / row["milp_bound_j"]
                                         if row["milp_bound_j"] and row["fin_energy_j"] is not None else None)
            row["time_ratio_fin_milp"] = ft / mt
            rows.append(row)
            log(f"quality {n} nodes x {b} blocks seed {seed}: FIN {row['fin_ratio']}, gamma 1000 "
                f"{row['gamma1000_ratio']}, MILP {'optimal' if proven else 'stopped'} in {mt:.1f} s")
    return rows


def fin_paper_quality(repeats: int) -> dict:
    """FIN's default on the 87 reference optima, and its time against the old fixed gamma 1000
    on the paper instance (interleaved, solver clocks)."""
    reference = json.loads(common.REFERENCE.read_text())
    network = paper_network()
    cards = {m: paper_card(m) for m in common.MODELS}
    exact = matches = 0
    for vec in reference["optimum_vectors"]:
        card = cards[vec["model"]]
        scenario = one_app(network, card, vec["max_latency_s_exclusive"], vec["min_accuracy_exclusive"])
        app = _solve(scenario, "fin").apps[0]
        opt = vec["optimum"]
        exact += bool(app.feasible and app.guarantee["exact"])
        matches += bool(app.feasible and app.evaluation.placement == opt["placement"]
                        and abs(app.evaluation.energy_j - opt["energy_j"]) <= 1e-9 * opt["energy_j"])
    scenario = one_app(network, cards["b-alexnet"], 0.005, 0.80)
    new_t, old_t = [], []
    for _ in range(repeats):
        new_t.append(_solve(scenario, "fin").solve_time_s)
        old_t.append(_solve(scenario, "fin", gamma=1000).solve_time_s)
    new, old = statistics.median(new_t), statistics.median(old_t)
    return {"points": len(reference["optimum_vectors"]), "fin_matches_optimum": matches, "fin_exact": exact,
            "fin_s": new, "gamma1000_s": old, "ratio": new / old, "repeats": repeats}


def quality_summary(rows: list[dict], paper: dict, limit_s: float) -> dict:
    proven = [r for r in rows if r["milp_proven_optimal"] and r["fin_ratio"] is not None]
    stopped = [r for r in rows if not r["milp_proven_optimal"]]
    return {"instances": len(rows), "milp_time_limit_s": limit_s, "milp_proven": len(proven),
            "fin_worst_ratio": max((r["fin_ratio"] for r in proven), default=None),
            "gamma1000_worst_ratio": max((r["gamma1000_ratio"] for r in proven if r["gamma1000_ratio"]), default=None),
            "gamma1000_above_0_1pct": sum(1 for r in rows if r["gamma1000_ratio"] and r["gamma1000_ratio"] > 1.001),
            "fin_exact": sum(1 for r in rows if r["fin_exact"]),
            "fin_vs_incumbent_worst": max((r["fin_ratio"] for r in stopped if r["fin_ratio"]), default=None),
            "fin_vs_bound_worst": max((r["fin_ratio_to_bound"] for r in stopped if r["fin_ratio_to_bound"]),
                                      default=None),
            "time_ratio_max_proven": max((r["time_ratio_fin_milp"] for r in proven), default=None),
            "time_ratio_max": max(r["time_ratio_fin_milp"] for r in rows),
            "fin_s_max": max(r["fin_s"] for r in rows), "paper": paper}


def quality_report(q: dict, rows: list[dict], command: str, machine: str, elapsed_s: float) -> str:
    p = q["paper"]
    out = ["# FIN's quality and time against the exact MILP (issue 16)\n",
           f"Command: `{command}` (finished in {elapsed_s:.0f} s). Machine: {machine}.\n",
           "FIN at default settings (exact latencies, epsilon 0.001) and at the old fixed gamma 1000 (the "
           "discretised graph), against the MILP (HiGHS) under a time limit of "
           f"{q['milp_time_limit_s']:g} s, on `random_instance` (this file's generator; sparse tiered networks, "
           f"{SPARSE_DEGREE} out-links per node). Times are the solvers' own clocks (FIN: median of 3), in one run. "
           "Where the MILP stopped at its limit its energy is an incumbent, not an optimum: the ratio column is "
           "then FIN / incumbent, and FIN / the MILP's dual bound is an upper bound of FIN's true ratio.\n",
           "## Summary\n"]
    table = [["FIN default on the 87 paper points", "exact on all 87",
              f"optimum at {p['fin_matches_optimum']} of {p['points']}; the plan says exact at {p['fin_exact']}"],
             ["FIN default time / FIN gamma 1000 time, paper instance", "<= 2x", f"{p['ratio']:.2f}x "
              f"({p['fin_s'] * 1e3:.3f} ms vs {p['gamma1000_s'] * 1e3:.3f} ms, median of {p['repeats']})"],
             [f"FIN default vs MILP optimum, {q['milp_proven']} instances the MILP proved", "within 0.1%",
              f"worst ratio {q['fin_worst_ratio']:.6f}" if q["fin_worst_ratio"] else "none proven"],
             ["FIN default, plans that say exact", "-", f"{q['fin_exact']} of {q['instances']}"],
             ["FIN default vs MILP incumbent where the MILP stopped", "-",
              f"worst {q['fin_vs_incumbent_worst']:.6f}; vs its dual bound at most {q['fin_vs_bound_worst']:.3f}"
              if q["fin_vs_incumbent_worst"] else "MILP proved every instance"],
             ["FIN gamma 1000 (old default) vs MILP optimum", "-",
              f"worst ratio {q['gamma1000_worst_ratio']:.4f}; {q['gamma1000_above_0_1pct']} of {q['instances']} "
              "instances more than 0.1% above the MILP"],
             ["FIN default time / MILP time", "<= 0.05x",
              f"max {q['time_ratio_max']:.4f}x (FIN at most {q['fin_s_max']:.2f} s)"]]
    out.append(md_table(["what", "target", "measured"], table, "lll"))
    out.append("\n## Every instance\n")
    out.append(md_table(["nodes", "blocks", "seed", "links", "FIN / MILP", "FIN says", "gamma 1000 / MILP",
                         "MILP", "FIN (s)", "gamma 1000 (s)", "MILP (s)", "FIN/MILP time"],
                        [[r["nodes"], r["blocks"], r["seed"], r["links"],
                          f"{r['fin_ratio']:.6f}" if r["fin_ratio"] else "n/a",
                          "exact" if r["fin_exact"] else (f"<= {r['fin_epsilon']:.3g}" if r["fin_epsilon"] else "-"),
                          f"{r['gamma1000_ratio']:.4f}" if r["gamma1000_ratio"] else "n/a",
                          "optimal" if r["milp_proven_optimal"] else f"stopped, gap {pct(r['milp_gap'])}",
                          f"{r['fin_s']:.3f}", f"{r['gamma1000_s']:.3f}", f"{r['milp_s']:.1f}",
                          f"{r['time_ratio_fin_milp']:.4f}x"] for r in rows]))
    return "\n".join(out) + "\n"


def run_quality(quick: bool, out: Path, log, start: float) -> dict:
    rows = fin_quality(quick, log)
    paper = fin_paper_quality(20 if quick else 200)
    log("quality: paper points done")
    limit_s = 5.0 if quick else QUALITY_MILP_LIMIT_S
    q = quality_summary(rows, paper, limit_s)
    command = "python benchmarks/speed.py --only-quality" + (" --quick" if quick else "")
    q.update(command=command, machine=common.machine(), elapsed_s=time.perf_counter() - start)
    write_csv(out / "speed_quality.csv", rows)
    write_text(out / "speed_quality.md", quality_report(q, rows, command, q["machine"], q["elapsed_s"]))
    write_text(out / "speed_quality.json", json.dumps(q, indent=1, default=common.fmt) + "\n")
    return q


# ---------------------------------------------------------------- report

def figure(rows, out: Path):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, name, xlabel in zip(axes, ("nodes", "blocks", "gamma"),
                                ("nodes (sparse tiered network)", "blocks", "gamma (latency units)")):
        sel = [r for r in rows if r["sweep"] == name]
        xs = [r["value"] for r in sel]
        ax.plot(xs, [r["time_s"] * 1e3 for r in sel], marker="o", color="C0", label="time (ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FIN solve time (ms, median)", color="C0")
        k = sel[0]["fitted_time_exponent"]
        ax.set_title(f"time ~ {name}^{k:.2f}" if k is not None else name)
        ax2 = ax.twinx()
        ax2.plot(xs, [r["peak_mib"] for r in sel], marker="s", ls="--", color="C3", label="peak memory (MiB)")
        ax2.set_yscale("log")
        ax2.set_ylabel("peak traced memory (MiB)", color="C3")
        ax2.grid(False)
    fig.suptitle("FIN scaling (one application; other parameters: 20 nodes, 20 blocks, gamma 100)")
    fig.tight_layout()
    common.save_figure(fig, out / "speed.png")


def report(h, scale_rows, big_rows, milp_rows) -> str:
    p = h["paper_instance"]
    out = ["# Planner speed: measured results\n",
           f"Command: `{h['command']}` (finished in {h['elapsed_s']:.0f} s). Machine: {h['machine']}.\n",
           "Timings are medians over repeats measured in this run; ratios are to a baseline measured in the same "
           "run. Absolute times depend on the machine; the ratios and exponents are what carries over.\n",
           "## Targets (issue 4)\n"]
    big = {r["network"]: r for r in big_rows}
    table = [["FIN on the paper instance (B-AlexNet, 5 ms, acc 0.80)", "< 5 ms",
              f"{p['fin_solve_s'] * 1e3:.3f} ms (whole call {p['fin_call_s'] * 1e3:.3f} ms)",
              "met" if p["fin_solve_s"] < 5e-3 else "NOT met"],
             ["FIN time / MCP time, paper instance", "<= 2.5x (paper)",
              f"{p['ratio']:.2f}x (MCP {p['mcp_solve_s'] * 1e3:.3f} ms; whole calls {p['call_ratio']:.2f}x)",
              "met" if p["ratio"] <= 2.5 else "NOT met"]]
    for label in ("sparse", "dense"):
        r = big[label]
        shape = f"{r['nodes']} nodes x {r['blocks']} blocks x gamma {r['gamma']}, {label} ({r['links']} links)"
        table.append([shape + ": time", "< 2 s", f"{r['time_s']:.3f} s", "met" if r["time_target_met"] else "NOT met"])
        table.append([shape + ": peak memory", "< 1 GiB", f"{r['peak_mib']:.1f} MiB",
                      "met" if r["memory_target_met"] else "NOT met"])
    m = h["milp"]
    table.append([f"FIN vs MILP, {m['instances']} instances (10 nodes, 12 blocks)", "report",
                  f"FIN optimal on {m['fin_optimal']} / {m['both_feasible']}; worst gap {pct(m['worst_gap'], 3)}; "
                  f"time FIN/MILP median {m['time_ratio_median']:.3f}x (max {m['time_ratio_max']:.3f}x)", "-"])
    out.append(md_table(["what", "target", "measured", ""], table, "llll"))
    out.append("\n## Scaling\n")
    out.append("One application on seeded random tiered networks (50% mobile, 35% edge, 15% cloud nodes; "
               f"{SPARSE_DEGREE} random same-or-higher-tier out-links per node); model with three exits, "
               "min accuracy 0.7, max latency half the all-on-source latency. Time: whole `solve()` call "
               "(cost tables, graph, DP, exact re-check). Memory: peak traced by tracemalloc (numpy arrays "
               "included).\n\n")
    table = []
    for r in scale_rows:
        table.append([r["sweep"], r["value"], r["nodes"], r["blocks"], r["gamma"], r["links"],
                      f"{r['time_s'] * 1e3:.2f}", f"{r['time_ratio']:.2f}x", f"{r['peak_mib']:.2f}",
                      f"{r['memory_ratio']:.2f}x"])
    out.append(md_table(["sweep", "value", "nodes", "blocks", "gamma", "links", "time (ms)", "time ratio",
                         "peak MiB", "memory ratio"], table))
    infeasible = [r for r in scale_rows if not r["feasible"]]
    if infeasible:
        out.append("\nNo plan found at: " + ", ".join(f"{r['blocks']} blocks with gamma {r['gamma']}" for r in infeasible)
                   + ". Every hop takes at least one of the gamma latency units (rounding up), so FIN finds nothing "
                     "when gamma is below the number of deployed blocks; it says so and suggests a larger gamma. "
                     "These timings include that explanation.\n")
    out.append("\nFitted growth (time ~ size^k, least squares on log-log): " + "; ".join(
        f"{name}: time k = {v['time']:.2f}, memory k = {v['memory']:.2f}" for name, v in h["exponents"].items()) + ".\n")
    out.append("\n## FIN against the MILP (10 nodes, 12 blocks, 20 seeds)\n")
    out.append(md_table(["instance", "links", "max lat (ms)", "FIN energy (mJ)", "MILP energy (mJ)", "gap",
                         "FIN (ms)", "MILP (ms)", "FIN/MILP time"],
                        [[r["instance"], r["links"], f"{r['max_latency_ms']:.3f}",
                          f"{r['fin_energy_j'] * 1e3:.4f}" if r["fin_energy_j"] is not None else "none",
                          f"{r['milp_energy_j'] * 1e3:.4f}" if r["milp_energy_j"] is not None else "none",
                          pct(r["energy_gap"], 3), f"{r['fin_s'] * 1e3:.2f}", f"{r['milp_s'] * 1e3:.2f}",
                          f"{r['time_ratio_fin_milp']:.3f}x"] for r in milp_rows]))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced (seconds), for the smoke test")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="output folder")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5; --quick 1)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/results.md")
    parser.add_argument("--only-quality", action="store_true",
                        help="run only FIN's quality against the MILP (issue 16; a few minutes): speed_quality.*")
    parser.add_argument("--skip-quality", action="store_true",
                        help="leave FIN's quality section (and speed_quality.*) as the last run left it")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    if args.only_quality:
        run_quality(args.quick, out, log, start)
        if not args.quick and not args.no_docs and out.resolve() == common.DEFAULT_OUT.resolve():
            from results_doc import render

            render()
            log("docs/results.md written")
        log(f"done: {out}")
        return 0
    paper = paper_instance(20 if args.quick else 200)
    log("paper instance done")
    scale_rows = scaling(args.quick, repeats, log)
    big_rows = big_instance(args.quick, 1 if args.quick else 3, log)
    milp_rows = fin_vs_milp(3 if args.quick else 20, 1 if args.quick else 3, log)
    if not args.skip_quality:
        run_quality(args.quick, out, log, start)

    both = [r for r in milp_rows if r["fin_feasible"] and r["milp_feasible"]]
    ratios = [r["time_ratio_fin_milp"] for r in milp_rows]
    h = {"paper_instance": paper, "big": big_rows,
         "milp": {"instances": len(milp_rows), "both_feasible": len(both),
                  "fin_optimal": sum(1 for r in both if r["energy_gap"] == 0.0),
                  "fin_infeasible_where_milp_feasible": sum(1 for r in milp_rows if r["milp_feasible"]
                                                            and not r["fin_feasible"]),
                  "worst_gap": max((r["energy_gap"] for r in both), default=None),
                  "time_ratio_median": statistics.median(ratios), "time_ratio_max": max(ratios),
                  "fin_ms_median": statistics.median(r["fin_s"] for r in milp_rows) * 1e3,
                  "milp_ms_median": statistics.median(r["milp_s"] for r in milp_rows) * 1e3},
         "exponents": {name: {"time": next(r["fitted_time_exponent"] for r in scale_rows if r["sweep"] == name),
                              "memory": next(r["fitted_memory_exponent"] for r in scale_rows if r["sweep"] == name)}
                       for name in ("nodes", "blocks", "gamma")},
         "machine": common.machine(),
         "command": "python benchmarks/speed.py" + (" --quick" if args.quick else ""),
         "elapsed_s": time.perf_counter() - start}
    write_csv(out / "speed.csv", scale_rows)
    write_csv(out / "speed_big.csv", big_rows)
    write_csv(out / "speed_milp.csv", milp_rows)
    figure(scale_rows, out)
    write_text(out / "speed.md", report(h, scale_rows, big_rows, milp_rows))
    write_text(out / "speed_headline.json", json.dumps(h, indent=1, default=common.fmt) + "\n")
    if not args.quick and not args.no_docs and out.resolve() == common.DEFAULT_OUT.resolve():
        from results_doc import render

        render()
        log("docs/results.md written")
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
