"""The exact optimum by enumeration, for small instances."""
from __future__ import annotations

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext, AppResult, better
from finplan.partition.costs import is_close
from finplan.partition.evaluate import Usage
from finplan.partition.explain import infeasibility_reason

# Placements enumerated in total over every exit policy; above it we refuse.
EXHAUSTIVE_LIMIT = 2_000_000
_CHUNK = 100_000


def count_placements(ctx: AppContext) -> int:
    n_nodes = len(ctx.table.nodes)
    total = 0
    for i in ctx.accurate():
        k = ctx.chain(i).n_blocks
        total += n_nodes ** (k - 1 if ctx.options.first_block_at_source else k)
    return total


def exhaustive(ctx: AppContext, usage: Usage | None = None, limit: int = EXHAUSTIVE_LIMIT,
               objective: str = "energy") -> AppResult:
    """Minimum-energy deployment of one application by enumerating every placement.

    Problem: as ``fin``, solved exactly: every node sequence of every accuracy-meeting exit
    policy is scored (vectorised), invalid hops and capacity violations discarded, and the
    best is re-evaluated with the exact model. Ties: lower latency, earlier policy,
    lexicographically smaller node indices.

    Parameters: ``objective`` "energy" (the planning problem) or "latency": the fastest
    placement meeting the accuracy target and every node and link limit, ties by lower
    energy, *without* the latency bound (the min-latency baseline; its answer is then
    evaluated, and marked infeasible when even it is over the bound).
    Returns an AppResult. Raises FinplanInputError when the instance has more than ``limit``
    placements (N^B summed over exit policies), or for an unknown objective.
    Complexity: O(P N^B B).
    """
    if objective not in ("energy", "latency"):
        raise FinplanInputError(f"is {objective!r}; expected energy or latency", field="objective")
    total = count_placements(ctx)
    if total > limit:
        raise FinplanInputError(
            f"instance too large for the exhaustive solver: {total:,} placements to enumerate, over the limit of "
            f"{limit:,}; use --solver milp (exact) or fin", field="--solver")
    best_eval = enumerate_best(ctx, usage, objective)
    if best_eval is None:
        _kind, reason = infeasibility_reason(ctx, usage)
        return AppResult(ctx.app, None, reason)
    return AppResult(ctx.app, best_eval, None if best_eval.feasible else "; ".join(best_eval.violations))


def enumerate_best(ctx: AppContext, usage: Usage | None = None, objective: str = "energy"):
    """The enumeration of ``exhaustive`` without the size check: the best Evaluation, or None.

    With objective "latency" the answer keeps every node and link limit and may be over the
    latency bound (then ``violated`` is ["latency"]). Complexity: O(P N^B B).
    """
    by_latency = objective == "latency"
    usage = usage or Usage()
    table = ctx.table
    n_nodes = len(table.nodes)
    src = ctx.source
    rate = ctx.app.rate_hz
    names = ctx.network.names
    mem_left = np.array([table.memory_bytes[j] - usage.node_memory_bytes.get(n, 0.0) for j, n in enumerate(names)])
    util_left = np.array([table.max_utilization[j] - usage.node_utilization.get(n, 0.0) for j, n in enumerate(names)])
    link_left = table.link_max_utilization.copy()
    for (a, b), value in usage.link_utilization.items():
        link_left[ctx.network.index(a), ctx.network.index(b)] -= value
    best, best_eval = None, None
    for i in ctx.accurate():
        chain = ctx.chain(i)
        k = chain.n_blocks
        free = k - 1 if ctx.options.first_block_at_source else k
        count = n_nodes ** free
        for start in range(0, count, _CHUNK):
            idx = np.arange(start, min(count, start + _CHUNK))
            digits = np.empty((idx.size, k), dtype=np.int64)
            rest = idx.copy()
            for col in range(k - 1, k - 1 - free, -1):  # lexicographic order: last block varies fastest
                digits[:, col] = rest % n_nodes
                rest //= n_nodes
            if free < k:
                digits[:, 0] = src
            x = digits
            valid = np.ones(idx.size, dtype=bool)
            lat = np.zeros(idx.size)
            energy = np.zeros(idx.size)
            link_use = {}
            # input hop
            valid &= table.has_link[src, x[:, 0]]
            off = x[:, 0] != src
            with np.errstate(invalid="ignore"):
                lat += np.where(off, 8.0 * chain.input_bytes * table.link_s_per_bit[src, x[:, 0]]
                                + table.link_latency_s[src, x[:, 0]], 0.0)
            energy += np.where(off, 8.0 * chain.input_bytes * table.link_j_per_bit[src, x[:, 0]], 0.0)
            if rate is not None:
                link_use[-1] = (src * np.ones(idx.size, dtype=np.int64), x[:, 0], off, 1.0, chain.input_bytes)
            for b in range(k):
                lat += chain.comp_time_s[b, x[:, b]]
                energy += chain.comp_energy_j[b, x[:, b]]
                if b + 1 < k:
                    a, c = x[:, b], x[:, b + 1]
                    valid &= table.has_link[a, c]
                    moved = a != c
                    nbytes, prob = chain.out_bytes[b], chain.trans_prob[b]
                    lat += np.where(moved, chain.cut_time_s[b, a], 0.0)  # leaving a node ends a stage there
                    with np.errstate(invalid="ignore"):
                        lat += np.where(moved, 8.0 * nbytes * table.link_s_per_bit[a, c] + table.link_latency_s[a, c], 0.0)
                    energy += np.where(moved, prob * 8.0 * nbytes * table.link_j_per_bit[a, c], 0.0)
                    if rate is not None:
                        link_use[b] = (a, c, moved, prob, nbytes)
            limit_s = ctx.app.max_latency_s
            if not by_latency:
                valid &= (lat < limit_s) if ctx.options.strict else (lat <= limit_s)
            for j in range(n_nodes):
                on = x == j
                if np.isfinite(mem_left[j]):
                    valid &= (on * chain.mem_bytes[None, :]).sum(axis=1) <= mem_left[j] * (1 + 1e-12)
                if rate is not None:
                    busy = (on * chain.busy_s[:, j][None, :]).sum(axis=1)
                    if k > 1 and chain.cut_busy_s[:, j].any():
                        leaves = on[:, :-1] & (x[:, 1:] != j)
                        busy = busy + (leaves * chain.cut_busy_s[:, j][None, :]).sum(axis=1)
                    valid &= rate * busy <= util_left[j] * (1 + 1e-12)
            if rate is not None and link_use:
                load = {}
                for a, c, moved, prob, nbytes in link_use.values():
                    for n in range(n_nodes):
                        for m in range(n_nodes):
                            if n == m or not table.has_link[n, m]:
                                continue
                            hit = moved & (a == n) & (c == m)
                            if hit.any():
                                load[(n, m)] = load.get((n, m), 0.0) + hit * (rate * prob * 8.0 * nbytes
                                                                              * table.link_s_per_bit[n, m])
                for (n, m), value in load.items():
                    valid &= value <= link_left[n, m] * (1 + 1e-12)
            if not valid.any():
                continue
            first, second = (lat, energy) if by_latency else (energy, lat)
            first = np.where(valid, first, np.inf)
            low = first.min()
            if best is not None and low > best[0] and not is_close(low, best[0]):
                continue
            ties = np.flatnonzero(valid & (first <= low + abs(low) * 1e-12))
            cand = min(ties, key=lambda r: (second[r], r))
            nodes = [int(v) for v in x[cand]]
            ev = ctx.evaluate(i, nodes, usage)
            key = (ev.latency_s, ev.energy_j, i, nodes) if by_latency else (ev.energy_j, ev.latency_s, i, nodes)
            ok = not [v for v in ev.violated if v != "latency"] if by_latency else ev.feasible
            if ok and better(key, best):
                best, best_eval = key, ev
    return best_eval
