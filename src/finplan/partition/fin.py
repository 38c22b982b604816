"""FIN: minimum-energy deployment through the Feasible Inference Graph.

Singhal, Wu, Malandrino, Levorato, Chiasserini, "Resource-aware Deployment of Dynamic DNNs
over Multi-tiered Interconnected Systems", IEEE INFOCOM 2024 (arXiv 2404.08060); see
section 3 of the FIN paper (Singhal et al., INFOCOM 2024) for the construction as finplan builds it.

Two dynamic programs over the same layered placements (one layer per block):

- by default (gamma None) the exact one of ``pareto.label_layers``: labels (latency_s,
  energy_j) on exact latencies, so the answer is the optimum of the exact model, or, where a
  frontier outgrows ``pareto.FRONT_CAP`` labels, within a stated factor (1 + epsilon) of it;
- with an integer gamma, the paper's discretised graph (``build_graph``): latencies rounded up
  to whole units of max_latency / gamma. Its answer is feasible and never below the optimum,
  but the rounding can cut the optimum off and its loss in energy has no bound (docs/planner.md).

Two representations of one layer of the discretised graph, with bit-identical DP results
(same energies, parents and tie-breaking):

- sparse: per node, the surviving replicas as a list of (q, energy, parent node, parent q)
  sorted by q. After dominated-replica pruning a (block, node) keeps only its Pareto
  frontier of (units, energy), usually a handful of replicas, so one DP step costs
  O(|links| F) Python operations for frontier size F, independently of gamma;
- dense: energy[node, q] over all gamma + 1 units (inf = no vertex); one DP step is a few
  vectorised numpy operations over |links| x (gamma + 1) candidates.

``build_graph(method="auto")`` picks, layer by layer, the one its cost model predicts to be
cheaper from the previous layer's frontier sizes (see ``_prefer_sparse``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext, AppResult, better
from finplan.partition.costs import Chain, LinkLists, is_close
from finplan.partition.evaluate import Usage, ms
from finplan.partition.explain import compact_placement, explain, gamma_for
from finplan.partition.hops import (  # noqa: F401 (the _chain_hops_* are tested through this module)
    SMALL_HOPS, Hops, _chain_hops_numpy, _chain_hops_small, chain_hops, closed_links, first_hops,
)
from finplan.partition.hops import layer_key as _layer_key
from finplan.partition import pareto
from finplan.partition.pareto import label_layers, label_path, label_terminals, trim_factor

# Default: no latency units, the exact label DP (pareto.py).
DEFAULT_GAMMA = None
# The discretised graph's resolution where one is needed without a user's gamma (--export-graph). On
# the paper's reference system every gamma from 150 to 2600 (all scanned) solves all 87 reference
# points optimally (the largest failing one is 149, on B-AlexNet at 0.80 / 3 ms; B-ResNet and B-LeNet
# are solved by far smaller gammas). 1000 is the paper's own B-AlexNet value.
GRAPH_GAMMA = 1000
DEFAULT_LAMBDA = 0.0
# Bound of the exact DP where a frontier is trimmed (energy <= (1 + epsilon) x the optimum).
DEFAULT_EPSILON = 1e-3
# Terminal states re-checked with the exact model before giving up on a chain.
MAX_EXACT_CHECKS = 64
# Scalarised placements evaluated for an incumbent before the label DP of a large chain.
MAX_INCUMBENT_CHECKS = 3
METHODS = ("auto", "sparse", "dense")

# Cost model of one DP step (seconds; fitted on random instances of 5-200 nodes and gamma
# 10-2000 on a 2-core x86 VM with CPython 3.11 / numpy 2.4; only their ratios matter).
# Sparse: per node, per usable link and per replica scanned (Python). Dense: a fixed
# overhead per step, per (link, unit) candidate and per (node, unit) vertex (numpy).
SPARSE_PER_NODE = 0.2e-6
SPARSE_PER_LINK = 0.12e-6
SPARSE_PER_REPLICA = 0.12e-6
DENSE_PER_STEP = 100e-6
DENSE_PER_CANDIDATE = 13e-9
DENSE_PER_VERTEX = 25e-9
# Candidates (links x (gamma + 1)) a dense step materialises at once (bounds its memory).
DENSE_CHUNK = 1 << 21


@dataclass(eq=False)
class _SparseLayer:
    """fronts[m]: the replicas (q, energy, parent node, parent q) of (block, m), by q."""
    fronts: list


@dataclass(eq=False)
class _DenseLayer:
    """energy[m, q] (inf = no vertex), parent[m, q] (predecessor node, -1 = none)."""
    energy: np.ndarray
    parent: np.ndarray


@dataclass(eq=False)
class LayeredGraph:
    """The pruned FIN graph of one chain: one layer per block (sparse or dense, see the
    module docstring), the hop units/energies, and what is needed to read paths off it."""
    chain: Chain
    gamma: int
    source: int
    topology: LinkLists
    layers: list
    first_units: dict  # node -> units of the source -> node hop of block 1 (usable ones)
    first_energy: dict
    hops: list  # per block b >= 1: (units list, energy list) per link, after masks and bans

    def units(self, b: int) -> np.ndarray:
        """(N, N) units of the hops into block b (gamma + 1 where unusable)."""
        n = self.topology.n_nodes
        out = np.full((n, n), self.gamma + 1, dtype=np.int64)
        if b == 0:
            for m, u in self.first_units.items():
                out[self.source, m] = u
        else:
            out[self.topology.tail, self.topology.head] = self.hops[b][0]
        return out

    def hop_energy(self, b: int) -> np.ndarray:
        n = self.topology.n_nodes
        out = np.zeros((n, n))
        if b == 0:
            for m, e in self.first_energy.items():
                out[self.source, m] = e
        else:
            out[self.topology.tail, self.topology.head] = self.hops[b][1]
        return out

    def energy(self, b: int) -> np.ndarray:
        """(N, gamma + 1) energies of block b's vertices (inf = no vertex)."""
        layer = self.layers[b]
        return layer.energy if isinstance(layer, _DenseLayer) else _to_dense(layer, self.topology.n_nodes,
                                                                              self.gamma).energy


def _prune(energy: np.ndarray, lam: float) -> None:
    """Drop dominated replicas (no fewer units and no less energy), and with lambda > 0 the
    replicas within a factor (1 + lambda) of a kept replica with fewer units."""
    if lam <= 0:
        prefix = np.minimum.accumulate(energy, axis=1)
        before = np.concatenate([np.full((energy.shape[0], 1), np.inf), prefix[:, :-1]], axis=1)
        energy[energy >= before] = np.inf
        return
    for row in energy:
        kept = np.inf
        for q in np.flatnonzero(np.isfinite(row)):
            if row[q] * (1.0 + lam) < kept:
                kept = row[q]
            else:
                row[q] = np.inf


def _prune_front(best: dict, lam: float) -> list:
    """``_prune`` of one (block, node) given as {q: replica}: the same rule, in order of q."""
    out = []
    kept = math.inf
    if lam <= 0:
        for q in sorted(best):
            rep = best[q]
            if rep[1] < kept:
                kept = rep[1]
                out.append(rep)
        return out
    factor = 1.0 + lam
    for q in sorted(best):
        rep = best[q]
        if rep[1] * factor < kept:
            kept = rep[1]
            out.append(rep)
    return out


def _to_dense(layer: _SparseLayer, n_nodes: int, gamma: int) -> _DenseLayer:
    energy = np.full((n_nodes, gamma + 1), np.inf)
    parent = np.full((n_nodes, gamma + 1), -1, dtype=np.int32)
    for m, front in enumerate(layer.fronts):
        for q, e, pn, _pq in front:
            energy[m, q] = e
            parent[m, q] = pn
    return _DenseLayer(energy, parent)


def _to_sparse(layer: _DenseLayer, units: list, topo: LinkLists) -> _SparseLayer:
    """Replicas of a dense layer; ``units`` (per link, into this layer) gives the parent's q."""
    fronts = [[] for _ in range(topo.n_nodes)]
    ms_, qs = np.nonzero(np.isfinite(layer.energy))
    if ms_.size:
        es = layer.energy[ms_, qs].tolist()
        ps = layer.parent[ms_, qs].tolist()
        for m, q, e, pn in zip(ms_.tolist(), qs.tolist(), es, ps):
            fronts[m].append((q, e, pn, q - _link_units(topo, units, pn, m)))
    return _SparseLayer(fronts)


def _link_units(topo: LinkLists, units: list, n: int, m: int) -> int:
    lo, hi = topo.start[m], topo.start[m + 1]
    return units[lo + topo.tails[lo:hi].index(n)]


def _layer_hops(ctx, chain, hops: Hops, b: int, ok_row, row_all_ok: bool, usage, link_bans, topo: LinkLists,
                gamma: int):
    """Units (with gamma + 1 for links closed by capacity, bans or a head node that may not
    run block b, ``hops.closed_links``) and energies of the hops into block b, per link, as lists."""
    units = hops.units_list[b - hops.lo]
    energy = hops.energy_list[b - hops.lo]
    closed = closed_links(ctx, chain, b, ok_row, row_all_ok, usage, link_bans, topo)
    if closed:
        units = list(units)
        for i in closed:
            units[i] = gamma + 1
    return units, energy


def _first_layer(ctx: AppContext, chain: Chain, gamma: int, ok, usage, link_bans):
    """Block 1's vertices: (source -> m) hops, one replica per node."""
    limit = ctx.app.max_latency_s
    fronts = [[] for _ in range(len(ctx.table.nodes))]
    units, energies = {}, {}
    for m, t, e in first_hops(ctx, chain, ok, usage, link_bans):
        u = int(math.ceil(t * gamma / limit))
        if u <= gamma:
            units[m], energies[m] = u, e
            fronts[m].append((u, e, ctx.source, -1))
    return _SparseLayer(fronts), units, energies


def _sparse_step(prev: _SparseLayer, units: list, energy: list, topo: LinkLists, gamma: int,
                 lam: float) -> _SparseLayer:
    """One DP step on frontiers: per head node m, per tail n in increasing order, per replica
    of n, the candidate (q + u, e + E_hop) replaces a stored one only when strictly cheaper
    (ties: lowest predecessor), then the (block, m) replicas are pruned."""
    fronts_in = prev.fronts
    tails = topo.tails
    fronts = []
    for lo, hi in topo.ranges:
        best: dict = {}
        for i in range(lo, hi):
            front = fronts_in[tails[i]]
            if front and units[i] <= gamma:
                u = units[i]
                room = gamma - u
                he = energy[i]
                n = tails[i]
                for q, e, _pn, _pq in front:
                    if q > room:
                        break
                    c = e + he
                    qq = q + u
                    old = best.get(qq)
                    if old is None or c < old[1]:
                        best[qq] = (qq, c, n, q)
        if len(best) > 1:
            fronts.append(_prune_front(best, lam))
        else:
            fronts.append(list(best.values()))  # one replica is always kept
    return _SparseLayer(fronts)


def _dense_step(prev: _DenseLayer, units: list, hops: Hops, b: int, topo: LinkLists,
                gamma: int, lam: float) -> _DenseLayer:
    """One DP step on dense arrays, vectorised over links and units: per (m, q) the minimum
    over links n -> m of energy[n, q - u] + E_hop, its parent the lowest n reaching it
    (the same values and ties as relaxing the links one by one in increasing n)."""
    n_nodes, g = topo.n_nodes, gamma
    u_all = np.asarray(units, dtype=np.int64)
    alive = np.isfinite(prev.energy).any(axis=1)
    usable = np.flatnonzero((u_all <= g) & alive[topo.tail])
    new = np.full((n_nodes, g + 1), np.inf)
    par = np.full((n_nodes, g + 1), -1, dtype=np.int32)
    if usable.size:
        he_all = hops.energy[b - hops.lo]
        pad = np.full((n_nodes, 2 * g + 2), np.inf)
        pad[:, g + 1:] = prev.energy
        qs = np.arange(g + 1)
        heads = topo.head[usable]
        # whole groups of links into one head node per chunk, about DENSE_CHUNK candidates each
        groups = np.flatnonzero(np.r_[True, heads[1:] != heads[:-1]]).tolist() + [usable.size]
        per = max(1, DENSE_CHUNK // (g + 1))
        chunks = [0]
        for s in groups[1:-1]:
            if s - chunks[-1] >= per:
                chunks.append(s)
        chunks.append(usable.size)
        for lo, hi in zip(chunks[:-1], chunks[1:]):
            sel = usable[lo:hi]
            tail = topo.tail[sel]
            head = topo.head[sel]
            cols = (g + 1) + qs[None, :] - u_all[sel][:, None]
            cand = pad[tail[:, None], cols] + he_all[sel][:, None]
            bounds = np.flatnonzero(np.r_[True, head[1:] != head[:-1]])
            mins = np.minimum.reduceat(cand, bounds, axis=0)
            group = np.repeat(np.arange(bounds.size), np.diff(np.r_[bounds, sel.size]))
            first = np.minimum.reduceat(np.where(cand == mins[group], tail[:, None], n_nodes), bounds, axis=0)
            rows = head[bounds]
            new[rows] = mins
            par[rows] = np.where(np.isfinite(mins), first, -1)
    _prune(new, lam)
    return _DenseLayer(new, par)


def _prefer_sparse(prev, topo: LinkLists, gamma: int) -> bool:
    """Cost model: is the next DP step cheaper on frontiers than on dense arrays (counting the
    conversion of the previous layer when it is in the other representation)?"""
    n_nodes = topo.n_nodes
    dense = DENSE_PER_STEP + DENSE_PER_VERTEX * n_nodes * (gamma + 1)
    if isinstance(prev, _SparseLayer):
        sizes = list(map(len, prev.fronts))
        total = sum(sizes)
        # quick answer: every replica scanned over the busiest node's links is still cheaper
        if (SPARSE_PER_NODE * n_nodes + SPARSE_PER_LINK * len(topo.tails)
                + SPARSE_PER_REPLICA * topo.max_out_degree * total <= dense):
            return True
        dense += SPARSE_PER_REPLICA * total + DENSE_PER_VERTEX * n_nodes * (gamma + 1)  # to dense
    else:
        sizes = np.isfinite(prev.energy).sum(axis=1).tolist()
        total = sum(sizes)
    deg = topo.out_degree
    links = replicas = 0
    for n, size in enumerate(sizes):
        if size:
            links += deg[n]
            replicas += deg[n] * size
    sparse = SPARSE_PER_NODE * n_nodes + SPARSE_PER_LINK * links + SPARSE_PER_REPLICA * replicas
    dense += DENSE_PER_CANDIDATE * links * (gamma + 1)
    if isinstance(prev, _DenseLayer):
        sparse += 2 * SPARSE_PER_REPLICA * total  # to sparse
    return sparse <= dense


def build_graph(ctx: AppContext, chain: Chain, gamma: int, lam: float = 0.0, usage: Usage | None = None,
                node_ok: np.ndarray | None = None, link_bans: frozenset = frozenset(), method: str = "auto",
                shared: dict | None = None) -> LayeredGraph:
    """Build the feasible inference graph of one chain and run the DP over it.

    Problem: vertices (b, n, q) = block b ran on node n with q of gamma latency units used;
    hop (b, n, q) -> (b+1, m, q + ceil(gamma (t_tx + t_comp) / max_latency)) costs
    E_tx + E_comp; vertices with q > gamma are never created. One pass over the layered
    DAG keeps, per vertex, the minimum-energy path (ties: lowest predecessor index), then
    prunes the replicas of each (block, node) (``_prune``).
    Parameters: ``node_ok`` (blocks x nodes) the (block, node) pairs allowed (default: those
    fitting ``usage``); ``link_bans`` (block, n, m) hops into a block that are forbidden;
    ``method`` "sparse" (Pareto frontiers), "dense" (arrays over all units) or "auto" (per
    layer, the cheaper by the cost model of ``_prefer_sparse``): all three give the same
    graph bit for bit; ``shared``: a dict reused across calls of one solve, where chains with
    a common prefix (same blocks, costs and allowed nodes) share the prefix's layers.
    Returns a LayeredGraph. Raises FinplanInputError for an unknown method.
    Complexity: dense O(B |links| gamma) time, O(B N gamma) memory; sparse O(B |links| F)
    time and O(B N F) memory for frontier size F <= gamma + 1 (after pruning, F is the number
    of Pareto-optimal (units, energy) replicas of a (block, node), usually a handful).
    Reference: section 3 of the FIN paper (Singhal et al., INFOCOM 2024) (stage 3); Singhal et al., IEEE INFOCOM 2024.
    """
    if method not in METHODS:
        raise FinplanInputError(f"is {method!r}; expected one of {', '.join(METHODS)}", field="method")
    topo = ctx.table.links
    ok = ctx.allowed(chain, usage) if node_ok is None else node_ok
    k = chain.n_blocks
    key = None
    if shared is not None:
        key = _layer_key(chain, ok, 0)
    hit = shared.get(key) if shared is not None else None
    if hit is None:
        layer0, first_units, first_energy = _first_layer(ctx, chain, gamma, ok, usage, link_bans)
        hit = (layer0, (first_units, first_energy))
        if shared is not None:
            shared[key] = hit
    layers, hop_lists = [hit[0]], [None]
    first_units, first_energy = hit[1]
    hops = rows_ok = None
    for b in range(1, k):
        if shared is not None:
            key = (key, _layer_key(chain, ok, b))
            hit = shared.get(key)
            if hit is not None:
                layers.append(hit[0])
                hop_lists.append(hit[1])
                continue
        if hops is None:
            hops = chain_hops(topo, chain, gamma, ctx.app.max_latency_s, b)
        if rows_ok is None:
            rows_ok = ok.all(axis=1).tolist()
        units, energy = _layer_hops(ctx, chain, hops, b, ok[b], rows_ok[b], usage, link_bans, topo, gamma)
        prev = layers[-1]
        if method == "sparse" or (method == "auto" and _prefer_sparse(prev, topo, gamma)):
            if isinstance(prev, _DenseLayer):
                prev = _to_sparse(prev, hop_lists[-1][0], topo)
            layer = _sparse_step(prev, units, energy, topo, gamma, lam)
        else:
            if isinstance(prev, _SparseLayer):
                prev = _to_dense(prev, topo.n_nodes, gamma)
            layer = _dense_step(prev, units, hops, b, topo, gamma, lam)
        layers.append(layer)
        hop_lists.append((units, energy))
        if shared is not None:
            shared[key] = (layer, (units, energy))
    return LayeredGraph(chain, gamma, ctx.source, topo, layers, first_units, first_energy, hop_lists)


def _path(graph: LayeredGraph, m: int, q: int) -> list[int]:
    nodes = [m]
    topo = graph.topology
    for b in range(len(graph.layers) - 1, 0, -1):
        layer = graph.layers[b]
        if isinstance(layer, _SparseLayer):
            n, q = next((pn, pq) for qq, _e, pn, pq in layer.fronts[m] if qq == q)
        else:
            n = int(layer.parent[m, q])
            q -= _link_units(topo, graph.hops[b][0], n, m)
        m = n
        nodes.append(m)
    nodes.reverse()
    return nodes


def _terminals(graph: LayeredGraph):
    """Terminal vertices (energy, q, node) in order of energy, then q, then node."""
    last = graph.layers[-1]
    if isinstance(last, _SparseLayer):
        return sorted((e, q, m) for m, front in enumerate(last.fronts) for q, e, _pn, _pq in front)
    energy = last.energy
    ms_, qs = np.nonzero(np.isfinite(energy))
    order = np.lexsort((ms_, qs, energy[ms_, qs]))
    return [(float(energy[ms_[i], qs[i]]), int(qs[i]), int(ms_[i])) for i in order]


def _solve_policies(ctx: AppContext, gamma: int | None, lam: float, usage: Usage | None, bans: frozenset,
                    link_bans: frozenset, method: str = "auto", epsilon: float = DEFAULT_EPSILON):
    """The cheapest latency-feasible placement over every accurate policy, by the exact label
    DP (gamma None) or the discretised graph. Returns (key, evaluation, accounting) where the
    accounting holds ``bound`` (the label DP's epsilon, max over chains) and ``complete``
    (False when a chain's first MAX_EXACT_CHECKS terminals all failed the exact check)."""
    best, best_eval = None, None
    accurate = ctx.accurate()
    shared = {} if len(accurate) > 1 else None
    trim = 1.0
    if gamma is None:
        trim = trim_factor(epsilon, max((ctx.chain(i).n_blocks for i in accurate), default=1))
    bound, complete = 0.0, True
    for i in accurate:
        chain = ctx.chain(i)
        ok = ctx.allowed(chain, usage)
        for b, n in bans:
            if b < chain.n_blocks:
                ok[b, n] = False
        if gamma is None:
            upper = None if best is None else best[0]
            if (chain.n_blocks - 1) * len(ctx.table.links.tails) > SMALL_HOPS:
                upper = _incumbent_energy(ctx, i, chain, usage, ok, link_bans, upper)
            labels = label_layers(ctx, chain, usage, ok, link_bans, lam=lam, trim=trim, upper_j=upper, shared=shared)
            bound = max(bound, labels.bound)
            terminals = [(e, m, j) for e, _t, m, j in label_terminals(labels)]
            path = lambda m, j: label_path(labels, m, j)  # noqa: E731
        else:
            graph = build_graph(ctx, chain, gamma, lam, usage, ok, link_bans, method, shared)
            terminals = [(e, m, q) for e, q, m in _terminals(graph)]
            path = lambda m, q: _path(graph, m, q)  # noqa: E731
        settled = False
        for energy, m, where in terminals[:MAX_EXACT_CHECKS]:
            if best is not None and energy > best[0] and not is_close(energy, best[0]):
                settled = True
                break  # terminals come in energy order: nothing later can win
            nodes = path(m, where)
            ev = ctx.evaluate(i, nodes, usage)
            if not _latency_ok(ev):
                continue  # rounding cannot cause this, but strict equality at the limit can
            key = (ev.energy_j, ev.latency_s, i, nodes)
            if better(key, best):
                best, best_eval = key, ev
            settled = True
            break
        if not settled and len(terminals) > MAX_EXACT_CHECKS:
            complete = False
    return best, best_eval, {"bound": bound, "complete": complete}


def _incumbent_energy(ctx: AppContext, i: int, chain: Chain, usage, ok, link_bans, upper: float | None):
    """The lower of ``upper`` and the energy of the cheapest scalarised placement of policy i that
    the exact evaluation accepts as the DP loop would (``pareto.incumbent_placements``): a plan
    the label DP then only has to beat, so it drops most labels. Never changes the answer: every
    label that can lead to a plan at most that costly is kept."""
    for energy, nodes in pareto.incumbent_placements(ctx, chain, usage, ok, link_bans)[:MAX_INCUMBENT_CHECKS]:
        if upper is not None and energy >= upper:
            break
        ev = ctx.evaluate(i, nodes, usage)
        if _latency_ok(ev):
            return ev.energy_j if upper is None else min(upper, ev.energy_j)
    return upper


def _latency_ok(ev) -> bool:
    return not any(v.startswith("latency") or v.startswith("there is no link") or "must run at the source" in v
                   for v in ev.violations)


def fin(ctx: AppContext, gamma: int | None = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA, usage: Usage | None = None,
        method: str = "auto", epsilon: float = DEFAULT_EPSILON) -> AppResult:
    """Minimum-energy placement and exit (and thresholds, dynamic mode) of one application.

    Problem: choose a final exit (dynamic mode: an exit policy from the threshold grid) meeting
    the accuracy target and a node for every deployed block, moving only along links,
    minimising expected energy subject to latency < max_latency_s (<= when not strict) and
    the residual node/link capacity in ``usage``.

    Parameters
    ----------
    ctx : the application (``context.AppContext``).
    gamma : None (default): the exact label DP (``pareto.label_layers``); an int > 0: the
        paper's discretised graph with that many latency units (``build_graph``).
    lam : proximity pruning (>= 0; 0 prunes nothing): frontiers trimmed by (1 + lam).
    usage : capacity the other applications take.
    method : the graph representation (``build_graph``; the answer does not depend on it).
    epsilon : bound of the label DP where a frontier outgrows ``pareto.FRONT_CAP`` labels
        (>= 0; 0: never trim, always exact).

    Returns
    -------
    AppResult whose evaluation, when present, is feasible under the exact model, and whose
    ``guarantee`` says how far from the exact model's optimum it can be (``guarantee``).
    When FIN finds nothing although a placement keeping every constraint exists (checked with
    the exact evaluation, on the capacity ``usage`` leaves), the reason says so and suggests a
    gamma (or, after capacity repairs, the exact MILP); when no plan exists, the reason says why.

    Raises
    ------
    FinplanInputError for gamma <= 0, lambda < 0, epsilon < 0 or an unknown method.

    Notes
    -----
    Cumulative capacity (several blocks on one node) is checked exactly; a violating answer
    triggers a ban of the heaviest (block, node) or link hop on the violated resource and a
    re-solve (heuristic, so the plan then carries no bound; the MILP is exact).
    Complexity: O(P B |links| F) for P exit policies and frontier size F (labels, or replicas of
    at most gamma + 1 units, per (block, node)); on small instances policies sharing a chain
    prefix share its layers.
    Reference: Singhal et al., IEEE INFOCOM 2024, "Resource-aware Deployment of Dynamic DNNs
    over Multi-tiered Interconnected Systems".
    """
    check_parameters(gamma, lam)
    check_epsilon(epsilon)
    if method not in METHODS:
        raise FinplanInputError(f"is {method!r}; expected one of {', '.join(METHODS)}", field="method")
    bans: set = set()
    link_bans: set = set()
    for _attempt in range(4 * ctx.table.block_time_s.size + 4):
        _best, ev, accounting = _solve_policies(ctx, gamma, lam, usage, frozenset(bans), frozenset(link_bans), method,
                                                epsilon)
        if ev is None:
            break
        if ev.feasible:
            return AppResult(ctx.app, ev, notes=[_excluded_note(ctx, bans, link_bans)] if bans or link_bans else [],
                             guarantee=guarantee(gamma, lam, epsilon, accounting, bool(bans or link_bans)))
        if not _ban_heaviest(ctx, ev, usage, bans, link_bans):
            break
    return AppResult(ctx.app, None, _no_plan_reason(ctx, gamma, usage, bans, link_bans))


def guarantee(gamma: int | None, lam: float, epsilon: float, accounting: dict, repaired: bool) -> dict:
    """What a FIN plan is guaranteed to be, against the optimum of the exact model (the MILP's).

    Returns {"exact": bool, "epsilon": float or None, "basis": str}: exact (epsilon 0); or
    energy <= (1 + epsilon) x the optimum; or epsilon None, no bound, with the reason in basis.
    """
    if gamma is not None:
        return {"exact": False, "epsilon": None,
                "basis": f"latencies rounded up to whole units of max_latency/{gamma} per block: feasible and never "
                         "below the optimum, but the rounding may cut the optimum off, by an energy not bounded"}
    if repaired:
        return {"exact": False, "epsilon": None,
                "basis": "several blocks on one node or link went over its capacity; FIN's repair of that "
                         "(ruling options out) is a heuristic, so there is no bound (the MILP is exact)"}
    if not accounting["complete"]:
        return {"exact": False, "epsilon": None,
                "basis": f"the exact evaluation refused the {MAX_EXACT_CHECKS} cheapest placements of an exit "
                         "policy at the latency limit; the rest were not checked"}
    bound = accounting["bound"]
    if bound <= 0.0:
        return {"exact": True, "epsilon": 0.0,
                "basis": "exact latencies; every Pareto-optimal (latency, energy) partial placement kept"}
    if lam == 0.0 and bound <= epsilon * (1 + 1e-9):
        bound = min(bound, epsilon)  # r^J <= 1 + epsilon; only the floating-point product can exceed it
    why = []
    if epsilon > 0 and bound > lam:
        why.append(f"frontiers over {pareto.FRONT_CAP} labels trimmed to within a factor (1 + {epsilon:g})^(1/(B-1))")
    if lam > 0:
        why.append(f"every frontier trimmed by the proximity pruning lambda = {lam:g}")
    return {"exact": False, "epsilon": float(f"{bound:.6g}") if lam > 0 else bound,
            "basis": "exact latencies; " + "; ".join(why) + ": energy <= (1 + epsilon) x the optimum"}


def _no_plan_reason(ctx: AppContext, gamma: int | None, usage: Usage | None, bans: set, link_bans: set) -> str:
    """Why FIN returns no plan. When the explanation proves that none exists, that; when it
    found a placement keeping every constraint (exact evaluation, with the capacity the other
    applications take), what FIN missed: a coarse gamma (try a larger one) or its repair
    (the exact --solver milp); when neither is known, the explanation and that FIN gave up.
    The exact label DP (gamma None) misses nothing through latencies, so only its repair or
    its bounded re-checks can leave such a placement out."""
    why = explain(ctx, usage)
    if why.kind != "capacity" or why.proven:
        return why.sentence
    repaired = bool(bans or link_bans)
    if why.witness is not None:
        where = f"{compact_placement(why.witness.placement)}, {ms(why.witness.latency_s)}"
        suggestion = None if repaired or gamma is None else gamma_for(ctx, why.witness, gamma)
        if suggestion is not None:
            return (f"FIN with gamma={gamma} found no plan, but a placement within every limit exists ({where}); "
                    f"try --gamma {suggestion}")
        missed = f" ({_excluded_note(ctx, bans, link_bans)})" if repaired else ""
        if gamma is None or repaired:
            which, remedy = "FIN", "the exact --solver milp finds the best one"
        else:  # at the limit itself no finer grid is sure to admit it; exact latencies are
            which, remedy = f"FIN with gamma={gamma}", "FIN on exact latencies (no --gamma) or --solver milp finds it"
        return (f"{which} found no plan{missed}, but a placement within every limit exists "
                f"({where}); {remedy}")
    if repaired:
        return (f"{why.sentence}; {_excluded_note(ctx, bans, link_bans)}, and then found no plan "
                "(the exact --solver milp may still find one)")
    return f"{why.sentence} (the exact --solver milp may still find a plan)"


def _excluded_note(ctx: AppContext, bans: set, link_bans: set) -> str:
    """The options FIN set aside because the sum of loads on a node or link went over its
    limit, in the user's terms (block on node, block's output over a link)."""
    names = ctx.network.names
    blocks = ctx.app.card.blocks
    items = [f"{blocks[b].name} on {names[n]}" for b, n in sorted(bans)]
    items += [("the input" if b == 0 else f"{blocks[b - 1].name}'s output") + f" over {names[n]} -> {names[m]}"
              for b, n, m in sorted(link_bans)]
    return "to keep every node and link within its limit, FIN ruled out: " + ", ".join(items)


def _ban_heaviest(ctx: AppContext, ev, usage: Usage | None, bans: set, link_bans: set) -> bool:
    """Relieve the first violated cumulative capacity: on a node, forbid the last block it
    runs (the path then leaves the node earlier, like moving a cut); on a link, forbid the
    heaviest hop. Returns False when nothing is left to forbid."""
    names = ctx.network.names
    for tag in ev.violated:
        kind, _, where = tag.partition(":")
        if kind in ("utilization", "memory"):
            node = where
            n = names.index(node)
            pinned = 0 if ctx.options.first_block_at_source and n == ctx.source else -1
            on_node = [b for b, placed in enumerate(ev.placement) if placed == node and b != pinned and (b, n) not in bans]
            if on_node:
                bans.add((on_node[-1], n))
                return True
        if kind == "link":
            hops = [t for t in ev.transfers if f"{t['from']}->{t['to']}" == where]
            if hops:
                a, b_ = hops[0]["from"], hops[0]["to"]
                heaviest = max(hops, key=lambda t: (t["bytes"] * t["probability"]))
                block = 0 if heaviest["after_block"] == "input" else \
                    [blk.name for blk in ctx.app.card.blocks].index(heaviest["after_block"]) + 1
                link_bans.add((block, names.index(a), names.index(b_)))
                return True
    return False


def fin_parameters(gamma: int | None, lam: float, epsilon: float) -> dict:
    """FIN's parameters as a plan records them: the exact label DP with its epsilon, or the gamma of the graph."""
    if gamma is None:
        return {"latency": "exact", "epsilon": float(epsilon), "lambda": float(lam)}
    return {"gamma": int(gamma), "lambda": float(lam)}


def check_parameters(gamma, lam) -> None:
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma <= 0):
        raise FinplanInputError(f"is {gamma!r}; expected an integer > 0 (latency units)", field="--gamma")
    if not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise FinplanInputError(f"is {lam!r}; expected a number >= 0", field="--lambda")


def check_epsilon(epsilon, field: str = "epsilon") -> None:
    """Refuse an epsilon that is not a number >= 0; ``field`` names it as the caller's user knows it."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise FinplanInputError(f"is {epsilon!r}; expected a number >= 0 (0: always exact)", field=field)


def feasible_inference_graph(ctx: AppContext, gamma: int = GRAPH_GAMMA, lam: float = DEFAULT_LAMBDA,
                             usage: Usage | None = None, max_vertices: int = 200_000):
    """The pruned feasible inference graph of every accuracy-meeting policy, as a networkx
    DiGraph (vertices "exit:block@node#q" with attributes; hops carry energy_j and units),
    with a "source" and a "sink" vertex. For inspection of small instances.
    Raises FinplanInputError above ``max_vertices``.
    """
    import networkx as nx

    if gamma is None:
        gamma = GRAPH_GAMMA  # the exact label DP has no graph of units to export
    check_parameters(gamma, lam)
    out = nx.DiGraph()
    out.add_node("source", kind="source")
    out.add_node("sink", kind="sink")
    card = ctx.app.card
    names = ctx.network.names
    count = 0
    for i in ctx.accurate():
        chain = ctx.chain(i)
        graph = build_graph(ctx, chain, gamma, lam, usage)
        label = card.exits[ctx.policies[i].final_exit].name
        if ctx.policies[i].active:
            label += "|" + ",".join(f"{card.exits[j].name}>={t:.4g}" for j, t in ctx.policies[i].active)
        energies = [graph.energy(b) for b in range(len(graph.layers))]
        for layer in energies:
            count += int(np.isfinite(layer).sum())
            if count > max_vertices:
                raise FinplanInputError(f"the graph has more than {max_vertices} vertices; use a smaller --gamma "
                                        "to export it", field="--export-graph")

        def vid(b, m, q):
            return f"{label}:{card.blocks[b].name}@{names[m]}#{q}"

        for b, layer in enumerate(energies):
            units, hop_energy = graph.units(b), graph.hop_energy(b)
            for m, q in zip(*np.nonzero(np.isfinite(layer))):
                out.add_node(vid(b, m, q), kind="vertex", policy=label, block=card.blocks[b].name, node=names[m],
                             q=int(q), energy_j=float(layer[m, q]))
                if b == 0:
                    out.add_edge("source", vid(b, m, q), energy_j=float(hop_energy[ctx.source, m]), units=int(q))
                else:
                    prev = energies[b - 1]
                    for n in range(len(names)):
                        u = int(units[n, m])
                        if u <= q and np.isfinite(prev[n, q - u]) and u <= gamma:
                            out.add_edge(vid(b - 1, n, q - u), vid(b, m, q),
                                         energy_j=float(hop_energy[n, m]), units=u)
                if b == len(energies) - 1:
                    out.add_edge(vid(b, m, q), "sink", energy_j=0.0, units=0)
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
