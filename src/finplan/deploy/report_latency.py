"""The plan's predicted end-to-end latency distribution of one deployed application.

The planner predicts one path latency per exit (an input leaving at exit i waits for every
block, head, stage overhead and transfer up to exit i's head) and the exit rates; the plan
file keeps only the slowest path (``latency_s``, the final exit's) and the rate-weighted mean
(``expected_latency_s``). The predicted distribution is the discrete mixture of the per-exit
path latencies weighted by the exit rates, so its p-th percentile is the smallest path latency
at which the cumulative exit rate reaches p.

Per-exit latencies are obtained, in this order:

1. ``planner``: re-run the planner's own evaluation (``partition.evaluate.evaluate``) on the
   deployment's network and profiles, once per exit with all of that exit's rate, which makes
   its expected latency that exit's path latency. Used only when the same evaluation with the
   plan's exit rates reproduces the plan's ``latency_s`` and ``expected_latency_s`` (so a plan
   made from inputs the deployment folder no longer holds is never second-guessed).
2. ``plan totals``: with at most one early exit taking inputs, the plan's two numbers determine
   both path latencies exactly (final exit: ``latency_s``; the early exit: what makes the
   rate-weighted mean ``expected_latency_s``).

Otherwise the percentiles are not predicted (``None``, with the reason).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finplan.deploy.deployment import Deployment
from finplan.errors import FinplanInputError

# The planner's numbers are rounded to 15 significant digits in plan.json.
_SAME_REL = 1e-6
# Cumulative exit rates are sums of rounded fractions: 0.5 + 0.5 may come to 0.4999999999.
_RATE_EPS = 1e-9


@dataclass
class PredictedLatency:
    per_exit_s: dict[str, float] | None    # path latency of an input leaving at each exit, transfers included
    exit_rates: dict[str, float]           # the plan's, for the exits that take inputs
    method: str | None                     # "planner" or "plan totals"; None when not predicted
    reason: str | None = None              # why not predicted

    def without_transfers(self, deployment: Deployment, transfer_s) -> dict[str, float] | None:
        """Per-exit path latencies less the transfers on each exit's path (for runs without link
        emulation, where nothing waits for the network). ``transfer_s(transfer)`` gives one
        transfer's seconds."""
        if self.per_exit_s is None:
            return None
        app = deployment.application
        order = {p["block"]: i for i, p in enumerate(app.get("placement") or [])}
        after = exit_blocks(deployment)
        out = {}
        for name, seconds in self.per_exit_s.items():
            block = order.get(after.get(name), len(order))
            # a transfer after block b carries the input of block b + 1: it is on the path of an
            # exit after block `block` when b < block ("input" is before block 0)
            on_path = [t for t in app.get("transfers") or []
                       if order.get(t.get("after_block"), -1) < block]
            out[name] = max(seconds - sum(transfer_s(t) for t in on_path), 0.0)
        return out


def mixture_percentile(per_exit_s: dict[str, float] | None, rates: dict[str, float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of the distribution that puts ``rates[e]`` on ``per_exit_s[e]``:
    the smallest latency at which the cumulative rate reaches q / 100 of the total."""
    if not per_exit_s:
        return None
    points = sorted((per_exit_s[e], r) for e, r in rates.items() if r > 0 and e in per_exit_s)
    total = sum(r for _, r in points)
    if total <= 0:
        return None
    cumulative = 0.0
    for seconds, rate in points:
        cumulative += rate
        if cumulative >= q / 100.0 * total - _RATE_EPS:
            return seconds
    return points[-1][0]


def exit_blocks(deployment: Deployment) -> dict[str, str]:
    """exit name -> the block it follows, from the plan when it says, else from the manifests
    (an exit head is evaluated after the last block of its stage)."""
    from finplan.deploy.manifest import load_manifest

    app = deployment.application
    after = {e["name"]: e["after"] for e in app.get("active_exits") or [] if e.get("after")}
    for node in deployment.nodes:
        for stage in load_manifest(deployment.node_folder(node)).stages:
            for exit_ in stage.exits:
                after.setdefault(exit_.name, stage.blocks[-1])
    return after


def _num(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_SAME_REL, abs_tol=1e-15)


def predicted_latency(deployment: Deployment) -> PredictedLatency:
    app = deployment.application
    predicted = app.get("predicted") or {}
    rates = {name: float(r) for name, r in (predicted.get("exit_rates") or {}).items() if _num(r) and r > 0}
    worst, mean = _num(predicted.get("latency_s")), _num(predicted.get("expected_latency_s"))
    final = app.get("final_exit") or deployment.index.get("final_exit")
    if worst is None or mean is None or not rates or final is None:
        return PredictedLatency(None, rates, None, "the plan has no latency_s, expected_latency_s or exit_rates")
    per_exit = _from_planner(deployment, rates, worst, mean)
    if per_exit is not None:
        return PredictedLatency(per_exit, rates, "planner")
    early = [name for name in rates if name != final]
    if not early:
        return PredictedLatency({final: worst}, rates, "plan totals")
    if len(early) == 1:
        (name,) = early
        seconds = (mean - rates.get(final, 0.0) * worst) / rates[name]
        # an early exit's path is part of the final exit's: anything else is not this model of latency
        if -_SAME_REL * worst <= seconds <= worst * (1 + _SAME_REL):
            return PredictedLatency({name: min(max(seconds, 0.0), worst), final: worst}, rates, "plan totals")
        return PredictedLatency(None, rates, None, f"the plan's expected_latency_s puts exit {name} at "
                                                   f"{seconds:.3g} s, outside 0 .. latency_s")
    return PredictedLatency(None, rates, None,
                            f"{len(early)} early exits take inputs and the deployment's profiles and network do not "
                            "reproduce the plan's latencies, so its per-exit latencies cannot be derived")


def _from_planner(deployment: Deployment, rates: dict[str, float], worst: float, mean: float) -> dict[str, float] | None:
    """Per-exit path latencies by the planner's evaluation, or None when it cannot be run on what
    the deployment folder holds or does not reproduce the plan's numbers."""
    from finplan.partition.costs import ExitPolicy, cost_table
    from finplan.partition.evaluate import evaluate
    from finplan.partition.problem import Application, Block, Exit, ModelCard, Options, network_from_dict

    card_doc = _profile_of_model(deployment)
    if card_doc is None:  # analytic nodes only: their costs need the card's FLOPs, which the folder lacks
        return None
    app = deployment.application
    try:
        blocks = tuple(Block(b["name"], float(b["flops"]), float(b["output_bytes"]), float(b.get("params_bytes", 0)))
                       for b in card_doc["blocks"])
        order = {b.name: i for i, b in enumerate(blocks)}
        exits = tuple(Exit(e["name"], order[e["after"]], float(e.get("flops", 0)), float(e.get("params_bytes", 0)), 0.0)
                      for e in card_doc["exits"])
        card = ModelCard(deployment.index["model"]["name"], deployment.model_hash, _input_bytes(deployment),
                         blocks, exits, None, None)
        network = network_from_dict(deployment.network, deployment.folder / "network.json", base_dir=deployment.folder)
        options_doc = deployment.plan.get("options") or {}
        options = Options(mode=options_doc.get("mode", "static"),
                          first_block_at_source=bool(options_doc.get("first_block_at_source", True)),
                          strict=bool(options_doc.get("strict", True)))
        application = Application(app["name"], card, "", app["source"], math.inf, 0.0)
        placement = [p["node"] for p in app["placement"]]
        final = card.exit_index(app["final_exit"])
        active = tuple(sorted((card.exit_index(name), float(thr)) for name, thr in (app.get("thresholds") or {}).items()
                              if card.exit_index(name) < final))
        table = cost_table(card, network)

        def expected_s(exit_rates: dict[str, float]) -> tuple[float, float]:
            vector = tuple(exit_rates.get(e.name, 0.0) for e in card.exits)
            ev = evaluate(application, network, options, placement, app["final_exit"],
                          policy=ExitPolicy(final, active, vector, 0.0), table=table)
            return float(ev.latency_s), float(ev.expected_latency_s)

        plan_worst, plan_mean = expected_s(rates)
        if not (_same(plan_worst, worst) and _same(plan_mean, mean)):
            return None
        return {name: expected_s({name: 1.0})[1] for name in rates}
    except (FinplanInputError, KeyError, ValueError, TypeError):
        return None  # not enough in the folder to re-run the planner: the plan totals are the fallback


def _profile_of_model(deployment: Deployment) -> dict | None:
    for candidates in deployment.profiles.values():
        for _, doc in candidates:
            if deployment.model_hash is not None and doc["model"].get("hash") == deployment.model_hash:
                return doc
            if deployment.model_hash is None and doc["model"].get("name") == deployment.index["model"]["name"]:
                return doc
    return None


def _input_bytes(deployment: Deployment) -> float:
    """Bytes of one input (only a --raw-offload plan sends it); the plan's own figure when it has one."""
    for t in deployment.application.get("transfers") or []:
        if t.get("after_block") == "input" and _num(t.get("bytes")):
            return float(t["bytes"])
    spec = deployment.input_spec
    dims = [d for d in spec.shape[1:]]
    if all(isinstance(d, int) and d > 0 for d in dims):
        return float(np.prod(dims) * np.dtype(spec.dtype).itemsize)
    return 1.0  # a symbolic size: then no transfer of the input is planned either
