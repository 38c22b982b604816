"""Joint FIN: several applications sharing nodes and links, planned together.

The sequential planner (``multi.plan_sequentially``) plans applications one by one on the
capacity the earlier ones left and re-plans when one does not fit; once capacity binds its
time grows with every re-planning pass. Here the applications are planned together by
Dantzig-Wolfe decomposition (column generation; its dual is the Lagrangian relaxation of the
shared capacities):

1. Each application sees only the nodes it can reach from its source (``restrict``), and
   applications with the same model, constraints, rate and reachable costs form one *class*
   (their plans are the same up to the name of their private nodes), so the work below is per
   class, not per application. A node or link reachable by two applications or more is a
   *shared* resource (node utilisation, node memory, link utilisation); one only its own
   application can reach keeps its limit inside the single-application problem.
2. A plan of one application is a *column*: its exact energy and its use of every shared
   resource (``evaluate``). The master problem picks, per class, how many applications use
   each column, within the shared capacities (a linear program over the columns found so far;
   HiGHS). Its duals price the shared resources.
3. Pricing: each class's single-application FIN (``fin.fin``) minimises energy plus the priced
   use, through a priced copy of its context (``priced_context``: the prices are added to the
   block costs and the links' joules per bit that the DP reads; FIN itself is not changed). A
   plan cheaper than the class's dual becomes a new column. Phase 1 maximises the applications
   served (energy weight 0), phase 2 minimises energy serving that many.
4. Lower bound: the Lagrangian function at the master's prices, with each class's priced
   subproblem solved exactly (enumeration of its reachable placements, ``BOUND_ENUMERATION``;
   above that, FIN on a relaxation: no cumulative limits and a latency budget widened by
   FIN's rounding, which is a lower bound as well). It is a valid bound on the energy of any
   plan serving at least as many applications (the MILP optimum included), whatever the
   columns found.
5. Integer plan: the master as an integer program over the columns (HiGHS; a few integer
   variables per class), assigned to the class's applications in scenario order, then checked
   application by application with the exact evaluator on the whole network; applications
   left out are offered the residual capacity (FIN) one class at a time.

Every returned plan is feasible under the exact model. Deterministic: classes, columns and
HiGHS (one thread, fixed seed) run in a fixed order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from finplan.partition.context import AppContext, AppResult
from finplan.partition.evaluate import Usage
from finplan.partition.explain import crowded_out, policy_of
from finplan.partition.fin import fin
from finplan.partition.joint_columns import (
    AppClass, add_column, build_classes, priced_context, priced_cost, restrict,
)
from finplan.partition.joint_master import Master, solve_master
from finplan.partition.search import count_placements, enumerate_best

# Placements per exit policy up to which the bound's subproblem is solved by enumeration (exact).
BOUND_ENUMERATION = 50_000
MAX_ROUNDS = 60
# Integer plan + fill passes (a pass repeats only when the fill served more than the columns).
MAX_FILL_PASSES = 4
# Relative tolerance of a reduced cost (columns are added only when clearly improving).
RC_TOL = 1e-9
# Capacity slack the integer master keeps below each shared limit, relative, raised when the
# exact evaluation disagrees with HiGHS's feasibility tolerance.
TIGHTEN_STEPS = (1e-9, 1e-7, 1e-5)


# ---------------------------------------------------------------- pricing

def _fin_column(cls: AppClass, policy: int, prices, weight, gamma, lam):
    pctx = priced_context(cls.rep, policy, prices, cls, weight)
    res = fin(pctx, gamma, lam)
    if not res.feasible:
        return None
    names = cls.rep.network.names
    return [names.index(n) for n in res.evaluation.placement]


def _exact_min(cls: AppClass, policy: int, prices, weight, gamma, info: "JointInfo"):
    """(priced minimum over the class's plans of one policy, or a lower bound on it; the
    minimising nodes when they are a plan of the real problem, else None). Sets
    ``info.bound_exact`` False when only the relaxation's bound could be computed."""
    pctx = priced_context(cls.rep, policy, prices, cls, weight)
    if count_placements(pctx) <= BOUND_ENUMERATION:
        ev = enumerate_best(pctx)
        if ev is None:
            return math.inf, None
        names = pctx.network.names
        nodes = [names.index(n) for n in ev.placement]
        return priced_cost(pctx, nodes), nodes
    info.bound_exact = False
    # too many placements: FIN on a relaxation (no node or link limits; the latency budget
    # widened by what FIN's rounding up can add on k + 1 hops), whose minimum is a lower bound
    k = pctx.chain(0).n_blocks
    loose = pctx.relaxed(capacity=True)
    if gamma is None:
        # the exact label DP needs no widening; a trimmed frontier is within (1 + epsilon) of the minimum
        res = fin(loose, None, 0.0)
        shrink = _bound_factor(res)
        if shrink is None:  # no stated bound on the latency-limited relaxation: drop the latency limit too
            res = fin(loose.relaxed(latency=True), None, 0.0)
            shrink = _bound_factor(res)
    else:
        if gamma > k + 1:
            widened = pctx.app.max_latency_s * gamma / (gamma - k - 1) * (1 + 1e-9)
            loose = AppContext(replace(loose.app, max_latency_s=widened), loose.network, loose.options, loose.table,
                               loose.policies, loose.quantiles, loose._chains)
        else:
            loose = loose.relaxed(latency=True)
        res = fin(loose, gamma, 0.0)
        shrink = 1.0
    if res.evaluation is None:
        return math.inf, None
    if shrink is None:
        return 0.0, None  # nothing proven about this column's minimum: the trivial bound keeps the bound valid
    names = pctx.network.names
    nodes = [names.index(n) for n in res.evaluation.placement]
    return priced_cost(pctx, nodes) / shrink, None


def _bound_factor(res) -> float | None:
    """1 + epsilon of a FIN answer on exact latencies (1 when exact), None when it states no bound."""
    g = res.guarantee
    if res.evaluation is None or g is None:
        return 1.0
    if g["exact"]:
        return 1.0
    return None if g["epsilon"] is None else 1.0 + g["epsilon"]


# ---------------------------------------------------------------- the method

@dataclass
class JointInfo:
    served_upper_bound: int | None = None
    lower_bound_j: float | None = None
    rounds: int = 0
    columns: int = 0
    classes: int = 0
    bound_exact: bool = True

    def extra(self, served: int, energy_j: float) -> dict:
        """The plan's ``solver.lower_bound`` entry (see plan.schema.json)."""
        gap = None
        if self.lower_bound_j is not None and energy_j > 0:
            gap = max(0.0, (energy_j - self.lower_bound_j) / energy_j)
        return {"method": "lagrangian", "energy_j": None if self.lower_bound_j is None else float(self.lower_bound_j),
                "gap": None if gap is None else float(gap),
                "served": served, "served_at_most": self.served_upper_bound, "classes": self.classes,
                "columns": self.columns, "rounds": self.rounds,
                "subproblems": "exact" if self.bound_exact else "relaxed"}


def _price_round(classes, resources, master: Master, phase: str, gamma, lam, exact: bool, info):
    """Add every improving column FIN (and, with ``exact``, the exact subproblem) finds at
    the master's prices. Returns (added, per class the exact priced minimum or None)."""
    weight = 0.0 if phase == "served" else 1.0
    added = False
    minima = []
    for c, cls in enumerate(classes):
        threshold = (1.0 if phase == "served" else master.served_dual) + master.class_duals[c]
        scale = max(1.0 if phase == "served" else 0.0, max((col.energy_j for col in cls.columns), default=0.0))
        tol = RC_TOL * scale + 1e-15
        best = math.inf
        for p in cls.rep.accurate():
            candidates = []
            nodes = _fin_column(cls, p, master.prices, weight, gamma, lam)
            if nodes is not None:
                candidates.append(nodes)
            if exact:
                value, nodes = _exact_min(cls, p, master.prices, weight, gamma, info)
                best = min(best, value)
                if nodes is not None:
                    candidates.append(nodes)
            for nodes in candidates:
                pctx = priced_context(cls.rep, p, master.prices, cls, weight)
                if priced_cost(pctx, nodes) < threshold - tol:
                    added |= add_column(cls, p, nodes, resources)
        minima.append(best if exact else None)
    return added, minima


def _served_bound(classes, resources, master, minima) -> float:
    """Lagrangian upper bound on the applications served: prices x capacity + sum over
    applications of max(0, 1 - minimum priced use)."""
    total = float(master.prices @ np.array([r.capacity for r in resources])) if resources else 0.0
    for cls, w in zip(classes, minima):
        total += cls.size * max(0.0, 1.0 - w)
    return total


def _energy_bound(classes, resources, master, minima, served: int) -> float:
    """Lagrangian lower bound on the energy of any plan serving at least ``served``
    applications: sum over applications of min(0, minimum priced energy - mu) + mu S -
    prices x capacity."""
    total = master.served_dual * served
    if resources:
        total -= float(master.prices @ np.array([r.capacity for r in resources]))
    for cls, v in zip(classes, minima):
        total += cls.size * min(0.0, v - master.served_dual)
    return total


def _generate(classes, resources, phase, served, gamma, lam, info: JointInfo, target_gap: float = 1e-7):
    """Column generation for one phase; returns the last master LP and the best bound."""
    best_bound = -math.inf if phase == "energy" else math.inf
    master = None
    for _round in range(MAX_ROUNDS):
        info.rounds += 1
        master = solve_master(classes, resources, phase, served)
        if master is None:
            return None, best_bound
        added, _ = _price_round(classes, resources, master, phase, gamma, lam, False, info)
        if added:
            continue
        # FIN finds nothing better: certify with the exact subproblems (they may add columns too)
        added, minima = _price_round(classes, resources, master, phase, gamma, lam, True, info)
        if phase == "served":
            best_bound = min(best_bound, _served_bound(classes, resources, master, minima))
        else:
            best_bound = max(best_bound, _energy_bound(classes, resources, master, minima, served))
            if master.objective - best_bound <= target_gap * max(abs(master.objective), 1e-300):
                break
        if not added:
            break
    return master, best_bound


def joint_fin(ctxs: list[AppContext], gamma: int, lam: float, info: JointInfo | None = None) -> list[AppResult]:
    """Plan several applications together (column generation; see the module docstring).

    Parameters
    ----------
    ctxs : list of AppContext
        One context per application (the whole network).
    gamma : int or None
        FIN's latency units for the pricing subproblems (None: its exact label DP).
    lam : float
        FIN's proximity pruning for the pricing subproblems.
    info : JointInfo or None, optional
        Receives the bounds and counts.

    Returns
    -------
    list of AppResult
        One per application, in scenario order; every served plan is feasible under the exact
        evaluator with all the other served plans; unserved ones carry a reason.

    Notes
    -----
    Complexity: per round, one FIN per class and exit policy plus one LP over the columns (a
    few per class); the exact bound enumerates each class's reachable placements once per
    phase; the final check evaluates every application once: O(A B) beyond the classes.
    """
    info = info if info is not None else JointInfo()
    classes, resources = build_classes(ctxs)
    info.classes = len(classes)
    _start_columns(classes, resources, gamma, lam)
    live = [cls for cls in classes if cls.columns]
    results: list = [None] * len(ctxs)
    if live:
        _served_phase(live, resources, gamma, lam, info)
        best = solve_master(live, resources, "served", integer=True)
        target = int(round(-best.objective)) if best is not None else 0
        for _attempt in range(MAX_FILL_PASSES):
            _m, bound = _generate(live, resources, "energy", target, gamma, lam, info)
            info.lower_bound_j = bound if math.isfinite(bound) else None
            results = _integer_plan(ctxs, live, resources, target)
            results = _fill(ctxs, live, results, gamma, lam)
            served = sum(r is not None for r in results)
            if served <= target:
                break
            # the residual capacity fitted more applications than the columns did: keep their
            # plans as columns and plan again for that many (the bound is for >= served)
            for cls in live:
                for member, keep in zip(cls.members, cls.keep):
                    if results[member] is not None:
                        ev = results[member].evaluation
                        ctx = ctxs[member]
                        add_column(cls, _policy(ctx, ev), [keep.index(ctx.network.index(n)) for n in ev.placement],
                                    resources)
            target = served
    else:
        info.served_upper_bound, info.lower_bound_j = 0, 0.0
    info.columns = sum(len(cls.columns) for cls in classes)
    return _finish(ctxs, classes, results, gamma, lam)


def _start_columns(classes, resources, gamma, lam) -> None:
    """Each class's solo FIN plan per exit policy (no prices) as its first columns."""
    zero = np.zeros(len(resources))
    for cls in classes:
        for p in cls.rep.accurate():
            nodes = _fin_column(cls, p, zero, 1.0, gamma, lam)
            if nodes is not None:
                add_column(cls, p, nodes, resources)


def _served_phase(live, resources, gamma, lam, info) -> None:
    _m, upper = _generate(live, resources, "served", 0, gamma, lam, info)
    everyone = sum(c.size for c in live)
    info.served_upper_bound = everyone if not math.isfinite(upper) else min(everyone, int(math.floor(upper + 1e-7)))


def lower_bound(ctxs: list[AppContext], results: list[AppResult], gamma: int, lam: float) -> JointInfo:
    """The bounds of ``joint_fin`` for a plan found by any solver.

    Parameters
    ----------
    ctxs : list of AppContext
        One context per application.
    results : list of AppResult
        The plan whose gap is wanted; its placements join the columns (so the master can serve
        as many).
    gamma : int or None
        FIN's latency units for the pricing subproblems.
    lam : float
        FIN's proximity pruning for the pricing subproblems.

    Returns
    -------
    JointInfo
        A lower bound on the energy of any plan serving as many applications, and an upper
        bound on the applications that can be served.

    Notes
    -----
    Complexity: that of ``joint_fin`` without the integer plan.
    """
    info = JointInfo()
    classes, resources = build_classes(ctxs)
    info.classes = len(classes)
    _start_columns(classes, resources, gamma, lam)
    for cls in classes:
        for member, keep in zip(cls.members, cls.keep):
            r = results[member]
            if r.feasible:
                ctx = ctxs[member]
                add_column(cls, _policy(ctx, r.evaluation),
                            [keep.index(ctx.network.index(n)) for n in r.evaluation.placement], resources)
    live = [cls for cls in classes if cls.columns]
    served = sum(r.feasible for r in results)
    if live:
        _served_phase(live, resources, gamma, lam, info)
        _m, bound = _generate(live, resources, "energy", served, gamma, lam, info)
        info.lower_bound_j = bound if math.isfinite(bound) else None
    else:
        info.served_upper_bound, info.lower_bound_j = 0, 0.0
    info.columns = sum(len(cls.columns) for cls in classes)
    return info


def _integer_plan(ctxs, classes, resources, served: int) -> list:
    """The integer master over the columns, assigned and checked exactly (see ``_check``);
    with a little capacity slack when HiGHS's tolerance let a hair-thin excess through."""
    for slack in (0.0,) + TIGHTEN_STEPS:
        final = solve_master(classes, resources, "energy", served, integer=True, slack=slack)
        if final is None:
            continue
        results, ok = _check(ctxs, _assign(classes, final.x))
        if ok:
            return results
    return [None] * len(ctxs)


def _assign(classes, x) -> dict[int, tuple[int, list[int]]]:
    """Application index -> (policy, full-network node indices): per class, its columns in
    order of energy (then policy, nodes) handed to its members in scenario order. A column's
    node j of the representative is node j of each member's own reachable set."""
    plans = {}
    for cls, counts in zip(classes, x):
        order = sorted(range(len(cls.columns)), key=lambda j: (cls.columns[j].energy_j, cls.columns[j].policy,
                                                               cls.columns[j].nodes))
        queue = []
        for j in order:
            queue += [cls.columns[j]] * int(counts[j])
        for member, keep, col in zip(cls.members, cls.keep, queue):
            plans[member] = (col.policy, [keep[j] for j in col.nodes])
    return plans


def _check(ctxs, plans) -> tuple[list, bool]:
    """Exact evaluation of every planned application with the others' loads (scenario order)."""
    usage = Usage()
    results: list = [None] * len(ctxs)
    ok = True
    for a, ctx in enumerate(ctxs):
        if a not in plans:
            continue
        policy, nodes = plans[a]
        ev = ctx.evaluate(policy, nodes, usage)
        if not ev.feasible:
            ok = False
        usage = usage.plus(ev)
        results[a] = AppResult(ctx.app, ev)
    if not ok:
        # a hair over a limit (HiGHS's tolerance): re-check each against the final totals
        return results, False
    return results, True


def local_usage(usage: Usage, names) -> Usage:
    """``usage`` limited to the nodes named in ``names`` and the links among them.

    Parameters
    ----------
    usage : Usage
        The whole network's usage.
    names : iterable of str
        The nodes of a restricted context.

    Returns
    -------
    Usage
        What a restricted context may be given.

    Notes
    -----
    Complexity: O(entries of usage).
    """
    inside = set(names)
    return Usage({n: v for n, v in usage.node_utilization.items() if n in inside},
                 {n: v for n, v in usage.node_memory_bytes.items() if n in inside},
                 {k: v for k, v in usage.link_utilization.items() if k[0] in inside and k[1] in inside})


def _served_usage(results) -> Usage:
    usage = Usage()
    for r in results:
        if r is not None and r.feasible:
            usage = usage.plus(r.evaluation)
    return usage


def _fill(ctxs, classes, results, gamma, lam):
    """Offer the capacity left to the applications left out, one class at a time (the best
    placement on the residual capacity: enumerated when the class is small, else FIN); a class
    stops at its first member that does not fit (the others face the same residual)."""
    usage = _served_usage(results)
    for cls in classes:
        if not cls.columns:
            continue
        small = count_placements(cls.rep) <= BOUND_ENUMERATION
        for member, keep in zip(cls.members, cls.keep):
            if results[member] is not None:
                continue
            sub = restrict(ctxs[member], keep)
            local = local_usage(usage, sub.network.names)
            # exact and quiet when small (FIN would explain every failure)
            found = enumerate_best(sub, local) if small else fin(sub, gamma, lam, local).evaluation
            if found is None or not found.feasible:
                break
            ev = ctxs[member].evaluate(_policy(ctxs[member], found),
                                       [ctxs[member].network.index(n) for n in found.placement], usage)
            if not ev.feasible:
                break
            results[member] = AppResult(ctxs[member].app, ev)
            usage = usage.plus(ev)
    return results


def _policy(ctx, ev) -> int:
    return policy_of(ctx, ev)


def _finish(ctxs, classes, results, gamma, lam):
    """Reasons for the applications left out, in the joint MILP's words: what a plan that fits
    alone would exceed next to the served ones (``crowded_out``), or, when none fits even alone,
    FIN's own reason. (The sequential planner's proof that nothing fits the residual capacity,
    ``explain`` with the others' loads, costs about a FIN solve per application left out.)"""
    usage = _served_usage(results)
    for cls in classes:
        alone = min(cls.columns, key=lambda col: (col.energy_j, col.policy, col.nodes)) if cls.columns else None
        for member, keep in zip(cls.members, cls.keep):
            if results[member] is not None:
                continue
            ctx = ctxs[member]
            if alone is None:
                res = fin(restrict(ctx, keep), gamma, lam)
                results[member] = AppResult(ctx.app, None, res.reason or "no plan found")
                continue
            solo = ctx.evaluate(alone.policy, [keep[j] for j in alone.nodes])
            results[member] = AppResult(ctx.app, None, crowded_out(ctx, solo, usage))
    return results
