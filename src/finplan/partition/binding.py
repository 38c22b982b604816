"""Which constraints bind a plan: relaxing one alone lets finplan find a cheaper feasible plan.

What ``binding`` means, for FIN and the optimum and for the baselines, is in docs/planner.md.
``add_binding`` fills ``Evaluation.binding`` of every application of a solve result.
"""
from __future__ import annotations

from finplan.partition.context import SolveResult, contexts
from finplan.partition.costs import is_close
from finplan.partition.evaluate import CAPACITY_TAGS, Usage
from finplan.partition.exhaustive import exhaustive
from finplan.partition.explain import policy_of
from finplan.partition.fin import fin
from finplan.partition.joint_columns import restricted_contexts
from finplan.partition.problem import Scenario
from finplan.partition.search import count_placements

# Solvers whose plan is (FIN: meant to be) the minimum-energy plan; the others are baselines.
OPTIMISING_SOLVERS = ("fin", "fin-sequential", "exhaustive", "milp")
# Up to this many placements (N^B summed over exit policies) the plans add_binding compares
# are found by enumeration (exact); above it by FIN.
BINDING_EXACT_LIMIT = 50_000


def _others_usage(result: SolveResult, a: int) -> Usage:
    usage = Usage()
    for b, other in enumerate(result.apps):
        if b != a and other.feasible:
            usage = usage.plus(other.evaluation)
    return usage


def _best_plan(ctx, usage: Usage | None, gamma: int | None, exact_limit: int):
    """The minimum-energy plan of ``ctx`` (an Evaluation, or None): exact up to ``exact_limit``
    placements, else FIN's."""
    if count_placements(ctx) <= exact_limit:
        return exhaustive(ctx, usage, exact_limit).evaluation
    return fin(ctx, gamma, 0.0, usage).evaluation


def binding_constraints(ctx, ev, usage: Usage | None, gamma: int, exact_limit: int = BINDING_EXACT_LIMIT) -> list[str]:
    """The constraints that bind the plan ``ev`` of one application.

    A constraint binds when relaxing it alone, with the other applications' placements as they
    are (``usage``), lets finplan find a feasible plan cheaper than the best plan with it kept.
    The three constraints: ``latency`` (the bound is lifted), ``accuracy`` (every exit
    qualifies) and capacity (no node or link limit). The best plan with every constraint kept is
    the cheaper of ``ev`` and the reference plan; each plan compared is the minimum-energy plan
    of its problem: found by enumeration up to ``exact_limit`` placements (then the answer is
    exact), else by FIN (then a constraint may rarely be missed, never listed wrongly). Each
    relaxed plan is re-evaluated exactly under every real constraint and counts only when it is
    cheaper (beyond rounding) and breaks nothing but the relaxed constraint, so a listed
    constraint truly binds.

    Parameters
    ----------
    ctx : AppContext
        The application's context.
    ev : Evaluation
        Its feasible plan.
    usage : Usage or None
        What the other applications' placements take.
    gamma : int or None
        FIN's resolution for the large case.
    exact_limit : int, optional
        Up to this many placements the plans compared are found by enumeration.

    Returns
    -------
    list of str
        Tags, in this order: "latency", "accuracy", then for capacity one tag per limit the
        cheaper capacity-free plan would exceed: "utilization:NODE" (max_utilization),
        "memory:NODE" (memory_bytes), "link:A->B" (the link's max_utilization).

    Notes
    -----
    Complexity: four minimum-energy solves (enumeration O(P N^B B), or FIN).
    """
    names = ctx.network.names
    relaxed_gamma = 8 * (len(ctx.app.card.blocks) + 1)  # the lifted bound leaves every placement a quarter of the units
    candidates = {
        "latency": _best_plan(ctx.relaxed(latency=True), usage, relaxed_gamma, exact_limit),
        "accuracy": _best_plan(ctx.relaxed(accuracy=True), usage, gamma, exact_limit),
    }
    if ctx.app.rate_hz is not None or ctx.table.memory_limited:  # otherwise capacity cannot bind
        candidates["capacity"] = _best_plan(ctx.relaxed(capacity=True), None, gamma, exact_limit)
    kept = _best_plan(ctx, usage, gamma, exact_limit)
    best_kept = min([ev.energy_j] + ([kept.energy_j] if kept is not None else []))
    checked = {}
    for kind, cand in candidates.items():
        if cand is None:
            continue
        real = ctx.evaluate(policy_of(ctx, cand), [names.index(n) for n in cand.placement], usage)
        checked[kind] = real
        if real.feasible:  # a plan keeping every constraint: the reference was not the best
            best_kept = min(best_kept, real.energy_j)
    tags: list[str] = []
    for kind, real in checked.items():
        if real.feasible or not (real.energy_j < best_kept and not is_close(real.energy_j, best_kept)):
            continue
        if kind == "capacity":
            if all(tag.startswith(CAPACITY_TAGS) for tag in real.violated):
                tags += real.violated
        elif set(real.violated) == {kind}:
            tags.append(kind)
    return tags


def add_binding(scenario: Scenario, result: SolveResult, gamma: int, exact_limit: int = BINDING_EXACT_LIMIT) -> None:
    """Fill in, for every feasible application of ``result``, which constraints bind.

    For the optimising solvers (OPTIMISING_SOLVERS) ``binding`` is ``binding_constraints``
    with the other applications' placements as the usage (basis "relaxation"). A baseline's
    plan is not an optimum: a cheaper plan than it exists whether or not a constraint is
    tight, so the relaxation test would say nothing about the baseline. For baselines,
    ``binding`` lists the constraints the baseline's own plan is at, i.e. uses at least 99%
    of (``Evaluation.at_limit``; basis "at_limit"), and the summary labels it so.
    Infeasible applications get an empty list.

    Parameters
    ----------
    scenario : Scenario
        What was solved.
    result : SolveResult
        Its answer; changed in place.
    gamma : int or None
        FIN's resolution (used when an instance is too large to enumerate).
    exact_limit : int, optional
        Passed to ``binding_constraints``.

    Returns
    -------
    None
        Sets ``evaluation.binding`` and ``binding_basis`` on each AppResult.

    Notes
    -----
    Complexity: per feasible application, that of ``binding_constraints`` (optimising
    solvers), O(1) for baselines.
    """
    optimum = result.solver in OPTIMISING_SOLVERS
    ctxs = contexts(scenario) if optimum else [None] * len(result.apps)
    if optimum and len(ctxs) > 1:
        # each application on the nodes it can reach: the same evaluations, and small enough
        # to enumerate (exact) instead of FIN on the whole network
        ctxs = restricted_contexts(ctxs)
    for a, (ctx, res) in enumerate(zip(ctxs, result.apps)):
        res.binding_basis = "relaxation" if optimum else "at_limit"
        ev = res.evaluation
        if ev is None:
            continue
        if not ev.feasible:
            ev.binding = []
        elif optimum:
            usage = _others_usage(result, a)
            if len(ctxs) > 1:
                from finplan.partition.joint import local_usage

                usage = local_usage(usage, ctx.network.names)
            ev.binding = binding_constraints(ctx, ev, usage, gamma, exact_limit)
        else:
            ev.binding = list(ev.at_limit)
