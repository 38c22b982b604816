"""Render docs/results.md (the README's "Results" section) from the numbers the benchmarks wrote.

Called at the end of a full `benchmarks/paper.py` or `benchmarks/speed.py` run (default --out);
reads benchmarks/results/headline.json and speed_headline.json, so every number in the text
comes from the last run. The verdicts (reproduced or not) are computed from those numbers;
the explanations of why a claim is not reproduced are written here, next to the test that
selects them. `python benchmarks/results_doc.py` re-renders without re-running anything.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_OUT, MODELS, ROOT, md_table, write_text  # noqa: E402

DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
FIG = "benchmarks/results"  # links are relative to the repository root (the README's folder)


def _pct(v, d=1):
    return "n/a" if v is None else f"{100 * v:.{d}f}%"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def multi_at_scale(joint: dict) -> list[str]:
    """The README lines for benchmarks/multi_app.py (issue 14's targets), from multi_app_joint.json."""
    rows = joint["rows"]
    by = {(r["family"], r["size"], r["solver"]): r for r in rows}
    out = ["#### Many applications at scale (`benchmarks/multi_app.py`)\n",
           "Command: `.venv/bin/python benchmarks/multi_app.py` (a few minutes; full tables in "
           f"[{FIG}/multi_app_joint.md]({FIG}/multi_app_joint.md)). The paper's contended setting above up to "
           "333 users per model (999 applications), and random tiered networks with several edge servers. "
           "Times are the solvers' own clocks in one run (FIN: median of 3); the CLI row is "
           "`finplan plan --solver fin --timings` on the same scenario written to files. Every plan states a "
           "lower bound (Lagrangian relaxation of the shared capacities); the gap is to that bound.\n"]
    targets = []
    fin, milp, cli = (by.get(("paper", 40, s)) for s in ("fin", "milp", "fin (CLI)"))
    if fin and milp:
        energy = fin["energy_j"] / milp["energy_j"] - 1 if milp["energy_j"] else None
        targets.append(["120 applications (40 users per model): FIN vs the joint MILP",
                        "same served, within 0.5% energy, <= 0.2x time",
                        f"served {fin['served']} vs {milp['served']}; energy {100 * energy:+.3f}%; "
                        f"{fin['solve_s']:.3f} s vs {milp['solve_s']:.2f} s = {fin['time_vs_milp']:.3f}x",
                        _met(fin["served"] == milp["served"] and energy is not None and energy <= 0.005
                             and fin["time_vs_milp"] <= 0.2)])
    if cli and milp:
        targets.append(["the same through `finplan plan --solver fin --timings`", "<= 0.2x time",
                        f"served {cli['served']}; plan's solve time {cli['solve_s']:.3f} s = "
                        f"{cli['solve_s'] / milp['solve_s']:.3f}x (whole command {cli['wall_s']:.2f} s wall)",
                        _met(cli["served"] == milp["served"] and cli["solve_s"] / milp["solve_s"] <= 0.2)])
    big = by.get(("paper", 333, "fin"))
    if big:
        targets.append([f"{big['applications']} applications (333 users per model): FIN", "<= 10 s, gap <= 1%",
                        f"{big['solve_s']:.2f} s, {big['served']} served, gap to the bound "
                        f"{100 * big['gap_to_bound']:.3f}%",
                        _met(big["solve_s"] <= 10 and big["gap_to_bound"] is not None and big["gap_to_bound"] <= 0.01)])
    out.append(md_table(["what", "target", "measured", ""], targets, "llll"))
    table = []
    for r in rows:
        if r["solver"] in ("milp (warm start)",):
            continue
        table.append([r["family"], r["size"], r["applications"], r["solver"],
                      f"{r['served']}" + (f" (<= {r['served_at_most']})" if r.get("served_at_most") is not None
                                          and r["served_at_most"] > r["served"] else ""),
                      "-" if r["gap_to_bound"] is None else f"{100 * r['gap_to_bound']:.3f}%",
                      "-" if r["energy_vs_milp"] is None else f"{100 * r['energy_vs_milp']:+.3f}%",
                      f"{r['solve_s']:.3g}", "-" if r["time_vs_milp"] is None else f"{r['time_vs_milp']:.3g}x"])
    out.append("")
    out.append(md_table(["family", "size", "apps", "solver", "served", "gap to bound", "energy vs MILP", "solve s",
                         "time / MILP"], table))
    growth = joint.get("fin_time_exponent", {})
    out.append("\nFIN's time grows as applications^k with k = "
               + ", ".join(f"{v:.2f} ({k})" for k, v in growth.items() if v is not None)
               + " (least squares over the sizes above). The MILP runs up to 120 applications with a 60 s limit; "
                 "where it stops there (proven_optimal false in the CSV) its energy is an incumbent. "
                 "`fin-sequential` is the earlier one-by-one planner, kept for comparison.")
    fewer = [(f, by[(f["family"], f["size"], "milp")]) for f in rows if f["solver"] == "fin"
             and (f["family"], f["size"], "milp") in by and f["served"] < by[(f["family"], f["size"], "milp")]["served"]]
    for f, m in fewer:
        out.append(f"On {f['family']} {f['size']} the MILP serves {m['served'] - f['served']} more "
                   f"(FIN {f['served']}, MILP {m['served']}, in {m['solve_s']:.0f} s against FIN's {f['solve_s']:.2f} s): "
                   "joint FIN's integer master is a heuristic over the plans priced so far, and its bound says by how "
                   f"many a plan could be short (at most {f['served_at_most']} served).")
    out.append("")
    return out


def fin_quality(q: dict) -> list[str]:
    """The README lines for speed.py's FIN quality section (issue 16's targets), from speed_quality.json."""
    p = q["paper"]
    out = ["#### FIN's quality against the exact MILP (`benchmarks/speed.py --only-quality`)\n",
           f"Command: `.venv/bin/{q['command']}` ({q['elapsed_s']:.0f} s; every instance in "
           f"[{FIG}/speed_quality.md]({FIG}/speed_quality.md)). FIN at default settings against the MILP (HiGHS, "
           f"time limit {q['milp_time_limit_s']:g} s) on {q['instances']} random instances of 20-100 nodes x "
           "20-100 blocks (three seeds per shape). Where the MILP stops at its limit its energy is an incumbent, "
           "not an optimum; there FIN's own guarantee is what says exact.\n"]
    fin_vs_incumbent = q.get("fin_vs_incumbent_worst")
    within = (q["fin_worst_ratio"] is not None and q["fin_worst_ratio"] <= 1.001
              and (fin_vs_incumbent is None or fin_vs_incumbent <= 1.001))
    rows = [["FIN default on the 87 paper points", "exact on all 87",
             f"optimum at {p['fin_matches_optimum']} of {p['points']}; plans that say exact: {p['fin_exact']}",
             _met(p["fin_matches_optimum"] == p["points"] == p["fin_exact"])],
            ["FIN default on the random instances", "within 0.1% of the optimum",
             f"equal to the optimum on the {q['milp_proven']} the MILP proved (worst ratio {q['fin_worst_ratio']:.6f}); "
             f"at or below the MILP's incumbent on the others (worst {fin_vs_incumbent or 1:.6f}); "
             f"{q['fin_exact']} of {q['instances']} plans say exact",
             _met(within and q["fin_exact"] == q["instances"])],
            ["the old fixed gamma 1000 on the same instances", "-",
             f"worst {q['gamma1000_worst_ratio']:.4f}x the optimum; {q['gamma1000_above_0_1pct']} of "
             f"{q['instances']} more than 0.1% above the MILP", "-"],
            ["FIN default time / MILP time", "<= 0.05x",
             f"max {q['time_ratio_max']:.4f}x (FIN at most {q['fin_s_max']:.2f} s; on the instances the MILP "
             f"proved, max {q['time_ratio_max_proven']:.4f}x)", _met(q["time_ratio_max"] <= 0.05)],
            ["FIN default time / FIN gamma 1000 time, paper instance", "<= 2x",
             f"{p['ratio']:.2f}x ({p['fin_s'] * 1e3:.3f} ms vs {p['gamma1000_s'] * 1e3:.3f} ms)", _met(p["ratio"] <= 2)]]
    out.append(md_table(["what", "target", "measured", ""], rows, "llll"))
    out.append("\nWhere the MILP stops at its time limit, its time is the limit, so the ratio there is an "
               "upper bound of FIN's true ratio to a MILP that finishes.\n")
    return out


def render(out: Path = DEFAULT_OUT, doc: Path = DOC) -> Path | None:
    paper_file, speed_file = out / "headline.json", out / "speed_headline.json"
    if not paper_file.is_file():
        return None
    h = json.loads(paper_file.read_text())
    s = json.loads(speed_file.read_text()) if speed_file.is_file() else None
    lines = []
    add = lines.append
    add("<!-- Generated by benchmarks/results_doc.py from benchmarks/results/*.json; do not edit by hand. "
        "Links are relative to the repository root, for pasting into README.md. -->\n")
    add("## Results\n")
    add("finplan's planner run on the FIN paper's own evaluation: the reference system of the paper "
        "(`examples/paper/`: one device, one edge server, one cloud server; static cost model), the "
        "B-AlexNet, B-ResNet and B-LeNet cards, the two sweeps (energy vs minimum accuracy 0.10..0.85 at 5 ms; "
        "energy vs maximum latency 3..15 ms at accuracy 0.80: 29 points per model, 87 in all) and the "
        "87 exact optima re-derived from the paper's parameters. Energies are per inference, from finplan's "
        "exact evaluator; they are model predictions, not measurements on hardware.\n")
    add(f"- Machine: {h['machine']}.")
    add(f"- Commands: `.venv/bin/python benchmarks/paper.py` ({h['elapsed_s']:.0f} s)"
        + (f" and `.venv/bin/python benchmarks/speed.py` ({s['elapsed_s']:.0f} s)" if s else "")
        + "; they rewrite benchmarks/results/, docs/results.md and this section (`--out DIR --no-docs` "
          "leaves the repository alone); `--quick` runs a reduced sweep in seconds (the smoke test in "
          "`tests/benchmarks/` does).")
    add(f"- Full tables: [{FIG}/summary.md]({FIG}/summary.md)" + (f", [{FIG}/speed.md]({FIG}/speed.md)" if s else "")
        + f"; one CSV per figure in [{FIG}/]({FIG}/). Timings are medians over repeats in one run; "
          "only timing columns change between runs.\n")

    # ------------------------------------------------------------ claims table
    mcp = h["savings_vs_mcp"]
    ratio = h["time_ratio_fin_mcp"]["all"]
    g = {(r["model"], r["gamma"]): r for r in h["gamma"]}
    rows = []
    ok = h["fin_matches_optimum"] == h["points"]
    rows.append(["FIN comes close to / matches the optimum",
                 f"FIN (default: exact latencies) = exhaustive optimum at {h['fin_matches_optimum']} of {h['points']} "
                 f"points (worst gap {_pct(h['fin_worst_gap'], 3)}); the exhaustive optimum = the reference "
                 f"optimum at {h['exhaustive_matches_reference']} of {h['points']}",
                 "reproduced" if ok else "not reproduced"])
    overall = mcp["all"]["mean"]
    alex = mcp["b-alexnet"]
    rows.append(["over 65% energy saving against MCP",
                 f"mean over all {mcp['all']['points']} points {_pct(overall)}; per model: "
                 + ", ".join(f"{m} {_pct(mcp[m]['mean'])}" for m in MODELS),
                 "reproduced" if overall is not None and overall > 0.65 else
                 ("reproduced on B-AlexNet only (note 1)" if alex["mean"] and alex["mean"] > 0.65 else "not reproduced")])
    rows.append(["up to 87.6% saving on B-AlexNet",
                 f"up to {_pct(alex['max'])} (range {_pct(alex['min'])} .. {_pct(alex['max'])})",
                 "reproduced" if alex["max"] is not None and abs(alex["max"] - 0.876) < 0.01 else "not exactly (note 2)"])
    res = mcp["b-resnet"]
    rows.append(["up to 28% saving on B-ResNet", f"up to {_pct(res['max'])} (range {_pct(res['min'])} .. "
                 f"{_pct(res['max'])})",
                 "reproduced" if res["max"] is not None and abs(res["max"] - 0.28) < 0.02 else "not reproduced (note 3)"])
    rows.append(["FIN's run time within 2.5x of MCP's",
                 f"{ratio['median']:.1f}x median over the 87 points (max {ratio['max']:.1f}x; whole `solve()` "
                 f"calls {ratio['median_call']:.1f}x); FIN {h['fin_solve_ms']['all']['median']:.2f} ms per point",
                 "reproduced" if ratio["median"] <= 2.5 else "not reproduced (note 4)"])
    a3 = g.get(("b-alexnet", 3))
    if a3:
        rows.append(["gamma = 3 finds no solution at 19 of 29 B-AlexNet points",
                     f"no solution at {a3['no_solution']} of {a3['feasible_points']}",
                     "reproduced" if a3["no_solution"] == 19 else "not reproduced"])
    a1000, r50 = g.get(("b-alexnet", 1000)), g.get(("b-resnet", 50))
    if a1000 and r50:
        good = a1000["optimal"] == a1000["feasible_points"] and r50["optimal"] == r50["feasible_points"]
        scan = h.get("gamma_scan", {})
        extra = ""
        if scan:
            extra = "; smallest gamma optimal from there on: " + ", ".join(
                f"{m} {(v['largest_failing'] or 0) + 1}" for m, v in scan.items())
        rows.append(["gamma = 1000 optimal at every B-AlexNet point, gamma = 50 at every B-ResNet point",
                     f"B-AlexNet at 1000: {a1000['optimal']} of {a1000['feasible_points']}; B-ResNet at 50: "
                     f"{r50['optimal']} of {r50['feasible_points']}{extra}", "reproduced" if good else "not reproduced"])
    multi = [r for r in h["multi"] if r["solver"] == "mcp"]
    if multi:
        best = max((r["fin_saving_on_both_served"] for r in multi if r["fin_saving_on_both_served"] is not None),
                   default=None)
        rows.append(["journal: over 89% saving with several co-existing applications",
                     f"up to {_pct(best)} against MCP on the applications both serve (1..20 users per model, "
                     "setting below)", "reproduced" if best is not None and best > 0.89 else "not reproduced (note 5)"])
    add("### The paper's claims beside finplan's measurements\n")
    add(md_table(["paper (INFOCOM 2024 / ToN 2025)", "finplan, measured", "verdict"], rows, "lll"))
    add("")
    add("Notes:\n")
    add(f"1. The mean depends on which sweep points are averaged. On B-AlexNet, the model the paper's MCP "
        f"numbers are given for, FIN saves {_pct(alex['mean'])} on average. On B-LeNet and B-ResNet, MCP stops "
        "at the first exit for low accuracy targets, like the optimum, so those points save 0% and pull "
        "the all-model mean down.")
    add(f"2. Against the FIN paper's MCP baseline (its section 5: device, edge, cloud, cloud, cloud with the last exit, "
        f"0.199 J, at every B-AlexNet point) the optimum saves {_pct(alex['min'])} .. {_pct(alex['max'])}. "
        "The numbers re-derived from the paper's parameters give 55-94% too. The paper's 87.6% is probably "
        "taken over a subset of points or from its own MCP run, which the published parameters do not pin down.")
    add("3. finplan's MCP is checked against the paper only on B-AlexNet: the reference file has MCP's "
        "answer for B-AlexNet alone. On B-ResNet the same greedy offloads to the edge and the cloud, because "
        "those tiers compute faster at MCP's 10x time scale. It then ships 16 KB tensors whose transfer "
        "energy dwarfs the compute, while the optimum keeps everything on the device. So the savings are "
        "much larger than the paper's 28%. The paper's MCP must have behaved differently on B-ResNet, in "
        "ways the published description does not fix.")
    add(f"4. Both solvers finish in well under a millisecond on this 3-node instance (FIN "
        f"{h['fin_solve_ms']['all']['median']:.2f} ms, inside the 5 ms target). MCP's greedy is a few scalar "
        "operations per block; FIN builds the feasible inference graph (on sparse Pareto frontiers of latency "
        "units, so its cost hardly depends on gamma once dominated replicas are dropped) and re-checks its "
        "answer with the exact model. The ratio is a ratio of two sub-millisecond Python timings and moves "
        "with the load on the machine. FIN is slowest relative to MCP at low accuracy targets: MCP stops "
        "after the first block at the first exit, while FIN weighs every exit that meets the target (there all of "
        "them) before it settles on the first. "
        "On larger instances FIN's cost grows roughly linearly in nodes and blocks (see the speed section).")
    add("5. The journal's multi-application network and workload are not published with enough detail to "
        "rebuild. finplan's setting (below) is a contended version of the paper's 3-tier system, and the "
        "savings depend on that setting.\n")

    # ------------------------------------------------------------ figures
    add("### Figures\n")
    figs = [("energy_vs_accuracy.png", "Energy vs minimum accuracy at 5 ms, every solver (feasible plans only)"),
            ("energy_vs_latency.png", "Energy vs maximum latency at accuracy 0.80"),
            ("breakdown.png", "Compute vs transfer energy, FIN and MCP, at every sweep point"),
            ("scatter.png", "Every configuration (placement x final exit) in energy, latency and accuracy"),
            ("gamma.png", "FIN's sensitivity to gamma: points with no solution or a suboptimal one"),
            ("multi_app.png", "Several applications sharing the edge and cloud: served, energy, solve time"),
            ("dynamic.png", "Dynamic mode (early exits with thresholds) against the static model")]
    if s:
        figs.append(("speed.png", "Planner scaling in nodes, blocks and gamma: time and peak memory"))
    for name, caption in figs:
        add(f"**{caption}**\n\n![{caption}]({FIG}/{name})\n")

    # ------------------------------------------------------------ gamma
    add("### Sensitivity to gamma (29 points per model)\n")
    add(md_table(["model", "gamma", "no solution", "suboptimal", "worst gap", "solve time per point (ms)"],
                 [[r["model"], r["gamma"], r["no_solution"], r["suboptimal"], _pct(r["worst_gap"], 2),
                   f"{r['solve_ms_per_point']:.3f}"] for r in h["gamma"]]))
    add("")

    # ------------------------------------------------------------ multi
    ms = h["multi_setting"]
    onset = next((r["users_per_model"] for r in sorted(h["multi"], key=lambda r: r["users_per_model"])
                  if r["solver"] == "fin" and (r["served"] < r["applications"] or max(
                      r["edge_utilization"], r["cloud_utilization"]) >= 0.99 * ms["max_utilization"])), None)
    add("### Several applications\n")
    add(f"For n = 1..20 users per model (3n applications), each user has its own device (the paper's), and all "
        f"users share the paper's edge and cloud server. Every application runs at {ms['rate_hz']:g} "
        f"inferences/s, and the edge and the cloud accept at most {ms['max_utilization']:.0%} utilisation "
        "(`max_utilization`), so that contention binds"
        + (f" (from {onset} users per model on, FIN's plan uses at least 99% of the edge's or the cloud's share, "
           "or leaves applications out)" if onset else "") + ". Constraints: "
        + ", ".join(f"{m} < {v['max_latency_ms']:g} ms and accuracy > {v['min_accuracy']:g}"
                    for m, v in ms["constraints"].items())
        + ". FIN plans the applications jointly (joint FIN: column generation over single-application FIN "
          f"plans, see Planning); the MILP plans them jointly and exactly (HiGHS, time limit {ms['milp_time_limit_s']:g} s). "
          "MCP ignores capacity, and an application whose MCP plan does not fit is counted as not served.\n")
    table = []
    for users in sorted({r["users_per_model"] for r in h["multi"]}):
        by = {r["solver"]: r for r in h["multi"] if r["users_per_model"] == users}
        f, m, c = by["fin"], by["milp"], by["mcp"]
        table.append([users, f["applications"], f"{f['served']} / {m['served']} / {c['served']}",
                      _pct(f["energy_gap_vs_milp"], 3) if f["energy_gap_vs_milp"] is not None else "served differ",
                      _pct(c["fin_saving_on_both_served"]),
                      f"{f['solve_s'] * 1e3:.1f} / {m['solve_s'] * 1e3:.1f} / {c['solve_s'] * 1e3:.2f}"])
    add(md_table(["users per model", "applications", "served FIN / MILP / MCP", "FIN energy gap to the MILP",
                  "FIN saving vs MCP (apps both serve)", "solve ms FIN / MILP / MCP"], table))
    fin_rows = [r for r in h["multi"] if r["solver"] == "fin"]
    worse = [r for r in fin_rows if r["energy_gap_vs_milp"] is None or r["energy_gap_vs_milp"] > 1e-9]
    slower = [r["users_per_model"] for r in fin_rows
              if r["solve_s"] > next(o["solve_s"] for o in h["multi"] if o["solver"] == "milp"
                                     and o["users_per_model"] == r["users_per_model"])]
    add("")
    add(("FIN serves as many applications as the joint MILP, at the same total energy, at every size measured. "
         if not worse else
         f"FIN differs from the joint MILP at {len(worse)} of {len(fin_rows)} sizes (see the table). ")
        + (f"FIN is slower than the MILP at {len(slower)} of {len(fin_rows)} sizes ({', '.join(map(str, slower))} "
           "users per model)." if slower else "FIN is faster than the MILP at every size measured.") + "\n")
    joint = _load(out / "multi_app_joint.json")
    if joint:
        lines.extend(multi_at_scale(joint))

    # ------------------------------------------------------------ dynamic
    add("### Dynamic mode: what early exits save beyond the static model\n")
    add("The paper's models come without per-sample exit scores. As a stand-in, each model keeps its costs "
        "(ops per block, tensor sizes) and takes the exit behaviour of finplan's embedded B-AlexNet trained on "
        "scikit-learn digits: per-sample max-softmax confidences, predictions and per-exit accuracies "
        f"({h['calibration_source']}). B-LeNet's two exits take the digits model's first and last exit. "
        "So accuracies are digits accuracies ("
        + " / ".join(f"{k} {v:.3f}" for k, v in sorted(h.get("digits_exit_accuracy", {}).items()))
        + "), not CIFAR-10's. The comparison "
        "is therefore between static and dynamic mode on the same stand-in card, at the same constraints: "
        "static picks one final exit; dynamic also picks confidence thresholds for the earlier exits from "
        "the calibration quantiles. It is not a claim about B-AlexNet on CIFAR-10. The latency sweep uses "
        "minimum accuracy 0.95, between the first and second exit's accuracy.\n")
    add(md_table(["model + digits exits", "points", "mean saving vs static optimum", "range",
                  "points only dynamic can serve", "FIN (dynamic) worst gap to optimum"],
                 [[m, v["points_compared"], _pct(v["mean_saving"]), f"{_pct(v['min_saving'])} .. {_pct(v['max_saving'])}",
                   v["only_dynamic_feasible"], _pct(v["fin_worst_gap"], 3)] for m, v in h["dynamic"].items()]))
    add("\nAt low accuracy targets both modes stop at the first exit (saving 0%). The saving appears where the "
        "static model must run past the first exit: letting the confident samples leave early keeps the "
        "policy's accuracy above the target at a fraction of the energy.\n")

    # ------------------------------------------------------------ speed
    if s:
        p = s["paper_instance"]
        add("### Planner speed (`benchmarks/speed.py`)\n")
        rows = [["FIN on the paper instance (B-AlexNet, 5 ms, 0.80)", "< 5 ms", f"{p['fin_solve_s'] * 1e3:.3f} ms",
                 "met" if p["fin_solve_s"] < 5e-3 else "not met"],
                ["FIN time / MCP time on the paper instance", "<= 2.5x", f"{p['ratio']:.1f}x",
                 "met" if p["ratio"] <= 2.5 else "not met (note 4)"]]
        for r in s["big"]:
            rows.append([f"{r['nodes']} nodes x {r['blocks']} blocks x gamma {r['gamma']}, {r['network']} network "
                         f"({r['links']} links)", "< 2 s, < 1 GiB",
                         f"{r['time_s']:.2f} s, {r['peak_mib']:.0f} MiB peak",
                         "met" if r["time_target_met"] and r["memory_target_met"] else "not met"])
        m = s["milp"]
        rows.append([f"FIN vs exact MILP, {m['instances']} random instances (10 nodes, 12 blocks)", "report",
                     f"FIN optimal on {m['fin_optimal']} of {m['both_feasible']} (worst gap {_pct(m['worst_gap'], 3)}); "
                     f"FIN takes {m['time_ratio_median']:.3f}x the MILP's time (median; FIN {m['fin_ms_median']:.1f} ms, "
                     f"MILP {m['milp_ms_median']:.0f} ms)", "-"])
        add(md_table(["what", "target", "measured", ""], rows, "llll"))
        e = s["exponents"]
        add(f"\nGrowth of FIN's time on random tiered networks (fitted exponent of time ~ size^k): nodes "
            f"k = {e['nodes']['time']:.2f}, blocks k = {e['blocks']['time']:.2f}, gamma k = {e['gamma']['time']:.2f}. "
            f"Peak memory: nodes k = {e['nodes']['memory']:.2f}, blocks k = {e['blocks']['memory']:.2f}, "
            f"gamma k = {e['gamma']['memory']:.2f}. At these sizes the time is dominated by per-hop Python/numpy "
            "work, so it grows with blocks x links and only weakly with gamma, while memory grows with gamma "
            "(at most one [nodes x gamma] layer per block; the sparse Pareto layers are far smaller). Profiler run time and repeatability, and the runtime "
            "overhead of split execution, are measured by `benchmarks/profile_repeatability.py` and "
            "`benchmarks/runtime_overhead.py`.\n")
    quality = _load(out / "speed_quality.json")
    if quality:
        lines.extend(fin_quality(quality))
    text = "\n".join(lines)
    write_text(doc, text)
    if doc == DOC:
        splice_into_readme(text)
    return doc


def splice_into_readme(text: str, readme: Path = README) -> bool:
    """Replace the README's results section (between the START and END markers) with ``text``,
    so the README always shows the latest run. Returns False when the markers are absent."""
    if not readme.is_file():
        return False
    current = readme.read_text()
    if START not in current or END not in current:
        return False
    body = text.split("\n", 1)[1] if text.startswith("<!--") else text  # drop the generator comment
    head, rest = current.split(START, 1)
    _, tail = rest.split(END, 1)
    write_text(readme, f"{head}{START}\n{body.strip()}\n{END}{tail}")
    return True


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Re-render docs/results.md and the README's results section "
                                                 "from the numbers the last benchmark run wrote (runs nothing).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the benchmarks' output folder")
    print(render(parser.parse_args().out))
