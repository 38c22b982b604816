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
from finplan.partition.context import AppResult, SolveResult
from finplan.partition.problem import Scenario
from finplan.partition.profile_costs import cost_source
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
