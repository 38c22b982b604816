"""The plan document ``finplan.plan/1``: build it, validate it, summarise it.

The deploy side reads ``placement``, ``final_exit``, ``active_exits``/``thresholds``,
``per_node``, ``transfers`` and ``model.hash``; keep those names stable.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from finplan.fileio import without_notes
from finplan.hardware_profiles import schema_document
from finplan.partition.context import AppResult, SolveResult, contexts
from finplan.partition.costs import is_close
from finplan.partition.evaluate import CAPACITY_TAGS, Usage
from finplan.partition.exhaustive import exhaustive
from finplan.partition.explain import policy_of
from finplan.partition.fin import fin
from finplan.partition.joint_columns import restricted_contexts
from finplan.partition.problem import Scenario
from finplan.partition.profile_costs import cost_source
from finplan.partition.search import count_placements
from finplan.validation import validate_document

SCHEMA = "finplan.plan/1"

# The JSON schema of a plan document (src/finplan/schemas/plan.schema.json, like the profile's
# and the model card's).
PLAN_SCHEMA: dict = schema_document("plan")


def _round(value: float) -> float:
    # Summation order differs between solvers; 15 significant digits keep files comparable.
    return float(f"{value:.15g}") if isinstance(value, float) and math.isfinite(value) else value


def recorded_path(path: str | os.PathLike | None, base_dir: str | os.PathLike | None = None) -> str | None:
    """How a plan records a file path.

    Parameters
    ----------
    path : path-like or None
        The path as the scenario gave it (None passes through).
    base_dir : path-like or None, optional
        The plan file's folder (None: the current folder, when the plan is only printed).

    Returns
    -------
    str or None
        ``path`` relative to ``base_dir``, so the same inputs give the same bytes from any
        working directory, and a reader (``finplan emit``) finds the file from the plan.

    Notes
    -----
    Complexity: O(len(path)).
    """
    if path is None:
        return None
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir or "."))).as_posix()


def _card_path(app) -> str:
    # card.path is the file as read (scenario folder + the scenario's reference); card_ref is
    # the reference as written, relative to the scenario: only the former locates the file.
    return app.card.path if app.card.path is not None else app.card_ref


def cost_sources(scenario: Scenario, app, base_dir=None) -> dict:
    """Per node, where ``app``'s block costs come from.

    Parameters
    ----------
    scenario : Scenario
        The scenario (its network's nodes).
    app : Application
        The application (its card).
    base_dir : path-like or None, optional
        The folder profile paths are recorded relative to (``recorded_path``).

    Returns
    -------
    dict
        node name -> ``profile_costs.cost_source`` with paths as recorded.

    Notes
    -----
    Complexity: O(N (profiles + parts)).
    """
    out = {}
    for node in scenario.network.nodes:
        source = cost_source(node, app.card)
        if "profile" in source:
            source["profile"] = recorded_path(source["profile"], base_dir)
        if "profile_mismatch" in source:
            source["profile_mismatch"]["profile"] = recorded_path(source["profile_mismatch"]["profile"], base_dir)
        out[node.name] = source
    return out


def cost_warnings(scenario: Scenario) -> list[str]:
    """One line per (node, model) whose profile is of another model.

    Parameters
    ----------
    scenario : Scenario
        The scenario.

    Returns
    -------
    list of str
        Each says that the node's compute estimate is used instead (bad input when the node
        has no ``compute``: raised on reading).

    Notes
    -----
    Complexity: O(A N profiles).
    """
    lines, seen = [], set()
    for app in scenario.applications:
        for node in scenario.network.nodes:
            if (node.name, id(app.card)) in seen:
                continue
            seen.add((node.name, id(app.card)))
            mismatch = cost_source(node, app.card).get("profile_mismatch")
            if mismatch is None:
                continue
            what = (f"is of model hash {mismatch['profile_hash']}, card {_card_path(app)} has hash {app.card.hash}"
                    if app.card.hash is not None else
                    f"is of model {mismatch['profile_model']!r}, card {_card_path(app)} is {app.card.name!r}")
            lines.append(f"node {node.name}: profile {mismatch['profile']} {what}; using the node's compute estimate "
                         "(flops / ops_per_s) instead of measurements")
    return lines


def _transfer_entry(transfer: dict, card) -> dict:
    """One transfer as the plan writes it, with the tensors it carries when the card lists them (the
    planner charges ``bytes``, their sum)."""
    entry = {k: (_round(v) if isinstance(v, float) else v) for k, v in transfer.items()}
    block = next((b for b in card.blocks if b.name == transfer.get("after_block")), None)
    if block is not None and block.live_set:
        entry["tensors"] = [{"tensor": name, "bytes": _round(size)} for name, size in block.live_set]
    return entry


def app_entry(result: AppResult, options, scenario: Scenario | None = None, base_dir=None) -> dict:
    """One application's entry of a plan document.

    Parameters
    ----------
    result : AppResult
        The application's answer.
    options : Options
        The scenario's options (dynamic mode adds thresholds and exit rates).
    scenario : Scenario or None, optional
        Where the application's costs came from is recorded when given (``cost_sources``).
    base_dir : path-like or None, optional
        The folder paths are recorded relative to (``recorded_path``).

    Returns
    -------
    dict
        name, model, feasible, placement, final_exit, thresholds, predicted, transfers,
        per_node, binding and, when infeasible, reason (see the plan schema).

    Notes
    -----
    Complexity: O(B + L) for B blocks and L transfers.
    """
    app = result.app
    card = app.card
    entry: dict[str, Any] = {
        "name": app.name,
        "model": {"name": card.name, "hash": card.hash, "card": recorded_path(_card_path(app), base_dir)},
        "source": app.source,
        "constraints": {"max_latency_s": app.max_latency_s, "min_accuracy": app.min_accuracy, "strict": options.strict},
        "rate_hz": app.rate_hz,
        "feasible": result.feasible,
    }
    ev = result.evaluation
    if ev is None:
        entry.update(placement=[], final_exit=None, active_exits=[], thresholds={}, predicted=None, per_node={},
                     transfers=[], binding=[])
    else:
        exits = {e.name: e for e in card.exits}
        entry["placement"] = [{"block": card.blocks[b].name, "node": node} for b, node in enumerate(ev.placement)]
        entry["final_exit"] = ev.final_exit
        entry["active_exits"] = [{"name": name, "after": card.blocks[exits[name].after].name, "threshold": thr}
                                 for name, thr in ev.thresholds.items()]
        entry["thresholds"] = dict(ev.thresholds)
        entry["predicted"] = {
            "energy_j": _round(ev.energy_j), "compute_energy_j": _round(ev.compute_energy_j),
            "transfer_energy_j": _round(ev.transfer_energy_j), "latency_s": _round(ev.latency_s),
            "expected_latency_s": _round(ev.expected_latency_s), "accuracy": _round(ev.accuracy),
            "exit_rates": {k: _round(v) for k, v in ev.exit_rates.items()},
            "exit_latency_s": {k: _round(v) for k, v in ev.exit_latency_s.items()},
        }
        entry["per_node"] = {name: {key: (_round(v) if isinstance(v, float) else v) for key, v in load.items()}
                             for name, load in ev.per_node.items()}
        entry["transfers"] = [_transfer_entry(t, card) for t in ev.transfers]
        entry["binding"] = list(ev.binding) if result.feasible else []
        entry["at_limit"] = list(ev.at_limit)
    if result.binding_basis is not None:
        entry["binding_basis"] = result.binding_basis
    if result.guarantee is not None and result.feasible:
        entry["guarantee"] = dict(result.guarantee)
    if scenario is not None:
        entry["costs"] = cost_sources(scenario, app, base_dir)
    if not result.feasible:
        entry["reason"] = result.reason or "; ".join(ev.violations if ev else []) or "no plan found"
    if result.notes:
        entry["notes"] = list(result.notes)
    return entry


def plan_document(scenario: Scenario, result: SolveResult, *, timings: bool = False,
                  base_dir: str | os.PathLike | None = None) -> dict:
    """The ``finplan.plan/1`` document of a solve (self-contained: the network is inline).

    Parameters
    ----------
    scenario : Scenario
        What was solved.
    result : SolveResult
        The solve's answer (``solve.solve``; ``add_binding`` first for the binding lists).
    timings : bool, optional
        Write the measured solver.solve_time_s (the one field that varies between runs);
        without it the field is null and equal inputs give equal bytes.
    base_dir : path-like or None, optional
        The folder paths are recorded relative to (the plan file's; default the current
        folder, see ``recorded_path``).

    Returns
    -------
    dict
        The document (``validate_plan`` checks it against the schema).

    Notes
    -----
    Complexity: O(A (B + L)) for A applications, B blocks and L transfers.
    """
    base = base_dir
    network = without_notes(scenario.network.doc)  # a copy; a person's notes stay in their file
    for node in network.get("nodes", []):
        refs = node.get("profile")
        if isinstance(refs, list):
            node["profile"] = [recorded_path(r, base) for r in refs]
        elif isinstance(refs, str):
            node["profile"] = recorded_path(refs, base)
    # the one field that varies between runs: null unless asked for, so equal inputs give equal bytes
    solver: dict[str, Any] = {"name": result.solver, "parameters": dict(result.parameters),
                              "solve_time_s": result.solve_time_s if timings else None}
    doc = {
        "schema": SCHEMA,
        "solver": solver,
        "scenario": recorded_path(scenario.path, base),
        "network": network,
        "options": scenario.options.to_dict(),
        "applications": [app_entry(r, scenario.options, scenario, base) for r in result.apps],
        "totals": {
            "feasible_applications": sum(r.feasible for r in result.apps),
            "applications": len(result.apps),
            "energy_j": _round(sum(r.evaluation.energy_j for r in result.apps if r.feasible)),
        },
    }
    if result.extra:
        doc["solver"].update({k: copy.deepcopy(v) for k, v in result.extra.items()})
    return doc


def validate_plan(doc: Any, path=None) -> dict:
    """Check a plan document against PLAN_SCHEMA.

    Parameters
    ----------
    doc : object
        The parsed document.
    path : path-like or None, optional
        The file it came from, named in messages.

    Returns
    -------
    dict
        ``doc`` itself.

    Raises
    ------
    FinplanInputError
        Naming the file, the field path and what was expected (the first schema violation).

    Notes
    -----
    Complexity: linear in the document's size.
    """
    # validation.validate_document also refuses NaN, which passes a "number" schema (show printed
    # "nan J" and emit deployed it)
    return validate_document(doc, "plan", file=path)


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
