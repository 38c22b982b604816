"""The plan document ``finplan.plan/1``: build it, validate it, summarise it.

The deploy side reads ``placement``, ``final_exit``, ``active_exits``/``thresholds``,
``per_node``, ``transfers`` and ``model.hash``; keep those names stable.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import jsonschema

from finplan.errors import FinplanInputError
from finplan.fileio import check_schema
from finplan.hardware_profiles import schema_document
from finplan.partition.context import AppResult, SolveResult
from finplan.partition.evaluate import ms
from finplan.partition.problem import Scenario

SCHEMA = "finplan.plan/1"

# The JSON schema of a plan document (src/finplan/schemas/plan.schema.json, like the profile's
# and the model card's).
PLAN_SCHEMA: dict = schema_document("plan")


def _round(value: float) -> float:
    # Summation order differs between solvers; 15 significant digits keep files comparable.
    return float(f"{value:.15g}") if isinstance(value, float) and math.isfinite(value) else value


def app_entry(result: AppResult, options) -> dict:
    app = result.app
    card = app.card
    entry: dict[str, Any] = {
        "name": app.name,
        "model": {"name": card.name, "hash": card.hash, "card": app.card_ref},
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
        }
        entry["per_node"] = {name: {key: (_round(v) if isinstance(v, float) else v) for key, v in load.items()}
                             for name, load in ev.per_node.items()}
        entry["transfers"] = [{k: (_round(v) if isinstance(v, float) else v) for k, v in t.items()} for t in ev.transfers]
        entry["binding"] = list(ev.binding)
    if not result.feasible:
        entry["reason"] = result.reason or "; ".join(ev.violations if ev else []) or "no plan found"
    if result.notes:
        entry["notes"] = list(result.notes)
    return entry


def plan_document(scenario: Scenario, result: SolveResult, *, reproducible: bool = False) -> dict:
    """The ``finplan.plan/1`` document of a solve (self-contained: the network is inline).

    With ``reproducible`` the one naturally varying field, solver.solve_time_s, is null.
    """
    doc = {
        "schema": SCHEMA,
        "solver": {"name": result.solver, "parameters": dict(result.parameters),
                   "solve_time_s": None if reproducible else result.solve_time_s},
        "scenario": scenario.path,
        "network": copy.deepcopy(scenario.network.doc),
        "options": scenario.options.to_dict(),
        "applications": [app_entry(r, scenario.options) for r in result.apps],
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
    """Check a plan document against PLAN_SCHEMA; return it. Raises FinplanInputError."""
    check_schema(doc, "plan", (1,), path)
    validator = jsonschema.Draft202012Validator(PLAN_SCHEMA)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise FinplanInputError(error.message, file=path, field=where or "(document)")
    return doc


def add_binding(scenario: Scenario, result: SolveResult, gamma: int) -> None:
    """Mark the latency and accuracy constraints that bind: relaxing them gives a cheaper plan.

    Latency: the exact energy-only optimum (no latency bound) is cheaper. Accuracy: FIN
    finds a cheaper feasible plan at an exit that misses the target (a certificate, so a
    constraint listed as binding truly is; one not listed may still be, rarely).
    """
    from finplan.partition.context import contexts
    from finplan.partition.costs import is_close
    from finplan.partition.fin import _solve_policies
    from finplan.partition.paths import layered_shortest

    ctxs = contexts(scenario)
    for ctx, res in zip(ctxs, result.apps):
        ev = res.evaluation
        if ev is None or not ev.feasible:
            continue
        cheaper = lambda e: e < ev.energy_j and not is_close(e, ev.energy_j)  # noqa: E731
        tags = []
        for i in ctx.accurate():
            found = layered_shortest(ctx, ctx.chain(i), "energy")
            if found is not None and cheaper(found[1]):
                tags.append("latency")
                break
        relaxed = type(ctx)(ctx.app, ctx.network, ctx.options, ctx.table, ctx.policies, ctx.quantiles)
        relaxed.accurate = lambda c=ctx: [i for i in range(len(c.policies)) if i not in set(c.accurate())]
        _key, other = _solve_policies(relaxed, gamma, 0.0, None, frozenset(), frozenset())
        if other is not None and cheaper(other.energy_j):
            tags.append("accuracy")
        ev.binding = tags + [b for b in ev.binding if b not in tags]


def summary_rows(doc: dict) -> list[dict]:
    """Per application, the facts a person reads first (used by the CLI tables)."""
    rows = []
    for app in doc["applications"]:
        p = app["predicted"]
        rows.append({
            "name": app["name"], "model": app["model"]["name"], "feasible": app["feasible"],
            "placement": ", ".join(f"{x['block']}@{x['node']}" for x in app["placement"]),
            "final_exit": app["final_exit"], "thresholds": app["thresholds"],
            "energy_j": p and p["energy_j"], "compute_energy_j": p and p["compute_energy_j"],
            "transfer_energy_j": p and p["transfer_energy_j"], "latency": p and ms(p["latency_s"]),
            "accuracy": p and p["accuracy"], "binding": ", ".join(app["binding"]) or "none",
            "reason": app.get("reason"),
        })
    return rows
