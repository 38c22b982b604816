"""The exact optimum as a mixed-integer linear program (HiGHS), for one or several applications."""
from __future__ import annotations

import os
import sys

import numpy as np

from finplan.partition.context import AppContext, AppResult
from finplan.partition.evaluate import Usage
from finplan.partition.explain import infeasibility_reason

MAX_RETIGHTEN = 5


def _new_highs():
    import highspy

    # HiGHS prints a banner on stdout (C level) the first time; keep stdout clean for --json.
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            highs = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
    except OSError:
        highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.setOptionValue("random_seed", 0)
    highs.setOptionValue("mip_rel_gap", 0.0)
    highs.setOptionValue("mip_abs_gap", 0.0)
    highs.setOptionValue("primal_feasibility_tolerance", 1e-9)
    highs.setOptionValue("mip_feasibility_tolerance", 1e-9)
    return highs


class _Model:
    def __init__(self):
        self.cost: list[float] = []
        self.rows: list[tuple[float, float, list[int], list[float]]] = []

    def var(self, cost: float) -> int:
        self.cost.append(float(cost))
        return len(self.cost) - 1

    def row(self, lower: float, upper: float, terms: dict[int, float]) -> int:
        idx = sorted(terms)
        self.rows.append((lower, upper, idx, [terms[i] for i in idx]))
        return len(self.rows) - 1


def milp(ctxs: list[AppContext], usage: Usage | None = None) -> list[AppResult]:
    """Minimum total energy of several applications jointly, exactly (HiGHS branch and bound).

    Problem: for every application, one exit policy and one node per deployed block (a path
    through the block layers along links), minimising the summed expected energy, subject to
    each application's latency bound and, shared by all, node utilisation
    (sum rate x expected busy time <= max_utilization), link utilisation and memory_bytes.
    Applications that cannot all be served: the model serves as many as possible, then
    minimises energy (unserved ones get a reason).
    Returns one AppResult per application (evaluations re-checked with the exact model;
    latency rows are re-tightened when HiGHS's tolerance lets a hair-thin violation through).
    Complexity: NP-hard in general; size O(sum over apps of P B |links|) binaries.
    """
    usage = usage or Usage()
    tighten = {}
    for _ in range(MAX_RETIGHTEN):
        chosen = _solve(ctxs, usage, tighten)
        results, retry = [], False
        running = Usage(dict(usage.node_utilization), dict(usage.node_memory_bytes), dict(usage.link_utilization))
        evaluations = []
        for a, ctx in enumerate(ctxs):
            if chosen[a] is None:
                evaluations.append(None)
                continue
            policy_index, nodes = chosen[a]
            ev = ctx.evaluate(policy_index, nodes)
            evaluations.append(ev)
            if ev.violations:
                retry = True
                tighten[(a, policy_index)] = tighten.get((a, policy_index), 1.0) * (1 - 1e-7)
        if not retry:
            break
    for a, ctx in enumerate(ctxs):
        ev = evaluations[a]
        if ev is None:
            _kind, reason = infeasibility_reason(ctx, running)
            if _kind == "capacity" and len(ctxs) > 1:
                reason = "the applications cannot all fit the shared node and link capacity; this one was left out"
            results.append(AppResult(ctx.app, None, reason))
            continue
        ev = ctx.evaluate(chosen[a][0], chosen[a][1], running)
        running = running.plus(ev)
        results.append(AppResult(ctx.app, ev) if ev.feasible else
                        AppResult(ctx.app, None, "; ".join(ev.violations)))
    return results


def _solve(ctxs: list[AppContext], usage: Usage, tighten: dict):
    import highspy

    model = _Model()
    network = ctxs[0].network
    names = network.names
    n_nodes = len(names)
    node_util: dict[int, dict[int, float]] = {j: {} for j in range(n_nodes)}
    node_mem: dict[int, dict[int, float]] = {j: {} for j in range(n_nodes)}
    link_util: dict[tuple[int, int], dict[int, float]] = {}
    # Unserved applications cost more than any served plan, so the model serves the most it can.
    big = 1.0
    served_vars, decode = [], []
    for a, ctx in enumerate(ctxs):
        table = ctx.table
        src = ctx.source
        rate = ctx.app.rate_hz
        choice: dict[int, float] = {}
        app_decode = []
        for p in ctx.accurate():
            chain = ctx.chain(p)
            k = chain.n_blocks
            limit = ctx.app.max_latency_s * tighten.get((a, p), 1.0)
            lat_terms: dict[int, float] = {}
            layer_vars: list[dict[tuple[int, int], int]] = []
            first = [src] if ctx.options.first_block_at_source else [m for m in range(n_nodes) if table.has_link[src, m]]
            starts = {}
            for m in first:
                if not table.has_link[src, m]:
                    continue
                t = table.transfer_time_s(src, m, chain.input_bytes) + chain.comp_time_s[0, m]
                e = table.transfer_energy_j(src, m, chain.input_bytes) + chain.comp_energy_j[0, m]
                if t / ctx.app.max_latency_s > 1.0:
                    continue
                v = model.var(e)
                big += e
                starts[(src, m)] = v
                choice[v] = 1.0
                lat_terms[v] = t / ctx.app.max_latency_s
                if m != src and rate is not None:
                    link_util.setdefault((src, m), {})[v] = rate * 8.0 * chain.input_bytes * table.link_s_per_bit[src, m]
            layer_vars.append(starts)
            for b in range(1, k):
                hops = {}
                nbytes, prob = chain.out_bytes[b - 1], chain.trans_prob[b - 1]
                for n in range(n_nodes):
                    for m in range(n_nodes):
                        if not table.has_link[n, m]:
                            continue
                        t = table.transfer_time_s(n, m, nbytes) + chain.comp_time_s[b, m]
                        e = prob * table.transfer_energy_j(n, m, nbytes) + chain.comp_energy_j[b, m]
                        v = model.var(e)
                        big += e
                        hops[(n, m)] = v
                        lat_terms[v] = t / ctx.app.max_latency_s
                        if n != m and rate is not None:
                            link_util.setdefault((n, m), {})[v] = rate * prob * 8.0 * nbytes * table.link_s_per_bit[n, m]
                layer_vars.append(hops)
            # flow conservation: what arrives at (b, n) leaves it towards block b+1
            for b in range(k - 1):
                for n in range(n_nodes):
                    terms = {v: 1.0 for (_, m), v in layer_vars[b].items() if m == n}
                    for (m0, _), v in layer_vars[b + 1].items():
                        if m0 == n:
                            terms[v] = terms.get(v, 0.0) - 1.0
                    if terms:
                        model.row(0.0, 0.0, terms)
            # latency, normalised by the budget, only for the chosen policy (sum of starts)
            terms = dict(lat_terms)
            for v in starts.values():
                terms[v] = terms.get(v, 0.0) - limit / ctx.app.max_latency_s
            model.row(-np.inf, 0.0, terms)
            for b, hops in enumerate(layer_vars):
                for (_, m), v in hops.items():
                    if rate is not None:
                        node_util[m][v] = rate * chain.busy_s[b, m]
                    if np.isfinite(table.memory_bytes[m]):
                        node_mem[m][v] = chain.mem_bytes[b]
            app_decode.append((p, layer_vars))
        served = model.var(0.0)
        served_vars.append(served)
        choice[served] = -1.0
        model.row(0.0, 0.0, choice)
        decode.append(app_decode)
    for s in served_vars:
        model.cost[s] = -10.0 * big
    ref = ctxs[0].table
    for j in range(n_nodes):
        if node_util[j]:
            model.row(-np.inf, ref.max_utilization[j] - usage.node_utilization.get(names[j], 0.0), node_util[j])
        if node_mem[j]:
            model.row(-np.inf, ref.memory_bytes[j] - usage.node_memory_bytes.get(names[j], 0.0), node_mem[j])
    for (n, m), terms in link_util.items():
        model.row(-np.inf, ref.link_max_utilization[n, m] - usage.link_utilization.get((names[n], names[m]), 0.0), terms)

    highs = _new_highs()
    n_vars = len(model.cost)
    chosen: list = [None] * len(ctxs)
    if n_vars == len(ctxs):
        return chosen
    highs.addVars(n_vars, np.zeros(n_vars), np.ones(n_vars))
    idx = np.arange(n_vars, dtype=np.int32)
    highs.changeColsIntegrality(n_vars, idx, np.array([highspy.HighsVarType.kInteger] * n_vars))
    highs.changeColsCost(n_vars, idx, np.array(model.cost))
    for lower, upper, cols, vals in model.rows:
        highs.addRow(lower, upper, len(cols), np.array(cols, dtype=np.int32), np.array(vals))
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return chosen
    x = np.array(highs.getSolution().col_value)
    for a, app_decode in enumerate(decode):
        for p, layer_vars in app_decode:
            active = [(key, v) for key, v in layer_vars[0].items() if x[v] > 0.5]
            if not active:
                continue
            nodes = [active[0][0][1]]
            for hops in layer_vars[1:]:
                nxt = [key for key, v in hops.items() if x[v] > 0.5 and key[0] == nodes[-1]]
                nodes.append(nxt[0][1])
            chosen[a] = (p, nodes)
            break
    return chosen
