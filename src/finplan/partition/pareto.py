"""FIN's exact dynamic program: Pareto frontiers of (latency, energy) labels on exact latencies.

FIN's graph (``fin_graph.build_graph``) rounds every hop's latency up to whole units of
max_latency / gamma; a chain of B blocks can then lose up to B units, and the cheapest plan
that uses the budget tightly is cut off. Here the same layered DP keeps, per (block, node), the
labels (latency_s, energy_j) of partial placements in seconds, as they are: a label is dropped
only when another one is at least as fast and at least as cheap (dominance), so the cheapest
terminal label within the bound is the optimum of the exact model.

Accounting of the bound (``LabelLayers.bound``): with ``epsilon`` > 0, a frontier that grows
beyond ``FRONT_CAP`` labels is trimmed: in order of latency, a label is dropped when its energy
is within a factor r of a kept, faster one. Induction over the blocks: after block b some kept
label at the optimal placement's node is no slower than the optimal prefix and at most r^j
times as costly, j the number of trimmed layers so far (hop energies are >= 0, so the factor
carries over to longer prefixes). So the answer is at most r^J x the optimum; r is chosen as
(1 + epsilon)^(1 / (B_max - 1)), so r^J <= 1 + epsilon over the at most B_max - 1 layers a
chain has after its first. The proximity pruning ``lam`` > 0 trims every frontier by (1 + lam)
and multiplies the bound likewise. Trimming never drops the fastest label, so it never loses
feasibility.

Completion bounds (``_completion``, instances above ``hops.SMALL_HOPS``): a label whose latency
plus the fastest completion from its vertex is over the bound cannot end feasibly; a label
whose energy plus the cheapest completion is above ``upper_j`` (a plan already found, for
another exit policy) cannot win. Both are dropped; neither changes the answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finplan.partition.costs import Chain
from finplan.partition.hops import SMALL_HOPS, chain_hops, closed_links, first_hops, layer_key

# Labels up to (1 + LATENCY_SLACK) x max_latency_s are kept: the DP sums latencies hop by hop,
# the evaluator in its own order, so the exact evaluation decides on the few at the limit.
LATENCY_SLACK = 1e-9
# Labels above which one (block, node) frontier is trimmed when epsilon > 0 (the exact
# frontiers of the random 20-100 nodes x 20-100 blocks instances of benchmarks/speed.py
# hold up to about 500 labels; the paper's system a handful).
FRONT_CAP = 1024
# Relative energy margin of the completion-bound pruning, so that ties survive for the
# explicit tie-breaking (``context.better``).
UPPER_MARGIN = 1e-9


@dataclass(eq=False)
class LabelLayers:
    """The label DP of one chain: per block, per node, the labels (time_s, energy_j, parent
    node, parent label index) in increasing time (and strictly decreasing energy)."""
    chain: Chain
    layers: list
    factors: list  # per block: the trim factor that dropped a non-dominated label there (1.0: none)

    @property
    def bound(self) -> float:
        """epsilon of the guarantee energy <= (1 + epsilon) x the optimum of this chain (0: exact)."""
        return math.prod(self.factors) - 1.0


def trim_factor(epsilon: float, max_blocks: int) -> float:
    """The per-layer trimming factor of the exact label DP.

    Parameters
    ----------
    epsilon : float
        The bound on the whole chain (>= 0).
    max_blocks : int
        The most blocks of any chain solved.

    Returns
    -------
    float
        r with r^(max_blocks - 1) = 1 + epsilon (see the module docstring).

    Notes
    -----
    Complexity: O(1).
    """
    if epsilon <= 0 or max_blocks < 2:
        return 1.0
    return (1.0 + epsilon) ** (1.0 / (max_blocks - 1))


def _sweep(cand: list, factor: float) -> tuple[list, bool]:
    """Labels sorted by (time, energy, ...) -> the kept ones, and whether the factor dropped a
    label that dominance alone would have kept."""
    kept = []
    best = math.inf
    if factor == 1.0:
        for c in cand:
            if c[1] < best:
                best = c[1]
                kept.append(c)
        return kept, False
    trimmed = False
    for c in cand:
        e = c[1]
        if e * factor < best:
            best = e
            kept.append(c)
        elif e < best:
            trimmed = True
    return kept, trimmed


def _front(cand: list, lam_factor: float, trim: float, cap: int) -> tuple[list, float]:
    """One (block, node) frontier of its candidate labels, and the factor it was trimmed by."""
    if len(cand) > 1:
        cand.sort()
    kept, trimmed = _sweep(cand, lam_factor)
    used = lam_factor if trimmed else 1.0
    if len(kept) > cap and trim > 1.0:
        kept, trimmed = _sweep(kept, lam_factor * trim)
        if trimmed:
            used = lam_factor * trim
    return kept, used


def _rows(ctx, chain: Chain, usage, ok, link_bans):
    """Per block b >= 1, the (times, energies) of its hops per link, closed links at inf."""
    topo = ctx.table.links
    if chain.n_blocks < 2:
        return [None]
    hops = chain_hops(topo, chain, None, ctx.app.max_latency_s, 1)
    all_ok = ok.all(axis=1).tolist()
    rows = [None]
    for b in range(1, chain.n_blocks):
        times = hops.time_list[b - 1]
        closed = closed_links(ctx, chain, b, ok[b], all_ok[b], usage, link_bans, topo)
        if closed:
            times = list(times)
            for i in closed:
                times[i] = math.inf
        rows.append((times, hops.energy_list[b - 1]))
    return rows


def _completion(topo, rows, n_nodes: int) -> tuple[list, list]:
    """Per block b, per node: the fastest and the cheapest completion of the chain from a vertex
    (b, node) (each alone, a lower bound of both), by a backward pass over the layers."""
    k = len(rows)
    fast = [None] * k
    cheap = [None] * k
    t_next = np.zeros(n_nodes)
    e_next = np.zeros(n_nodes)
    fast[k - 1], cheap[k - 1] = t_next.tolist(), e_next.tolist()
    for b in range(k - 1, 0, -1):
        times, energy = rows[b]
        t_hop = np.asarray(times) + t_next[topo.head]
        e_hop = np.where(np.isfinite(t_hop), np.asarray(energy) + e_next[topo.head], np.inf)
        t_next = np.full(n_nodes, np.inf)
        e_next = np.full(n_nodes, np.inf)
        np.minimum.at(t_next, topo.tail, t_hop)
        np.minimum.at(e_next, topo.tail, e_hop)
        fast[b - 1], cheap[b - 1] = t_next.tolist(), e_next.tolist()
    return fast, cheap


def label_layers(ctx, chain: Chain, usage, ok, link_bans=frozenset(), *, lam: float = 0.0, trim: float = 1.0,
                 cap: int | None = None, upper_j: float | None = None, shared: dict | None = None) -> LabelLayers:
    """Run FIN's DP on exact latencies over the blocks of ``chain``.

    Parameters
    ----------
    ctx, chain, usage : the application, one exit policy's chain, the capacity others take.
    ok : (blocks x nodes) bool, the (block, node) pairs allowed (``AppContext.allowed``, bans applied).
    link_bans : (block, n, m) hops that may not be used.
    lam : proximity pruning, every frontier by (1 + lam) (0: dominance only).
    trim : per-layer factor for frontiers over ``cap`` labels (default ``FRONT_CAP``; ``trim_factor``;
        1: never trim).
    upper_j : energy of a plan already found; labels that cannot beat it are dropped (large
        instances only, with the completion bounds).
    shared : a dict reused across the chains of one solve (small instances): chains with a
        common prefix share its layers (``hops.layer_key``).

    Returns
    -------
    LabelLayers ; its ``bound`` is 0 when no frontier was trimmed (the answer is exact).

    Notes
    -----
    Complexity O(B |links| F log F) for frontier size F (labels per (block, node), at most
    ``cap`` when trimming applies), plus O(B |links|) for the completion bounds.
    """
    cap = FRONT_CAP if cap is None else cap
    topo = ctx.table.links
    n_nodes = topo.n_nodes
    limit = ctx.app.max_latency_s * (1.0 + LATENCY_SLACK)
    lam_factor = 1.0 + lam
    k = chain.n_blocks
    rows = None
    fast = cheap = None
    if (k - 1) * len(topo.tails) > SMALL_HOPS:
        shared = None  # the completion bounds make layers chain-specific
        rows = _rows(ctx, chain, usage, ok, link_bans)
        fast, cheap = _completion(topo, rows, n_nodes)
    upper = math.inf if upper_j is None or cheap is None else upper_j * (1.0 + UPPER_MARGIN)
    key = layer_key(chain, ok, 0) if shared is not None else None
    hit = shared.get(key) if shared is not None else None
    if hit is None:
        fronts = [[] for _ in range(n_nodes)]
        for m, t, e in first_hops(ctx, chain, ok, usage, link_bans):
            if t <= limit and (fast is None or (t + fast[0][m] <= limit and e + cheap[0][m] <= upper)):
                fronts[m].append((t, e, ctx.source, -1))
        hit = (fronts, 1.0)
        if shared is not None:
            shared[key] = hit
    layers, factors = [hit[0]], [hit[1]]
    tails = topo.tails
    for b in range(1, k):
        if shared is not None:
            key = (key, layer_key(chain, ok, b))
            hit = shared.get(key)
            if hit is not None:
                layers.append(hit[0])
                factors.append(hit[1])
                continue
        if rows is None:
            rows = _rows(ctx, chain, usage, ok, link_bans)
        times, energy = rows[b]
        prev = layers[-1]
        fronts = []
        used = 1.0
        for m, (lo, hi) in enumerate(topo.ranges):
            room = limit if fast is None else limit - fast[b][m]
            cap_e = math.inf if fast is None else upper - cheap[b][m]
            cand = []
            for i in range(lo, hi):
                front = prev[tails[i]]
                ht = times[i]
                if not front or ht > room:
                    continue
                he = energy[i]
                n = tails[i]
                for j, label in enumerate(front):
                    t = label[0] + ht
                    if t > room:
                        break  # labels come in increasing time
                    e = label[1] + he
                    if e <= cap_e:
                        cand.append((t, e, n, j))
            kept, factor = _front(cand, lam_factor, trim, cap)
            fronts.append(kept)
            used = max(used, factor)
        layers.append(fronts)
        factors.append(used)
        if shared is not None:
            shared[key] = (fronts, used)
    return LabelLayers(chain, layers, factors)


# Weights (J/s) of the scalarised placements ``incumbent_placements`` tries, as multiples of the
# chain's typical power (mean compute energy / mean compute time): from "energy only" to "time only".
SCALARISED_WEIGHTS = (0.0,) + tuple(10.0 ** (x / 4) for x in range(-16, 17))


def incumbent_placements(ctx, chain: Chain, usage, ok, link_bans=frozenset()) -> list[tuple[float, list[int]]]:
    """Placements within the latency bound that minimise energy + w x latency, for each weight
    w of ``SCALARISED_WEIGHTS`` (one vectorised DP over the same hops as ``label_layers``).

    Parameters
    ----------
    ctx, chain, usage, ok, link_bans : as for ``label_layers``.

    Returns
    -------
    list of (energy_j, nodes)
        Distinct placements whose DP latency is strictly inside the bound, cheapest first.

    Notes
    -----
    A feasible placement's energy bounds the optimum from above, so ``label_layers(upper_j=...)``
    may drop every label that cannot beat it; the scalarised optima are supported points of the
    (latency, energy) frontier, usually within a few percent of the constrained optimum, which
    keeps most of the frontier out (10-20x fewer labels on the 50-100 node x 100 block instances
    of benchmarks/speed.py). Complexity O(W B |links|) numpy work for W weights.
    """
    topo = ctx.table.links
    n_nodes, k = topo.n_nodes, chain.n_blocks
    limit = ctx.app.max_latency_s * (1.0 - LATENCY_SLACK)
    comp_t, comp_e = chain.comp_time_s, chain.comp_energy_j
    finite = np.isfinite(comp_t) & (comp_t > 0)
    power_w = float(comp_e[finite].mean() / comp_t[finite].mean()) if finite.any() else 1.0
    w = (np.asarray(SCALARISED_WEIGHTS) * power_w)[:, None]
    t = np.full((len(w), n_nodes), math.inf)
    e = np.full((len(w), n_nodes), math.inf)
    for m, tm, em in first_hops(ctx, chain, ok, usage, link_bans):
        t[:, m], e[:, m] = tm, em
    rows = _rows(ctx, chain, usage, ok, link_bans)
    start = np.asarray(topo.start[:-1])
    counts = np.diff(topo.start)
    has_in = counts > 0
    starts, sizes = start[has_in], counts[has_in]
    link_index = np.arange(len(topo.tail))
    parents = []
    for b in range(1, k):
        times, energy = rows[b]
        ct = t[:, topo.tail] + np.asarray(times)
        ce = e[:, topo.tail] + np.asarray(energy)
        with np.errstate(invalid="ignore"):  # 0 x inf on closed hops, masked out by the where
            cc = np.where(ct <= limit, ce + w * ct, math.inf)
        best = np.minimum.reduceat(cc, starts, axis=1)
        first = np.where(cc == np.repeat(best, sizes, axis=1), link_index, len(link_index))
        arg = np.minimum.reduceat(first, starts, axis=1)
        t = np.full((len(w), n_nodes), math.inf)
        e = np.full((len(w), n_nodes), math.inf)
        reached = np.isfinite(best)
        rows_w, cols = np.nonzero(reached)
        links = arg[rows_w, cols]
        nodes = np.flatnonzero(has_in)[cols]
        t[rows_w, nodes] = ct[rows_w, links]
        e[rows_w, nodes] = ce[rows_w, links]
        parent = np.full((len(w), n_nodes), -1)
        parent[rows_w, nodes] = topo.tail[links]
        parents.append(parent)
    found = {}
    for r in range(len(w)):
        inside = np.flatnonzero(t[r] <= limit)
        if not len(inside):
            continue
        m = int(inside[np.argmin(e[r, inside])])
        path = [m]
        for parent in reversed(parents):
            m = int(parent[r, m])
            path.append(m)
        path.reverse()
        found.setdefault(tuple(path), float(e[r, path[-1]]))
    return sorted((energy, list(path)) for path, energy in found.items())


def label_terminals(graph: LabelLayers) -> list[tuple[float, float, int, int]]:
    """The last layer's labels in the order FIN tries them.

    Parameters
    ----------
    graph : LabelLayers
        The label DP's layers (``label_layers``).

    Returns
    -------
    list of tuple of (float, float, int, int)
        (energy_j, time_s, node, label index), sorted by energy, time, node.

    Notes
    -----
    Complexity: O(L log L) for L terminal labels.
    """
    return sorted((e, t, m, j) for m, front in enumerate(graph.layers[-1]) for j, (t, e, _n, _p) in enumerate(front))


def label_path(graph: LabelLayers, m: int, j: int) -> list[int]:
    """The node of every block on the way to terminal label ``j`` of node ``m``.

    Parameters
    ----------
    graph : LabelLayers
        The label DP's layers.
    m : int
        The last block's node.
    j : int
        The label's index at that node.

    Returns
    -------
    list of int

    Notes
    -----
    Complexity: O(B).
    """
    nodes = [m]
    for b in range(len(graph.layers) - 1, 0, -1):
        _t, _e, n, j = graph.layers[b][m][j]
        m = n
        nodes.append(m)
    nodes.reverse()
    return nodes
