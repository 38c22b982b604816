"""Why an application has no plan, in the user's terms."""
from __future__ import annotations

import math

from finplan.partition.context import AppContext
from finplan.partition.costs import within
from finplan.partition.evaluate import Usage, ms
from finplan.partition.paths import layered_shortest


def _policy_label(ctx: AppContext, index: int) -> str:
    policy = ctx.policies[index]
    name = ctx.app.card.exits[policy.final_exit].name
    if not policy.active:
        return name
    thr = ", ".join(f"{ctx.app.card.exits[i].name}>={t:.3g}" for i, t in policy.active)
    return f"{name} with early exits {thr}"


def fastest(ctx: AppContext, usage: Usage | None = None, capacity: bool = True):
    """Exact minimum latency over the accuracy-meeting policies: (latency_s, policy, nodes) or None."""
    best = None
    for i in ctx.accurate():
        chain = ctx.chain(i)
        found = layered_shortest(ctx, chain, "latency", usage if capacity else None,
                                 None if capacity else _all_ok(chain, len(ctx.table.nodes)))
        if found is not None and (best is None or found[0] < best[0]):
            best = (found[0], i, found[2])
    return best


def _all_ok(chain, n_nodes):
    import numpy as np
    return np.ones((chain.n_blocks, n_nodes), dtype=bool)


def infeasibility_reason(ctx: AppContext, usage: Usage | None = None) -> tuple[str, str]:
    """(kind, sentence): kind is accuracy, latency, capacity or route."""
    app = ctx.app
    if not ctx.accurate():
        best = max(range(len(ctx.policies)), key=lambda i: (ctx.policies[i].accuracy, -i))
        cmp = "above" if ctx.options.strict else "at least"
        what = "exit" if ctx.options.mode == "static" else "exit setting"
        return "accuracy", (f"no {what} reaches accuracy {app.min_accuracy:.4g} ({cmp}); the best is "
                            f"{ctx.policies[best].accuracy:.4f} ({_policy_label(ctx, best)})")
    uncapped = fastest(ctx, capacity=False)
    if uncapped is None:
        return "route", (f"no placement can run the blocks from source {app.source} over the network's links")
    if not within(uncapped[0], app.max_latency_s, ctx.options.strict):
        return "latency", (f"the fastest placement takes {ms(uncapped[0])}, over the {ms(app.max_latency_s)} limit "
                           f"({_policy_label(ctx, uncapped[1])} on {', '.join(ctx.network.names[n] for n in uncapped[2])})")
    return "capacity", ("no placement fits the remaining node and link capacity (max_utilization, memory_bytes) "
                        "within the latency limit")


def suggest_gamma(ctx: AppContext, gamma: int) -> int | None:
    """Smallest gamma that certainly admits the fastest feasible placement (or None).

    Each of the k hops rounds up by less than one unit, so gamma >= k / (1 - T/L) suffices.
    """
    best = fastest(ctx)
    if best is None or best[0] >= ctx.app.max_latency_s:
        return None
    hops = ctx.chain(best[1]).n_blocks
    need = math.ceil(hops / (1.0 - best[0] / ctx.app.max_latency_s)) + 1
    return max(need, 2 * gamma)
