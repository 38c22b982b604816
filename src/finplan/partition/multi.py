"""Several applications sharing nodes and links.

Single-application solvers plan the applications one by one on the capacity the earlier
ones left (``plan_sequentially``); the MILP plans them jointly (``finplan.partition.milp``).

Order: tightest latency budget first (it has the fewest placements to choose from), then
higher accuracy target, then higher rate, then name. Fallback: when an application does
not fit, it is moved to the front and everything is re-planned; of all orders tried the
one serving the most applications, then with the least total energy, wins.
"""
from __future__ import annotations

from typing import Callable

from finplan.partition.context import AppContext, AppResult
from finplan.partition.costs import is_close
from finplan.partition.evaluate import Usage


def planning_order(ctxs: list[AppContext]) -> list[int]:
    """The order the sequential planner serves applications in.

    Parameters
    ----------
    ctxs : list of AppContext
        One context per application.

    Returns
    -------
    list of int
        Indices into ``ctxs``: tightest latency bound first, then higher accuracy target, then
        higher rate, then name (a total order, so plans are deterministic).

    Notes
    -----
    Complexity: O(A log A).
    """
    return sorted(range(len(ctxs)), key=lambda a: (ctxs[a].app.max_latency_s, -ctxs[a].app.min_accuracy,
                                                   -(ctxs[a].app.rate_hz or 0.0), ctxs[a].app.name))


def _run(ctxs, order, solve_one, solo: dict | None = None) -> tuple[list[AppResult | None], int, float]:
    usage = Usage()
    results: list[AppResult | None] = [None] * len(ctxs)
    for position, a in enumerate(order):
        if position == 0 and solo is not None and a in solo:
            result = solo[a]  # nothing planned yet: the solo answer
        else:
            result = solve_one(ctxs[a], usage)
        results[a] = result
        if result.feasible:
            usage = usage.plus(result.evaluation)
    served = sum(r.feasible for r in results)
    energy = sum(r.evaluation.energy_j for r in results if r.feasible)
    return results, served, energy


def plan_sequentially(ctxs: list[AppContext], solve_one: Callable[[AppContext, Usage], AppResult],
                      fallback: bool = True) -> tuple[list[AppResult], dict]:
    """Plan applications one at a time on the residual capacity.

    Parameters
    ----------
    ctxs : list of AppContext
        One context per application.
    solve_one : callable (AppContext, Usage) -> AppResult
        The single-application solver; must be deterministic (its answer depends only on the
        application and the residual capacity): solo answers are cached.
    fallback : bool, optional
        Re-plan with each application that fits alone but not next to the others served first,
        keeping the order that serves more (or as many, for less energy); ``solve`` asks for it
        with fin, fin-sequential and exhaustive, the baselines keep one pass.

    Returns
    -------
    tuple of (list of AppResult, dict)
        The results in scenario order, and info recording the order used and the re-planning
        attempts.

    Notes
    -----
    Complexity: (1 + F) passes of A calls of ``solve_one`` for A applications of which F do
    not fit next to the others but fit alone, plus at most A solo calls.
    """
    order = planning_order(ctxs)
    solo: dict[int, AppResult] = {}
    results, served, energy = _run(ctxs, order, solve_one)
    solo[order[0]] = results[order[0]]
    tried = [order]
    if fallback and len(ctxs) > 1:
        failing = [a for a in order if not results[a].feasible and _could_fit_alone(ctxs, a, solve_one, solo)]
        for a in failing:
            new_order = [a] + [b for b in order if b != a]
            if new_order in tried:
                continue
            tried.append(new_order)
            cand, c_served, c_energy = _run(ctxs, new_order, solve_one, solo)
            if c_served > served or (c_served == served and c_energy < energy and not is_close(c_energy, energy)):
                results, served, energy, order = cand, c_served, c_energy, new_order
    for a, r in enumerate(results):
        if not r.feasible and r.evaluation is None and len(ctxs) > 1 and _could_fit_alone(ctxs, a, solve_one, solo):
            r.reason = (f"{r.reason}; alone it would fit, but not next to the other applications"
                        if r.reason else "it does not fit next to the other applications")
    names = [ctxs[a].app.name for a in order]
    return results, {"order": names, "orders_tried": len(tried)}


def _could_fit_alone(ctxs: list[AppContext], a: int, solve_one, solo: dict) -> bool:
    """Whether application ``a`` fits with nothing else planned (cached in ``solo``)."""
    if a not in solo:
        solo[a] = solve_one(ctxs[a], Usage())
    return solo[a].feasible
