"""FIN: minimum-energy deployment through the Feasible Inference Graph.

Singhal, Wu, Malandrino, Levorato, Chiasserini, "Resource-aware Deployment of Dynamic DNNs
over Multi-tiered Interconnected Systems", IEEE INFOCOM 2024 (arXiv 2404.08060); see
PAPER.md section 3 for the construction as finplan builds it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext, AppResult, better
from finplan.partition.costs import Chain, is_close
from finplan.partition.evaluate import Usage
from finplan.partition.explain import infeasibility_reason, suggest_gamma

# Default latency resolution. On the paper's reference system every gamma from 150 to 2600 (all scanned) solves
# all 87 reference points optimally (the largest failing one is 149, on B-AlexNet at 0.80 /
# 3 ms; B-ResNet and B-LeNet are solved by far smaller gammas). 1000 is the paper's own B-AlexNet value and leaves a
# factor 6.7 of margin; the DP cost is linear in gamma (a few ms on the paper instance).
DEFAULT_GAMMA = 1000
DEFAULT_LAMBDA = 0.0
# Terminal states re-checked with the exact model before giving up on a chain.
MAX_EXACT_CHECKS = 64


@dataclass
class LayeredGraph:
    """The pruned FIN graph of one chain: per block, energy[node, q] (inf = no vertex),
    predecessor node and the units of each (n -> m) hop."""
    chain: Chain
    energy: list[np.ndarray]
    parent: list[np.ndarray]
    units: list[np.ndarray]
    hop_energy: list[np.ndarray]


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


def build_graph(ctx: AppContext, chain: Chain, gamma: int, lam: float = 0.0, usage: Usage | None = None,
                node_ok: np.ndarray | None = None, link_bans: frozenset = frozenset()) -> LayeredGraph:
    """Build the feasible inference graph of one chain and run the DP over it.

    Problem: vertices (b, n, q) = block b ran on node n with q of gamma latency units used;
    hop (b, n, q) -> (b+1, m, q + ceil(gamma (t_tx + t_comp) / max_latency)) costs
    E_tx + E_comp; vertices with q > gamma are never created. One pass over the layered
    DAG keeps, per vertex, the minimum-energy path (ties: lowest predecessor index).
    Complexity: O(B |links| gamma) time, O(B N gamma) memory.
    """
    table = ctx.table
    n_nodes = len(table.nodes)
    limit = ctx.app.max_latency_s
    src = ctx.source
    ok = ctx.allowed(chain, usage) if node_ok is None else node_ok
    g = gamma
    energy = np.full((n_nodes, g + 1), np.inf)
    parent0 = np.full((n_nodes, g + 1), -1, dtype=np.int32)
    units0 = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    hop0 = np.zeros((n_nodes, n_nodes))
    links0 = ctx.link_ok(chain.input_bytes, 1.0, usage)
    first = [src] if ctx.options.first_block_at_source else range(n_nodes)
    for m in first:
        if not ok[0, m] or not links0[src, m] or (0, src, m) in link_bans:
            continue
        t = table.transfer_time_s(src, m, chain.input_bytes) + chain.comp_time_s[0, m]
        u = int(math.ceil(t * g / limit))
        e = table.transfer_energy_j(src, m, chain.input_bytes) + chain.comp_energy_j[0, m]
        units0[src, m], hop0[src, m] = u, e
        if u <= g:
            energy[m, u] = e
            parent0[m, u] = src
    _prune(energy, lam)
    layers, parents, units, hops = [energy], [parent0], [units0], [hop0]
    for b in range(1, chain.n_blocks):
        nbytes, prob = chain.out_bytes[b - 1], chain.trans_prob[b - 1]
        links = ctx.link_ok(nbytes, prob, usage)
        with np.errstate(invalid="ignore"):  # 0 bytes x inf (no link) is masked below
            tx_t = 8.0 * nbytes * table.link_s_per_bit + table.link_latency_s
        np.fill_diagonal(tx_t, 0.0)
        tx_e = prob * 8.0 * nbytes * table.link_j_per_bit
        np.fill_diagonal(tx_e, 0.0)
        hop_t = tx_t + chain.comp_time_s[b][None, :]
        with np.errstate(invalid="ignore"):
            u_mat = np.ceil(np.where(links, hop_t, np.inf) * g / limit)
        u_mat = np.where(np.isfinite(u_mat), u_mat, g + 1).astype(np.int64)
        hop_e = tx_e + chain.comp_energy_j[b][None, :]
        new = np.full((n_nodes, g + 1), np.inf)
        par = np.full((n_nodes, g + 1), -1, dtype=np.int32)
        alive = np.isfinite(energy).any(axis=1)
        for m in range(n_nodes):
            if not ok[b, m]:
                continue
            for n in np.flatnonzero(alive & links[:, m]):
                if (b, int(n), m) in link_bans:
                    continue
                u = int(u_mat[n, m])
                if u > g:
                    continue
                cand = energy[n, : g + 1 - u] + hop_e[n, m]
                slot = new[m, u:]
                improve = cand < slot
                slot[improve] = cand[improve]
                par[m, u:][improve] = n
        _prune(new, lam)
        energy = new
        layers.append(new)
        parents.append(par)
        units.append(u_mat)
        hops.append(hop_e)
    return LayeredGraph(chain, layers, parents, units, hops)


def _path(graph: LayeredGraph, m: int, q: int) -> list[int]:
    nodes = [m]
    for b in range(len(graph.energy) - 1, 0, -1):
        n = int(graph.parent[b][m, q])
        q -= int(graph.units[b][n, m])
        m = n
        nodes.append(m)
    nodes.reverse()
    return nodes


def _terminals(graph: LayeredGraph):
    last = graph.energy[-1]
    ms_, qs = np.nonzero(np.isfinite(last))
    order = np.lexsort((ms_, qs, last[ms_, qs]))
    return [(float(last[ms_[i], qs[i]]), int(qs[i]), int(ms_[i])) for i in order]


def _solve_policies(ctx: AppContext, gamma: int, lam: float, usage: Usage | None, bans: frozenset,
                    link_bans: frozenset):
    best, best_eval = None, None
    for i in ctx.accurate():
        chain = ctx.chain(i)
        ok = ctx.allowed(chain, usage)
        for b, n in bans:
            if b < chain.n_blocks:
                ok[b, n] = False
        graph = build_graph(ctx, chain, gamma, lam, usage, ok, link_bans)
        for energy, q, m in _terminals(graph)[:MAX_EXACT_CHECKS]:
            if best is not None and energy > best[0] and not is_close(energy, best[0]):
                break  # terminals come in energy order: nothing later can win
            nodes = _path(graph, m, q)
            ev = ctx.evaluate(i, nodes, usage)
            if not _latency_ok(ev):
                continue  # rounding cannot cause this, but strict equality at the limit can
            key = (ev.energy_j, ev.latency_s, i, nodes)
            if better(key, best):
                best, best_eval = key, ev
            break
    return best, best_eval


def _latency_ok(ev) -> bool:
    return not any(v.startswith("latency") or v.startswith("there is no link") or "must run at the source" in v
                   for v in ev.violations)


def fin(ctx: AppContext, gamma: int = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA, usage: Usage | None = None) -> AppResult:
    """Minimum-energy placement and exit (and thresholds, dynamic mode) of one application.

    Problem: choose a final exit (dynamic mode: an exit policy from the threshold grid) meeting
    the accuracy target and a node for every deployed block, moving only along links,
    minimising expected energy subject to latency < max_latency_s (<= when not strict) and
    the residual node/link capacity in ``usage``.

    Parameters: ``gamma`` latency units (int > 0); ``lam`` proximity pruning (>= 0).
    Returns an AppResult whose evaluation, when present, is feasible under the exact model.
    When FIN finds nothing although a feasible placement exists (coarse gamma), the reason
    says so and suggests a gamma. Cumulative capacity (several blocks on one node) is
    checked exactly; a violating answer triggers a ban of the heaviest (block, node) or
    link hop on the violated resource and a re-solve (heuristic; the MILP is exact).
    Raises FinplanInputError for gamma <= 0 or lambda < 0.
    Complexity: O(P B |links| gamma) for P exit policies.
    Reference: Singhal et al., IEEE INFOCOM 2024, "Resource-aware Deployment of Dynamic DNNs
    over Multi-tiered Interconnected Systems".
    """
    check_parameters(gamma, lam)
    bans: set = set()
    link_bans: set = set()
    for _attempt in range(4 * ctx.table.block_time_s.size + 4):
        _best, ev = _solve_policies(ctx, gamma, lam, usage, frozenset(bans), frozenset(link_bans))
        if ev is None:
            break
        if ev.feasible:
            return AppResult(ctx.app, ev, notes=[f"capacity repair banned {len(bans) + len(link_bans)} option(s)"]
                             if bans or link_bans else [])
        if not _ban_heaviest(ctx, ev, usage, bans, link_bans):
            break
    kind, reason = infeasibility_reason(ctx, usage)
    if kind == "capacity":
        suggestion = suggest_gamma(ctx, gamma) if not bans and not link_bans else None
        if suggestion is not None:
            reason = (f"FIN with gamma={gamma} found no plan, but a placement within the latency limit exists; "
                      f"try --gamma {suggestion}")
        elif bans or link_bans:
            reason += "; FIN's capacity repair gave up (the exact --solver milp may still find a plan)"
    return AppResult(ctx.app, None, reason)


def _ban_heaviest(ctx: AppContext, ev, usage: Usage | None, bans: set, link_bans: set) -> bool:
    """Relieve the first violated cumulative capacity: on a node, forbid the last block it
    runs (the path then leaves the node earlier, like moving a cut); on a link, forbid the
    heaviest hop. Returns False when nothing is left to forbid."""
    names = ctx.network.names
    for violation in ev.violations:
        if violation.startswith("node "):
            node = violation.split()[1]
            n = names.index(node)
            pinned = 0 if ctx.options.first_block_at_source and n == ctx.source else -1
            on_node = [b for b, placed in enumerate(ev.placement) if placed == node and b != pinned and (b, n) not in bans]
            if on_node:
                bans.add((on_node[-1], n))
                return True
        if violation.startswith("link "):
            a, b_ = violation.split()[1], violation.split()[3]
            hops = [t for t in ev.transfers if t["from"] == a and t["to"] == b_]
            if hops:
                heaviest = max(hops, key=lambda t: (t["bytes"] * t["probability"]))
                block = 0 if heaviest["after_block"] == "input" else \
                    [blk.name for blk in ctx.app.card.blocks].index(heaviest["after_block"]) + 1
                link_bans.add((block, names.index(a), names.index(b_)))
                return True
    return False


def check_parameters(gamma, lam) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma <= 0:
        raise FinplanInputError(f"is {gamma!r}; expected an integer > 0 (latency units)", field="--gamma")
    if not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise FinplanInputError(f"is {lam!r}; expected a number >= 0", field="--lambda")


def feasible_inference_graph(ctx: AppContext, gamma: int = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA,
                             usage: Usage | None = None, max_vertices: int = 200_000):
    """The pruned feasible inference graph of every accuracy-meeting policy, as a networkx
    DiGraph (vertices "exit:block@node#q" with attributes; hops carry energy_j and units),
    with a "source" and a "sink" vertex. For inspection of small instances.
    Raises FinplanInputError above ``max_vertices``.
    """
    import networkx as nx

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
        for b, layer in enumerate(graph.energy):
            count += int(np.isfinite(layer).sum())
            if count > max_vertices:
                raise FinplanInputError(f"the graph has more than {max_vertices} vertices; use a smaller --gamma "
                                        "to export it", field="--export-graph")

        def vid(b, m, q):
            return f"{label}:{card.blocks[b].name}@{names[m]}#{q}"

        for b, layer in enumerate(graph.energy):
            for m, q in zip(*np.nonzero(np.isfinite(layer))):
                out.add_node(vid(b, m, q), kind="vertex", policy=label, block=card.blocks[b].name, node=names[m],
                             q=int(q), energy_j=float(layer[m, q]))
                if b == 0:
                    out.add_edge("source", vid(b, m, q), energy_j=float(graph.hop_energy[0][ctx.source, m]), units=int(q))
                else:
                    prev = graph.energy[b - 1]
                    for n in range(len(names)):
                        u = int(graph.units[b][n, m])
                        if u <= q and np.isfinite(prev[n, q - u]) and u <= gamma:
                            out.add_edge(vid(b - 1, n, q - u), vid(b, m, q),
                                         energy_j=float(graph.hop_energy[b][n, m]), units=u)
                if b == len(graph.energy) - 1:
                    out.add_edge(vid(b, m, q), "sink", energy_j=0.0, units=0)
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
