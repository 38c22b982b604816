"""The plan's predicted end-to-end latency distribution of one deployed application.

The planner predicts one path latency per exit (an input leaving at exit i waits for every
block, head, stage overhead and transfer up to exit i's head) and the exit rates. The
predicted distribution is the discrete mixture of the per-exit path latencies weighted by the
exit rates, so its p-th percentile is the smallest path latency at which the cumulative exit
rate reaches p.

Per-exit latencies come, in this order, from:

1. ``plan``: the plan's ``predicted.exit_latency_s`` (written by the planner);
2. ``plan totals``: for plans without it, when at most one early exit takes inputs, the
   plan's ``latency_s`` (the final exit's path) and ``expected_latency_s`` (the rate-weighted
   mean) determine both path latencies exactly.

Otherwise the percentiles are not predicted (``None``, with the reason).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from finplan.deploy.deployment import Deployment

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


def finite_number(value) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
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
    rates = {name: float(r) for name, r in (predicted.get("exit_rates") or {}).items() if finite_number(r) and r > 0}
    worst, mean = finite_number(predicted.get("latency_s")), finite_number(predicted.get("expected_latency_s"))
    final = app.get("final_exit") or deployment.index.get("final_exit")
    if worst is None or mean is None or not rates or final is None:
        return PredictedLatency(None, rates, None, "the plan has no latency_s, expected_latency_s or exit_rates")
    given = {name: finite_number(v) for name, v in (predicted.get("exit_latency_s") or {}).items()}
    if rates and all(given.get(name) is not None for name in rates):
        return PredictedLatency({name: given[name] for name in rates}, rates, "plan")
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
                            f"{len(early)} early exits take inputs and the plan has no per-exit latencies "
                            "(predicted.exit_latency_s; re-plan with this finplan to get them)")
