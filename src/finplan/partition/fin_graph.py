"""The feasible inference graph of FIN with integer gamma: its layers and the DP over them.

Vertices (b, n, q) = block b ran on node n with q of gamma latency units used; latencies are
rounded up to whole units of max_latency / gamma (section 3 of the FIN paper; the citation is in
``fin``'s docstring). The exact label DP that FIN runs by default lives in ``pareto.py``; the
policy loop that calls either is ``fin.py``; the GraphML view of this graph is ``graphml.py``.

Two representations of one layer, with bit-identical DP results (same energies, parents and
tie-breaking):

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
from dataclasses import dataclass

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext
from finplan.partition.costs import Chain, LinkLists
from finplan.partition.evaluate import Usage
from finplan.partition.hops import Hops, chain_hops, closed_links, first_hops
from finplan.partition.hops import layer_key as _layer_key

# The discretised graph's resolution where one is needed without a user's gamma (--export-graph). On
# the paper's reference system every gamma from 150 to 2600 (all scanned) solves all 87 reference
# points optimally (the largest failing one is 149, on B-AlexNet at 0.80 / 3 ms; B-ResNet and B-LeNet
# are solved by far smaller gammas). 1000 is the paper's own B-AlexNet value.
GRAPH_GAMMA = 1000
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

    Vertices (b, n, q) = block b ran on node n with q of gamma latency units used; hop
    (b, n, q) -> (b+1, m, q + ceil(gamma (t_tx + t_comp) / max_latency)) costs E_tx + E_comp;
    vertices with q > gamma are never created. One pass over the layered DAG keeps, per vertex,
    the minimum-energy path (ties: lowest predecessor index), then prunes the replicas of each
    (block, node) (``_prune``).

    Parameters
    ----------
    ctx : AppContext
        The application.
    chain : Chain
        The costs of one exit policy's blocks (``ctx.chain(i)``).
    gamma : int
        Latency units (> 0).
    lam : float, optional
        Proximity pruning (>= 0).
    usage : Usage or None, optional
        Capacity the other applications take.
    node_ok : ndarray of bool, shape (blocks, nodes), optional
        The (block, node) pairs allowed (default: those fitting ``usage``).
    link_bans : frozenset of (block, n, m), optional
        Hops into a block that are forbidden.
    method : {"auto", "sparse", "dense"}, optional
        "sparse" (Pareto frontiers), "dense" (arrays over all units) or "auto" (per layer, the
        cheaper by the cost model of ``_prefer_sparse``): all three give the same graph bit for bit.
    shared : dict or None, optional
        Reused across calls of one solve, where chains with a common prefix (same blocks, costs
        and allowed nodes) share the prefix's layers.

    Returns
    -------
    LayeredGraph
        Its paths are read off with ``graph_terminals`` and ``graph_path``.

    Raises
    ------
    FinplanInputError
        For an unknown method.

    Notes
    -----
    Complexity: dense O(B |links| gamma) time, O(B N gamma) memory; sparse O(B |links| F) time
    and O(B N F) memory for frontier size F <= gamma + 1 (after pruning, F is the number of
    Pareto-optimal (units, energy) replicas of a (block, node), usually a handful).
    Reference: section 3 of the FIN paper (stage 3; cited in ``fin.fin``).
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


def graph_path(graph: LayeredGraph, m: int, q: int) -> list[int]:
    """The nodes of the path ending at the last layer's vertex (node ``m``, ``q`` units).

    Parameters
    ----------
    graph : LayeredGraph
        A graph from ``build_graph``.
    m : int
        The last block's node.
    q : int
        The units used at that vertex.

    Returns
    -------
    list of int
        One node index per block, following the parents back.

    Notes
    -----
    Complexity: O(B F) (a sparse layer's replicas are scanned for the one with ``q``).
    """
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


def graph_terminals(graph: LayeredGraph):
    """The last layer's vertices in the order FIN tries them.

    Parameters
    ----------
    graph : LayeredGraph
        A graph from ``build_graph``.

    Returns
    -------
    list of tuple of (float, int, int)
        (energy, q, node), sorted by energy, then q, then node.

    Notes
    -----
    Complexity: O(V log V) for V terminal vertices.
    """
    last = graph.layers[-1]
    if isinstance(last, _SparseLayer):
        return sorted((e, q, m) for m, front in enumerate(last.fronts) for q, e, _pn, _pq in front)
    energy = last.energy
    ms_, qs = np.nonzero(np.isfinite(energy))
    order = np.lexsort((ms_, qs, energy[ms_, qs]))
    return [(float(energy[ms_[i], qs[i]]), int(qs[i]), int(ms_[i])) for i in order]
