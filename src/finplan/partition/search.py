"""Searches over placements that several solvers and the explanations share.

Placement counting and enumeration (the exact core of ``exhaustive``) and the fastest
placement within capacity (the heuristic of ``baselines.min_latency``). Both ``explain`` and
the solvers import this module; it imports neither, so no import circle runs through them.
"""
from __future__ import annotations

import numpy as np

from finplan.partition.context import AppContext, better
from finplan.partition.costs import is_close
from finplan.partition.evaluate import CAPACITY_TAGS, Usage
from finplan.partition.paths import layered_shortest

_CHUNK = 100_000


def count_placements(ctx: AppContext) -> int:
    """The number of placements ``exhaustive`` would enumerate.

    Parameters
    ----------
    ctx : AppContext
        The application.

    Returns
    -------
    int
        N^B summed over the accuracy-meeting exit policies (N^(B-1) when block 1 is pinned to
        the source).

    Notes
    -----
    Complexity: O(P).
    """
    n_nodes = len(ctx.table.nodes)
    total = 0
    for i in ctx.accurate():
        k = ctx.chain(i).n_blocks
        total += n_nodes ** (k - 1 if ctx.options.first_block_at_source else k)
    return total


def enumerate_best(ctx: AppContext, usage: Usage | None = None, objective: str = "energy"):
    """The enumeration of ``exhaustive`` without the size check.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.
    objective : {"energy", "latency"}, optional
        What to minimise (ties by the other). With "latency" the answer keeps every node and
        link limit and may be over the latency bound (then ``violated`` is ["latency"]).

    Returns
    -------
    Evaluation or None
        The best placement under the exact model, or None when none qualifies.

    Notes
    -----
    Vectorised over chunks of placements in lexicographic order (the last block varies
    fastest). Complexity: O(P N^B B) time, O(chunk x B) memory.
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


def fastest_within_capacity(ctx: AppContext, i: int, usage: Usage | None):
    """The fastest path of policy ``i``, repaired until the cumulative node and link loads fit.

    Parameters
    ----------
    ctx : AppContext
        The application.
    i : int
        Index of the exit policy in ``ctx.policies``.
    usage : Usage or None
        Capacity the other applications take.

    Returns
    -------
    Evaluation or None
        The exact evaluation of the repaired path (possibly over the latency bound); None when
        the repairs run out.

    Notes
    -----
    Heuristic (the heuristic part of ``baselines.min_latency`` and ``explain.fastest_within_limits``):
    while the sum on a node or link is over its limit, the last block on that node (or the
    block after that link) is forbidden there and the path recomputed. Complexity:
    O(B N (B N^2)), at most B N repairs of one O(B N^2) shortest path each.
    """
    chain = ctx.chain(i)
    names = ctx.network.names
    ok = ctx.allowed(chain, usage)
    pinned = ctx.source if ctx.options.first_block_at_source else None
    for _attempt in range(ok.size + 1):
        found = layered_shortest(ctx, chain, "latency", usage, ok)
        if found is None:
            return None
        ev = ctx.evaluate(i, found[2], usage)
        over = [tag for tag in ev.violated if tag.startswith(CAPACITY_TAGS)]
        if not over:
            return ev
        kind, _, where = over[0].partition(":")
        if kind == "link":
            tail, head = where.split("->")
            before = [names[ctx.source]] + ev.placement[:-1]  # where each block's input comes from
            blocks = [b for b in range(len(ev.placement)) if ev.placement[b] == head and before[b] == tail]
            node = head
        else:
            node = where
            blocks = [b for b, placed in enumerate(ev.placement) if placed == node
                      and not (b == 0 and pinned == names.index(node))]
        if not blocks:
            return None
        ok[blocks[-1], names.index(node)] = False
    return None
