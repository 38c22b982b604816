"""Baselines FIN is compared with: MCP (the paper's), device only, cloud only, best single
cut (Neurosurgeon-style) and minimum latency. A baseline always says what it would deploy;
when that breaks a constraint the result is marked infeasible with the violation."""
from __future__ import annotations

from finplan.partition.context import AppContext, AppResult, better
from finplan.partition.evaluate import CAPACITY_TAGS, Usage
from finplan.partition.exhaustive import EXHAUSTIVE_LIMIT, exhaustive
from finplan.partition.explain import infeasibility_reason
from finplan.partition.paths import layered_shortest
from finplan.partition.search import count_placements, fastest_within_capacity

# Tier order used by MCP to move "up": unknown tiers sit with the edge.
TIER_RANK = {"mobile": 0, "device": 0, "iot": 0, "phone": 0, "edge": 1, "fog": 1, "cloud": 2}
MCP_TIME_SCALE = 10.0
MCP_LATENCY_WEIGHT = 0.5
MCP_STOP = 0.85


def _pick(ctx: AppContext, candidates, usage: Usage | None) -> AppResult:
    """Best feasible candidate (policy_index, nodes); else the cheapest one, marked infeasible."""
    best = best_ev = cheapest = None
    for i, nodes in candidates:
        ev = ctx.evaluate(i, nodes, usage)
        key = (ev.energy_j, ev.latency_s, i, nodes)
        if ev.feasible and better(key, best):
            best, best_ev = key, ev
        if cheapest is None or better(key, cheapest[0]):
            cheapest = (key, ev)
    if best_ev is not None:
        return AppResult(ctx.app, best_ev)
    if cheapest is None:
        return AppResult(ctx.app, None, infeasibility_reason(ctx, usage)[1])
    ev = cheapest[1]
    return AppResult(ctx.app, ev, "; ".join(ev.violations))


def _accurate_or_reason(ctx: AppContext, usage):
    indices = ctx.accurate()
    return indices, (None if indices else AppResult(ctx.app, None, infeasibility_reason(ctx, usage)[1]))


def device_only(ctx: AppContext, usage: Usage | None = None) -> AppResult:
    """Every deployed block on the source node; the cheapest exit policy that fits.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    AppResult
        The cheapest feasible candidate, else the cheapest one marked infeasible with its
        violations; no evaluation and a reason when no exit is accurate enough.

    Notes
    -----
    Complexity: O(P B).
    """
    indices, fail = _accurate_or_reason(ctx, usage)
    if fail:
        return fail
    return _pick(ctx, [(i, [ctx.source] * ctx.chain(i).n_blocks) for i in indices], usage)


def cloud_only(ctx: AppContext, usage: Usage | None = None) -> AppResult:
    """Raw input sent from the source to the fastest directly linked node, which runs every block.

    Ignores first_block_at_source: that is what this baseline is (a note says so).

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    AppResult
        As ``device_only``.

    Notes
    -----
    Complexity: O(P B N).
    """
    indices, fail = _accurate_or_reason(ctx, usage)
    if fail:
        return fail
    table = ctx.table
    src = ctx.source
    targets = [m for m in range(len(table.nodes)) if m != src and table.has_link[src, m]] or [src]
    candidates = []
    for i in indices:
        k = ctx.chain(i).n_blocks
        fastest = min(targets, key=lambda m: (table.block_time_s[:k, m].sum(), m))
        candidates.append((i, [fastest] * k))
    result = _pick(ctx, candidates, usage)
    if result.evaluation is not None and ctx.options.first_block_at_source:
        ev = result.evaluation
        kept = [(v, tag) for v, tag in zip(ev.violations, ev.violated) if tag != "first_block_at_source"]
        ev.violations = [v for v, _ in kept]
        ev.violated = [tag for _, tag in kept]
        ev.feasible = not ev.violations
        result.reason = "; ".join(ev.violations) or None
        result.notes.append("sends the raw input off the source although first_block_at_source is true (this "
                            "baseline's definition; the other solvers keep block 1 at the source, so they may cost "
                            "more than it)")
    return result


def single_cut(ctx: AppContext, usage: Usage | None = None) -> AppResult:
    """Best single cut (Neurosurgeon-style): blocks 1..k on the source, the rest on one linked node.

    k = B means no offloading; k = 0 only when first_block_at_source is false.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    AppResult
        As ``device_only``.

    Notes
    -----
    Complexity: O(P B^2 N).
    """
    indices, fail = _accurate_or_reason(ctx, usage)
    if fail:
        return fail
    src = ctx.source
    table = ctx.table
    low = 1 if ctx.options.first_block_at_source else 0
    candidates = []
    for i in indices:
        k = ctx.chain(i).n_blocks
        candidates.append((i, [src] * k))
        for m in range(len(table.nodes)):
            if m == src or not table.has_link[src, m]:
                continue
            for cut in range(low, k):
                candidates.append((i, [src] * cut + [m] * (k - cut)))
    return _pick(ctx, candidates, usage)


def min_latency(ctx: AppContext, usage: Usage | None = None, limit: int = EXHAUSTIVE_LIMIT) -> AppResult:
    """The fastest placement that meets the accuracy target and every node and link limit.

    Over the accuracy-meeting exit policies and the placements along links that keep each
    node's utilisation and memory and each link's utilisation (cumulatively, with ``usage``)
    within their limits, minimise the worst-case latency; ties: lower energy, earlier policy,
    smaller node indices. The latency bound is not a constraint of this search: when even the
    fastest such placement is over it, that placement is returned, marked infeasible with the
    violation.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.
    limit : int, optional
        Up to this many placements (N^B summed over policies) the search enumerates (exact,
        ``exhaustive(objective="latency")``); above it, the heuristic
        ``search.fastest_within_capacity``.

    Returns
    -------
    AppResult
        Without any placement within capacity, no evaluation and a reason.

    Notes
    -----
    The exact fastest path with each block fitting alone in its node's and link's limits
    (``layered_shortest``) is the answer whenever the sums fit too. Complexity: O(P B N^2) when
    the sums fit; else O(P N^B B) up to ``limit``, above it O(P B N (B N^2)) for the repairs.
    """
    indices, fail = _accurate_or_reason(ctx, usage)
    if fail:
        return fail
    # The fastest path with each block fitting alone is the answer whenever the sums fit too
    # (the placements within capacity are a subset of those): exact in O(P B N^2), the common case.
    best = None
    for i in indices:
        found = layered_shortest(ctx, ctx.chain(i), "latency", usage)
        if found is not None and (best is None or (found[0], found[1], i) < (best[0], best[1], best[2])):
            best = (found[0], found[1], i, found[2])
    if best is None:
        return AppResult(ctx.app, None, infeasibility_reason(ctx, usage)[1])
    ev = ctx.evaluate(best[2], best[3], usage)
    if not any(tag.startswith(CAPACITY_TAGS) for tag in ev.violated):
        return AppResult(ctx.app, ev, None if ev.feasible else "; ".join(ev.violations))
    if count_placements(ctx) <= limit:
        return exhaustive(ctx, usage, limit, objective="latency")
    best = best_ev = None
    for i in indices:
        ev = fastest_within_capacity(ctx, i, usage)
        if ev is None:
            continue
        key = (ev.latency_s, ev.energy_j, i, [ctx.network.index(n) for n in ev.placement])
        if better(key, best):
            best, best_ev = key, ev
    if best_ev is None:
        return AppResult(ctx.app, None, infeasibility_reason(ctx, usage)[1])
    return AppResult(ctx.app, best_ev, None if best_ev.feasible else "; ".join(best_ev.violations))


def _rank(ctx: AppContext, n: int) -> int:
    return TIER_RANK.get(ctx.network.nodes[n].tier.lower(), 1)


def mcp(ctx: AppContext, usage: Usage | None = None) -> AppResult:
    """MCP, the paper's "state-of-the-art cost minimisation" baseline (section 5 of the FIN paper, cited in ``fin.fin``).

    A greedy that ignores energy: block 1 on the source; for each next block, the latency of
    running it one tier up (compute time x 10, plus the incoming transfer) is compared with
    staying, and the block moves up when that is faster. At each exit the metric
    max(0.5 latency / budget, min_accuracy / exit_accuracy) is computed on the estimated latency
    so far; MCP stops at the first exit where it is <= 0.85, else at the last exit. Static exit
    policies only (its thresholds, if any, are not searched).

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take (only in the evaluation of its answer).

    Returns
    -------
    AppResult
        Its placement, evaluated exactly; marked infeasible with the violations when it breaks
        a constraint.

    Notes
    -----
    Complexity: O(B N).
    """
    card = ctx.app.card
    table = ctx.table
    src = ctx.source
    last = len(card.exits) - 1
    k = card.exits[last].after + 1
    nodes = [src]
    estimate = MCP_TIME_SCALE * table.block_time_s[0, src]
    final = last
    stop_at = {}
    for idx, ex in enumerate(card.exits):
        stop_at.setdefault(ex.after, []).append(idx)

    def metric(est: float, e: int) -> float:
        acc = card.exits[e].accuracy
        return max(MCP_LATENCY_WEIGHT * est / ctx.app.max_latency_s,
                   ctx.app.min_accuracy / acc if acc > 0 else float("inf"))

    def stops(b: int, est: float):
        for e in stop_at.get(b, []):
            if metric(est, e) <= MCP_STOP:
                return e
        return None

    found = stops(0, estimate)
    if found is None:
        for b in range(1, k):
            cur = nodes[-1]
            stay = MCP_TIME_SCALE * table.block_time_s[b, cur]
            nbytes = table.output_bytes[b - 1]
            higher = [m for m in range(len(table.nodes)) if m != cur and table.has_link[cur, m]
                      and _rank(ctx, m) > _rank(ctx, cur)]
            if higher:
                step = min(_rank(ctx, m) for m in higher)
                ups = [m for m in higher if _rank(ctx, m) == step]
                up = min(ups, key=lambda m: (MCP_TIME_SCALE * table.block_time_s[b, m]
                                             + table.transfer_time_s(cur, m, nbytes), m))
                move = MCP_TIME_SCALE * table.block_time_s[b, up] + table.transfer_time_s(cur, up, nbytes)
                if move < stay:
                    nodes.append(up)
                    estimate += move
                else:
                    nodes.append(cur)
                    estimate += stay
            else:
                nodes.append(cur)
                estimate += stay
            found = stops(b, estimate)
            if found is not None:
                break
    final = found if found is not None else last
    nodes = nodes[: card.exits[final].after + 1]
    policy_index = next(i for i, p in enumerate(ctx.policies) if p.final_exit == final and not p.active)
    ev = ctx.evaluate(policy_index, nodes, usage)
    return AppResult(ctx.app, ev, None if ev.feasible else "; ".join(ev.violations))


BASELINES = {
    "mcp": mcp,
    "device-only": device_only,
    "cloud-only": cloud_only,
    "single-cut": single_cut,
    "min-latency": min_latency,
}
