"""Reproduce the FIN paper's evaluation with finplan's planner, and go beyond it.

    .venv/bin/python benchmarks/paper.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/paper.py --quick    # reduced sweep (seconds; used by the smoke test)

Everything runs on the paper's reference system (examples/paper/: one device, one edge server,
one cloud server; cost model of section 2 of the FIN paper (Singhal et al., INFOCOM 2024)) with the B-AlexNet, B-ResNet and B-LeNet
cards. Writes into --out (default benchmarks/results/):

  sweeps.csv               every solver at every sweep point (energy vs min accuracy at 5 ms,
                           energy vs max latency at accuracy 0.80), with the compute / transfer
                           energy split, the reference optimum and the solve times
  energy_vs_accuracy.png, energy_vs_latency.png, breakdown.png (+ breakdown.csv)
  scatter.csv / scatter.png      every configuration (placement x exit) scored by the exact evaluator
  gamma.csv, gamma_scan.csv / gamma.png   FIN's sensitivity to the latency resolution gamma
  multi_app.csv / multi_app.png  1..20 users per model sharing the edge and the cloud
  dynamic.csv / dynamic.png      dynamic mode (early exits with thresholds) against the static model
  summary.md, headline.json      the tables; headline.json feeds docs/results.md

Only the timing columns (*_ms, *_s, time ratios) change between runs; everything else is
byte-identical. Timings are medians over --repeats runs of the solver's own clock
(SolveResult.solve_time_s, which excludes building the cost tables).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    MODELS, REFERENCE, md_table, one_app, paper_card, paper_network, paper_sweep_points, pct, write_csv,
    write_text,
)

SOLVERS = ("fin", "exhaustive", "mcp", "device-only", "cloud-only", "single-cut", "min-latency")
LABEL = {"fin": "FIN", "exhaustive": "optimum (exhaustive)", "mcp": "MCP", "device-only": "device only",
         "cloud-only": "cloud only", "single-cut": "single cut", "min-latency": "min latency", "milp": "MILP (joint)"}
STYLE = {"fin": dict(color="C0", marker="o", lw=2), "exhaustive": dict(color="k", marker="x", ls="none", ms=7),
         "mcp": dict(color="C3", marker="s"), "device-only": dict(color="C2", marker="^", ls="--"),
         "cloud-only": dict(color="C4", marker="v", ls="--"), "single-cut": dict(color="C1", marker="d", ls=":"),
         "min-latency": dict(color="C5", marker="<", ls=":"), "milp": dict(color="k", marker="x", ls="--")}
GAMMAS = (3, 5, 10, 20, 50, 100, 1000)
SHORT = {"b-alexnet": "alexnet", "b-resnet": "resnet", "b-lenet": "lenet"}

# Several applications (see multi_app()): every user has its own device (the paper's device);
# all users share one edge and one cloud server (the paper's). Each application runs at RATE_HZ
# inferences per second; the edge and the cloud offer MULTI_MAX_UTILIZATION of their time to
# these applications, so that contention binds from about ten users per model on.
MULTI_RATE_HZ = 200.0
MULTI_MAX_UTILIZATION = 0.2
MULTI_CONSTRAINTS = {"b-alexnet": (0.005, 0.80), "b-resnet": (0.0015, 0.80), "b-lenet": (0.00002, 0.95)}
MILP_TIME_LIMIT_S = 60.0


# ---------------------------------------------------------------- helpers

def _solve(scenario, solver, **kw):
    from finplan.partition.solve import solve

    return solve(scenario, solver, **kw)


def _row_of(result) -> dict:
    """One application's answer as CSV columns (an infeasible baseline keeps what it would deploy)."""
    app = result.apps[0]
    ev = app.evaluation
    if ev is None:
        return {"feasible": False, "placement": None, "final_exit": None, "energy_j": None, "compute_energy_j": None,
                "transfer_energy_j": None, "latency_ms": None, "accuracy": None, "note": app.reason}
    return {"feasible": ev.feasible, "placement": ev.placement, "final_exit": ev.final_exit, "energy_j": ev.energy_j,
            "compute_energy_j": ev.compute_energy_j, "transfer_energy_j": ev.transfer_energy_j,
            "latency_ms": ev.latency_s * 1e3, "accuracy": ev.accuracy,
            "note": None if ev.feasible else "; ".join(ev.violations)}


def _timed(scenario, solver, repeats, **kw):
    """(result, median solver time s, median call time s) over ``repeats`` runs."""
    solve_t, call_t, result = [], [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = _solve(scenario, solver, **kw)
        call_t.append(time.perf_counter() - start)
        solve_t.append(result.solve_time_s)
    return result, statistics.median(solve_t), statistics.median(call_t)


def _reference() -> dict:
    doc = json.loads(REFERENCE.read_text())
    out = {}
    for vec in doc["optimum_vectors"]:
        key = (vec["model"], round(vec["min_accuracy_exclusive"], 4), round(vec["max_latency_s_exclusive"], 6))
        out[key] = vec["optimum"]
    return out


def _sweep_points(quick: bool):
    points = paper_sweep_points()
    if quick:
        keep = {("accuracy", 0.1), ("accuracy", 0.6), ("accuracy", 0.85), ("latency", 0.003), ("latency", 0.006),
                ("latency", 0.015)}
        points = [p for p in points if (p[0], p[1] if p[0] == "accuracy" else p[2]) in keep]
    return points


# ---------------------------------------------------------------- 1. sweeps

def sweeps(network, cards, points, repeats, log) -> list[dict]:
    ref = _reference()
    rows, optimum = [], {}
    warm = one_app(network, cards[MODELS[0]], 0.005, 0.8)
    for s in SOLVERS:  # first calls pay imports and caches; keep them out of the timings
        _solve(warm, s)
    for model in MODELS:
        card = cards[model]
        for sweep, acc, lat in points:
            scenario = one_app(network, card, lat, acc)
            opt = ref.get((model, round(acc, 4), round(lat, 6)))
            # interleave the solvers in every repeat so that drift hits them alike
            times = {s: ([], []) for s in SOLVERS}
            results = {}
            for _ in range(repeats):
                for s in SOLVERS:
                    start = time.perf_counter()
                    results[s] = _solve(scenario, s)
                    times[s][1].append(time.perf_counter() - start)
                    times[s][0].append(results[s].solve_time_s)
            base = {"model": model, "sweep": sweep, "min_accuracy": acc, "max_latency_ms": lat * 1e3,
                    "reference_optimum_j": opt["energy_j"] if opt else None}
            optimum_app = results["exhaustive"].apps[0]
            optimum[(model, sweep, acc, lat)] = optimum_app.evaluation.energy_j if optimum_app.feasible else None
            for s in SOLVERS:
                row = dict(base, solver=s, **_row_of(results[s]))
                if row["feasible"] and optimum_app.feasible:
                    row["gap_vs_optimum"] = row["energy_j"] / optimum_app.evaluation.energy_j - 1
                row["solve_ms"] = statistics.median(times[s][0]) * 1e3
                row["call_ms"] = statistics.median(times[s][1]) * 1e3
                rows.append(row)
        log(f"sweeps: {model} done")
    return rows, optimum


def sweep_figures(rows, out: Path):
    plt = common.pyplot()
    for sweep, xkey, xlabel, title, fname in (
            ("accuracy", "min_accuracy", "minimum accuracy (fraction, strict >)", "max latency 5 ms",
             "energy_vs_accuracy.png"),
            ("latency", "max_latency_ms", "maximum latency (ms, strict <)", "min accuracy 0.80",
             "energy_vs_latency.png")):
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        for ax, model in zip(axes, MODELS):
            for s in SOLVERS:
                pts = [(r[xkey], r["energy_j"]) for r in rows if r["model"] == model and r["sweep"] == sweep
                       and r["solver"] == s and r["feasible"]]
                if pts:
                    ax.plot(*zip(*pts), label=LABEL[s], **STYLE[s])
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("energy per inference (J)")
            ax.set_title(f"{model}, {title}")
        axes[0].legend(fontsize=7)
        fig.suptitle("Energy of each solver's plan (feasible plans only; paper reference system)")
        common.save_figure(fig, out / fname)


def breakdown(rows, out: Path) -> list[dict]:
    """Compute / transfer energy of FIN, the optimum and MCP at every sweep point."""
    keep = [r for r in rows if r["solver"] in ("fin", "exhaustive", "mcp")]
    table = [{k: r[k] for k in ("model", "sweep", "min_accuracy", "max_latency_ms", "solver", "feasible",
                                 "placement", "final_exit", "energy_j", "compute_energy_j", "transfer_energy_j")}
             for r in keep]
    write_csv(out / "breakdown.csv", table)
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for col, model in enumerate(MODELS):
        for row_i, (sweep, xkey, xlabel) in enumerate((("accuracy", "min_accuracy", "min accuracy"),
                                                        ("latency", "max_latency_ms", "max latency (ms)"))):
            ax = axes[row_i][col]
            sel = [r for r in keep if r["model"] == model and r["sweep"] == sweep and r["solver"] in ("fin", "mcp")]
            xs = sorted({r[xkey] for r in sel})
            width = 0.38
            for k, s in enumerate(("fin", "mcp")):
                comp = [next((r["compute_energy_j"] or 0) for r in sel if r["solver"] == s and r[xkey] == x) for x in xs]
                tran = [next((r["transfer_energy_j"] or 0) for r in sel if r["solver"] == s and r[xkey] == x) for x in xs]
                pos = np.arange(len(xs)) + (k - 0.5) * width
                ax.bar(pos, comp, width, color=("C0" if s == "fin" else "C3"), label=f"{LABEL[s]} compute")
                ax.bar(pos, tran, width, bottom=comp, color=("C0" if s == "fin" else "C3"), alpha=0.4, hatch="//",
                       label=f"{LABEL[s]} transfer")
            ax.set_xticks(np.arange(len(xs)))
            ax.set_xticklabels([f"{x:g}" for x in xs], rotation=90 if len(xs) > 8 else 0, fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("energy per inference (J)")
            ax.set_title(f"{model}: {'5 ms' if sweep == 'accuracy' else 'accuracy 0.80'}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Compute vs transfer energy: FIN (left bar) and MCP (right bar)")
    fig.tight_layout()
    common.save_figure(fig, out / "breakdown.png")
    return table


# ---------------------------------------------------------------- 2. scatter

def scatter(network, cards, out: Path) -> list[dict]:
    """Every placement x final exit of each model (block 1 on the device, blocks moving only along
    links), scored by the exact evaluator without constraints."""
    import itertools

    from finplan.partition.evaluate import evaluate
    from finplan.partition.problem import Options

    rows = []
    names = network.names
    for model in MODELS:
        card = cards[model]
        app = one_app(network, card, 1.0, 0.0).applications[0]
        for ex in card.exits:
            k = ex.after + 1
            for rest in itertools.product(names, repeat=k - 1):
                placement = ["device", *rest]
                ev = evaluate(app, network, Options(), placement, ex.name)
                if any(v.startswith("there is no link") for v in ev.violations):
                    continue
                rows.append({"model": model, "placement": placement, "final_exit": ex.name, "accuracy": ev.accuracy,
                             "energy_j": ev.energy_j, "compute_energy_j": ev.compute_energy_j,
                             "transfer_energy_j": ev.transfer_energy_j, "latency_ms": ev.latency_s * 1e3})
    write_csv(out / "scatter.csv", rows)
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, model in zip(axes, MODELS):
        sel = [r for r in rows if r["model"] == model]
        sc = ax.scatter([r["latency_ms"] for r in sel], [r["energy_j"] for r in sel],
                        c=[r["accuracy"] for r in sel], cmap="viridis", s=18, edgecolors="none")
        ax.set_yscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("energy per inference (J)")
        ax.set_title(f"{model}: {len(sel)} configurations")
        ax.axvline(5.0, color="grey", ls=":", lw=1)
        fig.colorbar(sc, ax=ax, label="accuracy (final exit)")
    fig.suptitle("Every configuration (placement x final exit), exact cost model; dotted: 5 ms")
    fig.tight_layout()
    common.save_figure(fig, out / "scatter.png")
    return rows


# ---------------------------------------------------------------- 3. gamma

def gamma_sensitivity(network, cards, points, optimum, gammas, repeats, scan, log):
    """Per model and gamma: points with no solution, suboptimal points, worst gap, solve time.
    ``optimum[(model, sweep, acc, lat)]`` is the exhaustive energy (None: infeasible)."""
    from finplan.partition.costs import is_close

    rows, scan_rows = [], []
    for model in MODELS:
        card = cards[model]
        scenarios = [(p, one_app(network, card, p[2], p[1])) for p in points]
        for g in gammas:
            totals, results = [], None
            for _ in range(repeats):
                results = [_solve(sc, "fin", gamma=g) for _p, sc in scenarios]
                totals.append(sum(r.solve_time_s for r in results))
            none = sub = 0
            worst = 0.0
            for (p, _sc), r in zip(scenarios, results):
                best = optimum[(model, *p)]
                app = r.apps[0]
                if best is None:
                    continue
                if not app.feasible:
                    none += 1
                    continue
                e = app.evaluation.energy_j
                if not is_close(e, best) and e > best:
                    sub += 1
                    worst = max(worst, e / best - 1)
            rows.append({"model": model, "gamma": g, "points": len(points),
                         "feasible_points": sum(optimum[(model, *p)] is not None for p in points),
                         "no_solution": none, "suboptimal": sub, "optimal": len(points) - none - sub
                         - sum(optimum[(model, *p)] is None for p in points),
                         "worst_gap": worst, "solve_ms_total": statistics.median(totals) * 1e3,
                         "solve_ms_per_point": statistics.median(totals) * 1e3 / len(points)})
        if scan:
            for g in scan:
                misses = 0
                for (p, sc) in scenarios:
                    best = optimum[(model, *p)]
                    if best is None:
                        continue
                    app = _solve(sc, "fin", gamma=g).apps[0]
                    if not app.feasible or not is_close(app.evaluation.energy_j, best):
                        misses += 1
                scan_rows.append({"model": model, "gamma": g, "points_not_optimal": misses})
        log(f"gamma: {model} done")
    return rows, scan_rows


def gamma_figure(rows, scan_rows, out: Path):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2 if scan_rows else 1, figsize=(12 if scan_rows else 6, 4), squeeze=False)
    ax = axes[0][0]
    for i, model in enumerate(MODELS):
        sel = [r for r in rows if r["model"] == model]
        ax.plot([r["gamma"] for r in sel], [r["no_solution"] for r in sel], marker="o", color=f"C{i}",
                label=f"{model}: no solution")
        ax.plot([r["gamma"] for r in sel], [r["suboptimal"] for r in sel], marker="s", ls="--", color=f"C{i}",
                label=f"{model}: suboptimal")
    ax.set_xscale("log")
    ax.set_xlabel("gamma (latency units)")
    ax.set_ylabel(f"sweep points (of {rows[0]['points']})")
    ax.set_title("FIN against the exhaustive optimum")
    ax.legend(fontsize=7)
    if scan_rows:
        ax = axes[0][1]
        for i, model in enumerate(MODELS):
            sel = [r for r in scan_rows if r["model"] == model]
            ax.step([r["gamma"] for r in sel], [r["points_not_optimal"] for r in sel], where="post", color=f"C{i}",
                    label=model)
        ax.set_xscale("log")
        ax.set_xlabel("gamma (latency units)")
        ax.set_ylabel("points where FIN is not optimal")
        ax.set_title("Fine scan of gamma")
        ax.legend(fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, out / "gamma.png")


# ---------------------------------------------------------------- 4. several applications

def multi_scenario(users: int):
    """``users`` applications per model, each on its own device, sharing one edge and one cloud."""
    from finplan.partition.documents import network_from_dict
    from finplan.partition.problem import Application, Options, Scenario

    ref = paper_network()
    device, edge, cloud = (ref.node(n) for n in ("device", "edge", "cloud"))
    nodes, links = [], []
    sources = {m: [f"{SHORT[m]}-{u + 1}" for u in range(users)] for m in MODELS}
    for m in MODELS:
        for name in sources[m]:
            nodes.append({"name": name, "tier": "mobile",
                          "compute": {"ops_per_s": device.ops_per_s, "power_w": device.power_w}})
    for node in (edge, cloud):
        nodes.append({"name": node.name, "tier": node.tier, "compute": {"ops_per_s": node.ops_per_s,
                                                                         "power_w": node.power_w},
                      "max_utilization": MULTI_MAX_UTILIZATION})

    def link(src, dst, proto):
        return {"from": src, "to": dst, "bandwidth_bps": proto.bandwidth_bps, "latency_s": proto.latency_s,
                "energy_j_per_bit": proto.energy_j_per_bit}

    for m in MODELS:
        for name in sources[m]:
            links.append(link(name, "edge", ref.link("device", "edge")))
            links.append(link(name, "cloud", ref.link("device", "cloud")))
    links.append(link("edge", "cloud", ref.link("edge", "cloud")))
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    apps = []
    for m in MODELS:
        card = paper_card(m)
        lat, acc = MULTI_CONSTRAINTS[m]
        for name in sources[m]:
            apps.append(Application(name, card, f"{m}.json", name, lat, acc, MULTI_RATE_HZ))
    return Scenario(network, tuple(apps), Options())


def _bounded_milp():
    """Give HiGHS a time limit (the planner's MILP has none); a run that hits it reports no plan."""
    import finplan.partition.milp as milp_module

    original = milp_module.new_highs
    if getattr(original, "_bounded", False):
        return

    def bounded():
        highs = original()
        highs.setOptionValue("time_limit", MILP_TIME_LIMIT_S)
        return highs

    bounded._bounded = True
    milp_module.new_highs = bounded


def multi_app(user_counts, repeats, log) -> list[dict]:
    _bounded_milp()
    rows = []
    for users in user_counts:
        scenario = multi_scenario(users)
        per, by_app = {}, {}
        block = []
        for s in ("fin", "milp", "mcp"):
            kw = {"joint_gap": False} if s == "fin" else {}
            result, solve_s, _call = _timed(scenario, s, repeats, **kw)
            served = [a for a in result.apps if a.feasible]
            energy = sum(a.evaluation.energy_j for a in served)
            per[s] = (len(served), energy)
            by_app[s] = {a.app.name: a.evaluation.energy_j for a in served}
            busy = {}
            for a in served:
                for node, load in a.evaluation.per_node.items():
                    if node in ("edge", "cloud"):
                        busy[node] = busy.get(node, 0.0) + (load["utilization"] or 0.0)
            block.append({"users_per_model": users, "applications": len(result.apps), "solver": s,
                          "served": len(served), "energy_j": energy,
                          "energy_per_served_j": energy / len(served) if served else None,
                          "edge_utilization": busy.get("edge", 0.0), "cloud_utilization": busy.get("cloud", 0.0),
                          "served_by_model": "|".join(f"{SHORT[m]}:{sum(a.app.card.name == m for a in served)}"
                                                      for m in MODELS),
                          "solve_s": solve_s,
                          "milp_timed_out": (s == "milp" and solve_s >= MILP_TIME_LIMIT_S * 0.95) or None})
        for row in block:
            n, e = per[row["solver"]]
            row["energy_gap_vs_milp"] = (e / per["milp"][1] - 1) if per["milp"][0] == n and per["milp"][1] > 0 else None
            # FIN against this solver on the applications both serve (same applications, same constraints)
            common_apps = sorted(set(by_app["fin"]) & set(by_app[row["solver"]]))
            mine = sum(by_app["fin"][a] for a in common_apps)
            theirs = sum(by_app[row["solver"]][a] for a in common_apps)
            row["both_served"] = len(common_apps)
            row["fin_saving_on_both_served"] = (1 - mine / theirs) if theirs > 0 else None
        rows.extend(block)
        log(f"multi: {users} users per model done")
    return rows


def multi_figure(rows, out: Path):
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for s in ("fin", "milp", "mcp"):
        sel = [r for r in rows if r["solver"] == s]
        xs = [r["users_per_model"] for r in sel]
        axes[0].plot(xs, [r["served"] for r in sel], label=LABEL[s], **STYLE[s])
        axes[1].plot(xs, [r["energy_per_served_j"] for r in sel], label=LABEL[s], **STYLE[s])
        axes[2].plot(xs, [max(r["solve_s"], 1e-6) * 1e3 for r in sel], label=LABEL[s], **STYLE[s])
    xs = sorted({r["users_per_model"] for r in rows})
    axes[0].plot(xs, [3 * x for x in xs], color="grey", ls=":", label="all applications")
    axes[0].set_ylabel("applications served (feasible)")
    axes[1].set_ylabel("energy per served inference (J)")
    axes[2].set_ylabel("solve time (ms, median)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("users per model (3 models)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Several applications sharing the edge and cloud ({MULTI_RATE_HZ:g} Hz each; edge and cloud "
                 f"max_utilization {MULTI_MAX_UTILIZATION:g})")
    fig.tight_layout()
    common.save_figure(fig, out / "multi_app.png")


# ---------------------------------------------------------------- 5. dynamic mode

def stand_in_card(model: str, scores: dict):
    """The paper's card of ``model`` (costs) with the embedded digits model's exit behaviour:
    per-sample confidences, predictions and labels of its exits, and its per-exit accuracies.
    B-LeNet has two exits: they take the digits model's first and last exit."""
    from finplan.partition.documents import card_from_dict

    doc = json.loads((common.PAPER / f"{model}.json").read_text())
    digits = scores["exits"]
    mapping = digits if len(doc["exits"]) == len(digits) else [digits[0], digits[-1]]
    labels = scores["labels"]
    doc["name"] = f"{model}+digits-exits"
    exits = []
    for ex, src in zip(doc["exits"], mapping):
        ex["accuracy"] = float(np.mean(src["predicted"] == labels))
        exits.append({"name": ex["name"], "confidence": [float(v) for v in src["confidence"]],
                      "predicted": [int(v) for v in src["predicted"]]})
    doc["calibration"] = {"score": "max_softmax", "labels": [int(v) for v in labels], "exits": exits}
    doc.pop("about", None)
    return card_from_dict(doc, f"{model}+digits")


def dynamic(network, scores, quick, log) -> list[dict]:
    acc_points = [0.10, 0.50, 0.80, 0.90, 0.95, 0.97] if quick else \
        [round(0.10 + 0.05 * i, 2) for i in range(16)] + [0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]
    lat_points = [3, 6, 15] if quick else list(range(3, 16))
    points = [("accuracy", a, 0.005) for a in acc_points] + [("latency", 0.95, ms / 1000) for ms in lat_points]
    rows = []
    for model in MODELS:
        card = stand_in_card(model, scores)
        for sweep, acc, lat in points:
            base = {"model": model, "sweep": sweep, "min_accuracy": acc, "max_latency_ms": lat * 1e3}
            res = {}
            for mode, solver in (("static", "exhaustive"), ("static", "fin"), ("dynamic", "exhaustive"),
                                 ("dynamic", "fin"), ("static", "mcp")):
                r = _solve(one_app(network, card, lat, acc, mode=mode), solver)
                app = r.apps[0]
                ev = app.evaluation
                feasible = app.feasible
                res[(mode, solver)] = ev.energy_j if feasible else None
                rows.append(dict(base, mode=mode, solver=solver, feasible=feasible,
                                 placement=ev.placement if ev else None, final_exit=ev.final_exit if ev else None,
                                 thresholds="|".join(f"{k}>={v:.6g}" for k, v in ev.thresholds.items()) if ev else None,
                                 exit_rates="|".join(f"{k}:{v:.4f}" for k, v in ev.exit_rates.items()) if ev else None,
                                 energy_j=ev.energy_j if ev else None, accuracy=ev.accuracy if ev else None,
                                 latency_ms=ev.latency_s * 1e3 if ev else None,
                                 expected_latency_ms=ev.expected_latency_s * 1e3 if ev else None))
            s_opt, d_opt = res[("static", "exhaustive")], res[("dynamic", "exhaustive")]
            for row in rows[-5:]:
                row["dynamic_saving_vs_static_optimum"] = (1 - d_opt / s_opt) if s_opt and d_opt else None
                if row["mode"] == "dynamic" and row["solver"] == "fin" and row["energy_j"] and d_opt:
                    row["gap_vs_optimum"] = row["energy_j"] / d_opt - 1
        log(f"dynamic: {model} done")
    return rows


def dynamic_figure(rows, out: Path):
    plt = common.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for col, model in enumerate(MODELS):
        for r_i, (sweep, xkey, xlabel, title) in enumerate((
                ("accuracy", "min_accuracy", "minimum accuracy (fraction)", "max latency 5 ms"),
                ("latency", "max_latency_ms", "maximum latency (ms)", "min accuracy 0.95"))):
            ax = axes[r_i][col]
            for (mode, solver), style, label in (
                    (("static", "exhaustive"), dict(color="C1", marker="s"), "static optimum"),
                    (("dynamic", "exhaustive"), dict(color="k", marker="x", ls="none", ms=7), "dynamic optimum"),
                    (("dynamic", "fin"), dict(color="C0", marker="o"), "dynamic FIN"),
                    (("static", "mcp"), dict(color="C3", marker="^", ls="--"), "MCP (static)")):
                pts = [(r[xkey], r["energy_j"]) for r in rows if r["model"] == model and r["sweep"] == sweep
                       and r["mode"] == mode and r["solver"] == solver and r["feasible"]]
                if pts:
                    ax.plot(*zip(*pts), label=label, **style)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("expected energy per inference (J)")
            ax.set_title(f"{model} + digits exits, {title}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Dynamic mode (early exits with thresholds) vs the static model; exit behaviour of the embedded "
                 "digits model")
    fig.tight_layout()
    common.save_figure(fig, out / "dynamic.png")


# ---------------------------------------------------------------- summary

def _savings(rows, model=None, solver="mcp"):
    out = []
    for r in rows:
        if r["solver"] != "fin" or not r["feasible"] or (model and r["model"] != model):
            continue
        other = next(o for o in rows if o["solver"] == solver and o["model"] == r["model"] and o["sweep"] == r["sweep"]
                     and o["min_accuracy"] == r["min_accuracy"] and o["max_latency_ms"] == r["max_latency_ms"])
        if other["feasible"]:
            out.append(1 - r["energy_j"] / other["energy_j"])
    return out


def headline(rows, gamma_rows, scan_rows, multi_rows, dyn_rows, scores_source, args, elapsed) -> dict:
    fin = [r for r in rows if r["solver"] == "fin"]
    opt = {(r["model"], r["sweep"], r["min_accuracy"], r["max_latency_ms"]): r for r in rows if r["solver"] == "exhaustive"}
    match = sum(1 for r in fin if r["feasible"] and r["gap_vs_optimum"] is not None and abs(r["gap_vs_optimum"]) < 1e-9)
    ref_match = sum(1 for r in opt.values() if r["reference_optimum_j"] is not None and r["feasible"]
                    and abs(r["energy_j"] / r["reference_optimum_j"] - 1) < 1e-9)
    h = {"points": len(fin), "fin_matches_optimum": match, "exhaustive_matches_reference": ref_match,
         "fin_worst_gap": max((r["gap_vs_optimum"] or 0.0) for r in fin if r["feasible"]) if fin else None,
         "savings_vs_mcp": {}, "savings_vs_baselines": {}, "time_ratio_fin_mcp": {}, "fin_solve_ms": {}}
    for model in [None, *MODELS]:
        s = _savings(rows, model)
        key = model or "all"
        h["savings_vs_mcp"][key] = {"mean": statistics.mean(s) if s else None, "min": min(s) if s else None,
                                    "max": max(s) if s else None, "points": len(s)}
    for b in SOLVERS[2:]:
        s = _savings(rows, None, b)
        h["savings_vs_baselines"][b] = {"mean": statistics.mean(s) if s else None, "min": min(s) if s else None,
                                        "max": max(s) if s else None, "points": len(s),
                                        "baseline_infeasible": sum(1 for r in rows if r["solver"] == b and not r["feasible"])}
    for model in [None, *MODELS]:
        ratios, calls, fin_ms = [], [], []
        for r in fin:
            if model and r["model"] != model:
                continue
            m = next(o for o in rows if o["solver"] == "mcp" and o["model"] == r["model"] and o["sweep"] == r["sweep"]
                     and o["min_accuracy"] == r["min_accuracy"] and o["max_latency_ms"] == r["max_latency_ms"])
            ratios.append(r["solve_ms"] / m["solve_ms"])
            calls.append(r["call_ms"] / m["call_ms"])
            fin_ms.append(r["solve_ms"])
        key = model or "all"
        h["time_ratio_fin_mcp"][key] = {"median": statistics.median(ratios), "max": max(ratios),
                                        "median_call": statistics.median(calls)}
        h["fin_solve_ms"][key] = {"median": statistics.median(fin_ms), "max": max(fin_ms)}
    h["gamma"] = gamma_rows
    if scan_rows:
        h["gamma_scan"] = {}
        for model in MODELS:
            sel = [r for r in scan_rows if r["model"] == model]
            failing = [r["gamma"] for r in sel if r["points_not_optimal"] > 0]
            h["gamma_scan"][model] = {"largest_failing": max(failing) if failing else None,
                                      "scanned": [sel[0]["gamma"], sel[-1]["gamma"]]}
    h["multi"] = multi_rows
    h["multi_setting"] = {"rate_hz": MULTI_RATE_HZ, "max_utilization": MULTI_MAX_UTILIZATION,
                          "constraints": {m: {"max_latency_ms": v[0] * 1e3, "min_accuracy": v[1]}
                                          for m, v in MULTI_CONSTRAINTS.items()},
                          "milp_time_limit_s": MILP_TIME_LIMIT_S}
    dyn = {}
    for model in MODELS:
        s = [r["dynamic_saving_vs_static_optimum"] for r in dyn_rows if r["model"] == model and r["mode"] == "dynamic"
             and r["solver"] == "exhaustive" and r["dynamic_saving_vs_static_optimum"] is not None]
        extra = [r for r in dyn_rows if r["model"] == model and r["mode"] == "dynamic" and r["solver"] == "exhaustive"
                 and r["feasible"] and not next(o for o in dyn_rows if o["model"] == model and o["sweep"] == r["sweep"]
                                                and o["min_accuracy"] == r["min_accuracy"]
                                                and o["max_latency_ms"] == r["max_latency_ms"]
                                                and o["mode"] == "static" and o["solver"] == "exhaustive")["feasible"]]
        gaps = [r["gap_vs_optimum"] for r in dyn_rows if r["model"] == model and r.get("gap_vs_optimum") is not None]
        dyn[model] = {"mean_saving": statistics.mean(s) if s else None, "max_saving": max(s) if s else None,
                      "min_saving": min(s) if s else None, "points_compared": len(s),
                      "only_dynamic_feasible": len(extra), "fin_worst_gap": max(gaps) if gaps else None}
    h["dynamic"] = dyn
    h["calibration_source"] = scores_source
    h["machine"] = common.machine()
    h["command"] = "python benchmarks/paper.py" + (" --quick" if args.quick else "") + \
        (f" --repeats {args.repeats}" if args.repeats_given else "")
    h["elapsed_s"] = elapsed
    h["repeats"] = args.repeats
    return h


def summary_md(h, rows, dyn_rows) -> str:
    out = ["# Paper reproduction: measured results\n",
           f"Command: `{h['command']}` (finished in {h['elapsed_s']:.0f} s). Machine: {h['machine']}.\n",
           "Reference system: examples/paper/ (section 2 of the FIN paper (Singhal et al., INFOCOM 2024)). Energies are per inference, from the exact "
           "evaluator. Timings: median over "
           f"{h['repeats']} repeat(s) of the solver's own clock; only timing columns change between runs.\n",
           "## FIN against the exhaustive optimum\n",
           f"FIN (default gamma) equals the exhaustive optimum at **{h['fin_matches_optimum']} of {h['points']}** "
           f"sweep points (worst gap {pct(h['fin_worst_gap'], 3)}). The exhaustive optimum equals the paper's "
           f"reference optimum at {h['exhaustive_matches_reference']} of {h['points']} points.\n"]
    rows_t = []
    for key in ("all", *MODELS):
        s = h["savings_vs_mcp"][key]
        t = h["time_ratio_fin_mcp"][key]
        f = h["fin_solve_ms"][key]
        rows_t.append([key, s["points"], pct(s["mean"]), f"{pct(s['min'])} .. {pct(s['max'])}",
                       f"{f['median']:.3f}", f"{t['median']:.2f}x", f"{t['max']:.2f}x", f"{t['median_call']:.2f}x"])
    out.append("## FIN against MCP (energy saving) and solve time\n")
    out.append(md_table(["model", "points", "mean saving", "range", "FIN solve (ms, median)",
                         "FIN/MCP time (median)", "FIN/MCP time (max)", "FIN/MCP whole call"], rows_t))
    out.append("\n## FIN against every baseline (saving where both are feasible)\n")
    out.append(md_table(["baseline", "points compared", "mean saving", "range", "baseline infeasible at"],
                        [[LABEL[b], v["points"], pct(v["mean"]), f"{pct(v['min'])} .. {pct(v['max'])}",
                          v["baseline_infeasible"]] for b, v in h["savings_vs_baselines"].items()]))
    out.append("\n## Per point (energy in mJ; FIN = optimum unless marked)\n")
    for model in MODELS:
        out.append(f"\n### {model}\n")
        table = []
        for r in rows:
            if r["model"] != model or r["solver"] != "fin":
                continue
            same = [o for o in rows if o["model"] == model and o["sweep"] == r["sweep"]
                    and o["min_accuracy"] == r["min_accuracy"] and o["max_latency_ms"] == r["max_latency_ms"]]
            by = {o["solver"]: o for o in same}

            def e(s):
                o = by[s]
                return f"{o['energy_j'] * 1e3:.3f}" + ("" if o["feasible"] else " (infeasible)") \
                    if o["energy_j"] is not None else "none"
            mark = "" if r["gap_vs_optimum"] is not None and abs(r["gap_vs_optimum"]) < 1e-9 else " (!)"
            table.append([f"{r['min_accuracy']:.2f}", f"{r['max_latency_ms']:g}", e("fin") + mark, e("exhaustive"),
                          e("mcp"), e("device-only"), e("cloud-only"), e("single-cut"), e("min-latency"),
                          ",".join(p[0] for p in r["placement"]) + f" / {r['final_exit']}" if r["placement"] else "-"])
        out.append(md_table(["min acc", "max lat (ms)", "FIN", "optimum", "MCP", "device only", "cloud only",
                             "single cut", "min latency", "FIN placement / exit"], table))
    out.append("\n## Sensitivity to gamma\n")
    out.append(md_table(["model", "gamma", "no solution", "suboptimal", "optimal", "worst gap",
                         "solve ms per point (median)"],
                        [[r["model"], r["gamma"], f"{r['no_solution']} / {r['feasible_points']}",
                          r["suboptimal"], r["optimal"], pct(r["worst_gap"], 2), f"{r['solve_ms_per_point']:.3f}"]
                         for r in h["gamma"]]))
    if h.get("gamma_scan"):
        out.append("\nFine scan: largest gamma at which FIN misses the optimum somewhere: " + "; ".join(
            f"{m} {v['largest_failing']} (scanned {v['scanned'][0]}..{v['scanned'][1]})"
            for m, v in h["gamma_scan"].items()) + ".\n")
    ms_ = h["multi_setting"]
    out.append("\n## Several applications\n")
    out.append(f"Users per model share one edge and one cloud server (each user has its own device); every "
               f"application runs at {ms_['rate_hz']:g} inferences/s; edge and cloud accept at most "
               f"{ms_['max_utilization']:.0%} utilisation. Constraints: " + ", ".join(
                   f"{m} < {v['max_latency_ms']:g} ms and > {v['min_accuracy']:g}"
                   for m, v in ms_["constraints"].items()) +
               f". FIN plans the applications one by one on residual capacity (with re-planning); the MILP "
               f"plans them jointly (HiGHS, time limit {ms_['milp_time_limit_s']:g} s); MCP ignores capacity and "
               f"an application whose MCP plan does not fit is counted as not served.\n\n")
    table = []
    for users in sorted({r["users_per_model"] for r in h["multi"]}):
        by = {r["solver"]: r for r in h["multi"] if r["users_per_model"] == users}
        f, m, c = by["fin"], by["milp"], by["mcp"]
        table.append([users, f["applications"], f"{f['served']} / {m['served']} / {c['served']}",
                      f"{f['energy_j']:.4f} / {m['energy_j']:.4f} / {c['energy_j']:.4f}",
                      pct(f["energy_gap_vs_milp"], 3) if f["energy_gap_vs_milp"] is not None else "n/a (served differ)",
                      f"{pct(c['fin_saving_on_both_served'])} ({c['both_served']} apps)",
                      f"{f['edge_utilization']:.2f} / {f['cloud_utilization']:.2f}",
                      f"{f['solve_s'] * 1e3:.1f} / {m['solve_s'] * 1e3:.1f} / {c['solve_s'] * 1e3:.2f}"])
    out.append(md_table(["users/model", "apps", "served FIN / MILP / MCP", "energy J FIN / MILP / MCP",
                         "FIN gap to MILP", "FIN saving vs MCP (apps both serve)", "FIN edge / cloud util",
                         "solve ms FIN / MILP / MCP"], table))
    out.append("\n## Dynamic mode (early exits) against the static model\n")
    out.append(f"Exit behaviour: {h['calibration_source']}. Each paper model keeps its costs (ops, tensor sizes) "
               "and takes the embedded digits model's per-sample exit confidences, predictions and per-exit "
               "accuracies (B-LeNet: digits exits 1 and 3); static and dynamic mode use the same card, so the "
               "difference is what early exits with thresholds save. Latency sweep at min accuracy 0.95.\n\n")
    out.append(md_table(["model", "points compared", "mean saving (dynamic vs static optimum)", "range",
                         "points only dynamic can serve", "dynamic FIN worst gap"],
                        [[m, v["points_compared"], pct(v["mean_saving"]),
                          f"{pct(v['min_saving'])} .. {pct(v['max_saving'])}", v["only_dynamic_feasible"],
                          pct(v["fin_worst_gap"], 3)] for m, v in h["dynamic"].items()]))
    table = []
    for r in dyn_rows:
        if r["model"] != "b-alexnet" or r["mode"] != "dynamic" or r["solver"] != "fin":
            continue
        st = next(o for o in dyn_rows if o["model"] == r["model"] and o["sweep"] == r["sweep"] and o["min_accuracy"]
                  == r["min_accuracy"] and o["max_latency_ms"] == r["max_latency_ms"] and o["mode"] == "static"
                  and o["solver"] == "exhaustive")
        table.append([r["sweep"], f"{r['min_accuracy']:.2f}", f"{r['max_latency_ms']:g}",
                      f"{st['energy_j'] * 1e3:.3f}" if st["feasible"] else "infeasible",
                      f"{r['energy_j'] * 1e3:.3f}" if r["feasible"] else "infeasible",
                      pct(r["dynamic_saving_vs_static_optimum"]), r["thresholds"] or "-", r["exit_rates"] or "-",
                      f"{r['accuracy']:.4f}" if r["feasible"] else "-"])
    out.append("\nB-AlexNet (+ digits exits), per point (energy in mJ):\n\n")
    out.append(md_table(["sweep", "min acc", "max lat (ms)", "static optimum", "dynamic FIN", "saving",
                         "thresholds", "exit rates", "accuracy"], table))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sweep (seconds), for the smoke test")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="output folder")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5; --quick 1)")
    parser.add_argument("--calib-card", type=Path, default=None,
                        help="model card with per-sample exit scores (default: examples/profiles/"
                             "b-alexnet-digits.card.json, else computed from the embedded model)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/results.md")
    args = parser.parse_args(argv)
    args.repeats_given = args.repeats is not None
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    network = paper_network()
    cards = {m: paper_card(m) for m in MODELS}
    points = _sweep_points(args.quick)

    rows, optimum = sweeps(network, cards, points, args.repeats, log)
    write_csv(out / "sweeps.csv", rows, ["model", "sweep", "min_accuracy", "max_latency_ms", "solver", "feasible",
                                          "placement", "final_exit", "energy_j", "compute_energy_j",
                                          "transfer_energy_j", "latency_ms", "accuracy", "gap_vs_optimum",
                                          "reference_optimum_j", "note", "solve_ms", "call_ms"])
    sweep_figures(rows, out)
    breakdown(rows, out)
    scatter(network, cards, out)
    log("sweeps, breakdown, scatter written")

    gammas = (3, 1000) if args.quick else GAMMAS
    scan = None if args.quick else sorted(set(range(1, 201)) | {250, 300, 400, 500, 700, 1000})
    gamma_rows, scan_rows = gamma_sensitivity(network, cards, points, optimum, gammas, args.repeats, scan, log)
    write_csv(out / "gamma.csv", gamma_rows)
    if scan_rows:
        write_csv(out / "gamma_scan.csv", scan_rows)
    gamma_figure(gamma_rows, scan_rows, out)

    users = (1, 3) if args.quick else (1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)
    multi_rows = multi_app(users, 1 if args.quick else 3, log)
    write_csv(out / "multi_app.csv", multi_rows)
    multi_figure(multi_rows, out)

    from calibration_scores import load_scores

    scores = load_scores(args.calib_card)
    dyn_rows = dynamic(network, scores, args.quick, log)
    write_csv(out / "dynamic.csv", dyn_rows)
    dynamic_figure(dyn_rows, out)

    h = headline(rows, gamma_rows, scan_rows, multi_rows, dyn_rows, scores["source"], args,
                 time.perf_counter() - start)
    h["digits_exit_accuracy"] = {e.name: e.accuracy for e in stand_in_card("b-alexnet", scores).exits}
    write_text(out / "summary.md", summary_md(h, rows, dyn_rows))
    write_text(out / "headline.json", json.dumps(h, indent=1, default=common.fmt) + "\n")
    if not args.quick and not args.no_docs and out.resolve() == common.DEFAULT_OUT.resolve():
        from results_doc import render

        render()
        log("docs/results.md written")
    log(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
