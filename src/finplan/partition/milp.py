"""The exact optimum as a mixed-integer linear program (HiGHS), for one or several applications."""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from finplan.partition.context import AppContext, AppResult
from finplan.partition.evaluate import Usage
from finplan.partition.explain import crowded_out, explain

MAX_RETIGHTEN = 5
NO_INCUMBENT = "MILP time limit reached before any feasible plan was found"
# HiGHS statuses that stop the search early; a feasible incumbent is then returned, unproven.
_STOPPED = {"kTimeLimit": "time limit", "kSolutionLimit": "solution limit", "kIterationLimit": "iteration limit",
            "kInterrupt": "interrupted", "kHighsInterrupt": "interrupted", "kMemoryLimit": "memory limit"}


@dataclass
class _Outcome:
    """How one HiGHS run ended: proven optimal, stopped early (why, energy gap, incumbent or
    not), or neither (infeasible model or an error)."""
    proven: bool = True
    stopped: str | None = None
    gap: float | None = None
    incumbent: bool = True
    run_s: float = 0.0
    more_served: bool = False  # the dual bound does not rule out serving more applications

    def note(self) -> str | None:
        if self.stopped is None or not self.incumbent:
            return None
        gap = "unknown" if self.gap is None else f"{100 * self.gap:.3g}%"
        more = " (the bound does not rule out serving more applications)" if self.more_served else ""
        return f"not proven optimal ({self.stopped}), MIP gap {gap}{more}"


def new_highs():
    """A HiGHS instance set up the way every finplan MILP runs.

    Returns
    -------
    highspy.Highs
        Quiet (its banner kept off stdout, so ``--json`` stays clean), one thread, fixed seed,
        zero MIP gaps and 1e-9 feasibility tolerances: deterministic and exact.

    Notes
    -----
    Callers look it up through the module (``milp.new_highs``) so that a caller may wrap it
    (benchmarks/paper.py adds a time limit). O(1).
    """
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


def milp(ctxs: list[AppContext], usage: Usage | None = None, time_limit_s: float | None = None,
         info: dict | None = None, start: list | None = None) -> list[AppResult]:
    """Minimum total energy of several applications jointly, exactly (HiGHS branch and bound).

    For every application, one exit policy and one node per deployed block (a path through the
    block layers along links), minimising the summed expected energy, subject to each
    application's latency bound and, shared by all, node utilisation (sum rate x expected busy
    time <= max_utilization), link utilisation and memory_bytes. Applications that cannot all be
    served: the model serves as many as possible, then minimises energy (unserved ones get a
    reason).

    Parameters
    ----------
    ctxs : list of AppContext
        One context per application.
    usage : Usage or None, optional
        Capacity taken by applications outside ``ctxs``.
    time_limit_s : float or None, optional
        (> 0, or None: no limit) bounds HiGHS's wall time (model building excluded), summed over
        the re-tightening runs. When it stops the search with a feasible incumbent, that plan is
        returned, each result noting "not proven optimal (time limit), MIP gap X%" (X: the
        incumbent's objective minus HiGHS's dual bound, over the incumbent's energy; when the
        bound allows serving more applications, the gap counts that too, is huge, and the note
        says so); with no incumbent, every application is unserved with the reason
        ``NO_INCUMBENT``.
    info : dict or None, optional
        Receives proven_optimal (bool), stopped (None or why) and mip_gap (fraction or None).
    start : list or None, optional
        A starting plan handed to HiGHS (``setSolution``), per application (policy index, node
        indices) or None (unserved), e.g. joint FIN's plan; HiGHS checks it and starts its
        search from it (a feasible start is an incumbent from the first node on).

    Returns
    -------
    list of AppResult
        One per application (evaluations re-checked with the exact model; latency rows are
        re-tightened when HiGHS's tolerance lets a hair-thin violation through).

    Raises
    ------
    ValueError
        For a time limit that is not a positive number (a caller's bug: ``solve`` checks it).

    Notes
    -----
    Complexity: NP-hard in general; the model has O(sum over apps of P B |links|) binaries.
    """
    if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                     or not math.isfinite(time_limit_s) or time_limit_s <= 0):
        raise ValueError(f"time_limit_s is {time_limit_s!r}; expected a number > 0 or None")
    usage = usage or Usage()
    tighten = {}
    spent = 0.0
    outcome = _Outcome()
    chosen: list = [None] * len(ctxs)
    evaluations: list = [None] * len(ctxs)
    for attempt in range(MAX_RETIGHTEN):
        left = None if time_limit_s is None else time_limit_s - spent
        if left is not None and left <= 0 and attempt > 0:
            break  # keep the previous run's plan (its violations are reported below)
        chosen, outcome = _solve(ctxs, usage, tighten, left, start if attempt == 0 else None)
        spent += outcome.run_s
        retry = False
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
    if info is not None:
        info.update(proven_optimal=outcome.proven, stopped=outcome.stopped, mip_gap=outcome.gap)
    results: list = [None] * len(ctxs)
    running = Usage(dict(usage.node_utilization), dict(usage.node_memory_bytes), dict(usage.link_utilization))
    note = outcome.note()
    notes = [note] if note else []
    for a, ctx in enumerate(ctxs):
        if evaluations[a] is None:
            continue
        ev = ctx.evaluate(chosen[a][0], chosen[a][1], running)
        running = running.plus(ev)
        results[a] = (AppResult(ctx.app, ev, notes=list(notes)) if ev.feasible else
                      AppResult(ctx.app, None, "; ".join(ev.violations), list(notes)))
    for a, ctx in enumerate(ctxs):
        if results[a] is None:
            reason = _left_out_reason(ctx, usage, running, outcome, len(ctxs), time_limit_s)
            results[a] = AppResult(ctx.app, None, reason, list(notes))
    return results


def _set_start(highs, n_vars: int, decode: list, served_vars: list, start: list) -> None:
    """Hand HiGHS the starting plan ``start`` (see ``milp``): the start and hop variables of
    each served application's policy along its nodes, and its served variable, set to 1. An
    application whose plan is not in the model (a pruned first hop) is left unserved."""
    import highspy

    x = np.zeros(n_vars)
    for a, plan in enumerate(start):
        if plan is None:
            continue
        policy, nodes = plan
        layers = next((lv for p, lv in decode[a] if p == policy), None)
        if layers is None or len(layers) != len(nodes):
            continue
        keys = [next((k for k in layers[0] if k[1] == nodes[0]), None)] + \
            [(nodes[b - 1], nodes[b]) for b in range(1, len(nodes))]
        if keys[0] is None or any(k not in layer for k, layer in zip(keys, layers)):
            continue
        for k, layer in zip(keys, layers):
            x[layer[k]] = 1.0
        x[served_vars[a]] = 1.0
    solution = highspy.HighsSolution()
    solution.col_value = x.tolist()
    solution.value_valid = True
    highs.setSolution(solution)


def _left_out_reason(ctx: AppContext, usage: Usage, served: Usage, outcome: _Outcome, n_apps: int,
                     time_limit_s: float | None) -> str:
    """Why the joint model serves no plan for ``ctx``. ``usage``: capacity taken before the
    solve; ``served``: that plus the served applications' plans. When the application cannot
    fit even alone, the reason it cannot (``explain`` with ``usage``); when it fits alone, what
    a placement that fits alone would exceed next to the served applications."""
    if outcome.stopped is not None and not outcome.incumbent:
        return NO_INCUMBENT if outcome.stopped == "time limit" else \
            f"the MILP stopped ({outcome.stopped}) before any feasible plan was found"
    why = explain(ctx, usage)
    alone = why.witness
    if n_apps > 1 and why.kind == "capacity" and not why.proven and alone is None:
        solo = milp([ctx], usage, time_limit_s)[0]  # exact: does it fit with no other application?
        alone = solo.evaluation if solo.feasible else None
    if n_apps > 1 and alone is not None:
        reason = crowded_out(ctx, alone, served)
    else:
        reason = why.sentence
    if outcome.stopped is not None:
        reason = (f"the MILP's best plan within its {outcome.stopped} leaves this application out "
                  f"(not proven necessary); {reason}")
    return reason


def _solve(ctxs: list[AppContext], usage: Usage, tighten: dict, time_limit_s: float | None = None,
           start: list | None = None):
    """Build and run the joint model: (per application (policy, nodes) or None, _Outcome)."""
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
        pairs = list(zip(*(v.tolist() for v in np.nonzero(table.has_link))))
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
                for n, m in pairs:  # the links (and staying), row by row: same order as a double loop
                    t = table.transfer_time_s(n, m, nbytes) + chain.comp_time_s[b, m]
                    if n != m:  # leaving n ends a runtime stage there (0 after exit heads)
                        t += chain.cut_time_s[b - 1, n]
                    e = prob * table.transfer_energy_j(n, m, nbytes) + chain.comp_energy_j[b, m]
                    v = model.var(e)
                    big += e
                    hops[(n, m)] = v
                    lat_terms[v] = t / ctx.app.max_latency_s
                    if n != m and rate is not None:
                        link_util.setdefault((n, m), {})[v] = rate * prob * 8.0 * nbytes * table.link_s_per_bit[n, m]
                        if chain.cut_busy_s[b - 1, n]:
                            node_util[n][v] = node_util[n].get(v, 0.0) + rate * chain.cut_busy_s[b - 1, n]
                layer_vars.append(hops)
            # flow conservation: what arrives at (b, n) leaves it towards block b+1
            for b in range(k - 1):
                # grouped by node once (rows in node order, as a scan of every node would give)
                arrive: dict[int, list[int]] = {}
                leave: dict[int, list[int]] = {}
                for (_, m), v in layer_vars[b].items():
                    arrive.setdefault(m, []).append(v)
                for (m0, _), v in layer_vars[b + 1].items():
                    leave.setdefault(m0, []).append(v)
                for n in sorted(set(arrive) | set(leave)):
                    terms = {v: 1.0 for v in arrive.get(n, ())}
                    for v in leave.get(n, ()):
                        terms[v] = terms.get(v, 0.0) - 1.0
                    model.row(0.0, 0.0, terms)
            # latency, normalised by the budget, only for the chosen policy (sum of starts)
            terms = dict(lat_terms)
            for v in starts.values():
                terms[v] = terms.get(v, 0.0) - limit / ctx.app.max_latency_s
            model.row(-np.inf, 0.0, terms)
            for b, hops in enumerate(layer_vars):
                for (_, m), v in hops.items():
                    if rate is not None:
                        node_util[m][v] = node_util[m].get(v, 0.0) + rate * chain.busy_s[b, m]
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

    highs = new_highs()
    n_vars = len(model.cost)
    chosen: list = [None] * len(ctxs)
    if n_vars == len(ctxs):
        return chosen, _Outcome()
    highs.addVars(n_vars, np.zeros(n_vars), np.ones(n_vars))
    idx = np.arange(n_vars, dtype=np.int32)
    highs.changeColsIntegrality(n_vars, idx, np.array([highspy.HighsVarType.kInteger] * n_vars))
    highs.changeColsCost(n_vars, idx, np.array(model.cost))
    for lower, upper, cols, vals in model.rows:
        highs.addRow(lower, upper, len(cols), np.array(cols, dtype=np.int32), np.array(vals))
    if time_limit_s is not None:
        highs.setOptionValue("time_limit", max(float(time_limit_s), 1e-6))
    if start is not None:
        _set_start(highs, n_vars, decode, served_vars, start)
    began = time.perf_counter()
    highs.run()
    run_s = time.perf_counter() - began
    status = highs.getModelStatus()
    outcome = _Outcome(run_s=run_s)
    if status != highspy.HighsModelStatus.kOptimal:
        stopped = _STOPPED.get(getattr(status, "name", str(status)).split(".")[-1])
        if stopped is None:
            return chosen, _Outcome(proven=False, run_s=run_s)
        info = highs.getInfo()
        feasible = int(highspy.SolutionStatus.kSolutionStatusFeasible)
        if int(info.primal_solution_status) != feasible or not math.isfinite(info.objective_function_value):
            return chosen, _Outcome(proven=False, stopped=stopped, incumbent=False, run_s=run_s)
        x = np.array(highs.getSolution().col_value)
        served = sum(1 for v in served_vars if x[v] > 0.5)
        energy = info.objective_function_value + 10.0 * big * served
        bound = info.mip_dual_bound
        gap = (float(max(0.0, info.objective_function_value - bound) / energy)
               if energy > 0 and math.isfinite(bound) else None)
        # served applications weigh 10 big each, all energies together less than big
        outcome = _Outcome(proven=False, stopped=stopped, gap=gap, run_s=run_s,
                           more_served=not math.isfinite(bound) or info.objective_function_value - bound > big)
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
    return chosen, outcome
