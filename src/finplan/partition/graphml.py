"""The feasible inference graph as a networkx DiGraph, for inspection (``plan --export-graph``)."""
from __future__ import annotations

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext
from finplan.partition.evaluate import Usage
from finplan.partition.fin import DEFAULT_LAMBDA, check_parameters
from finplan.partition.fin_graph import GRAPH_GAMMA, build_graph


def feasible_inference_graph(ctx: AppContext, gamma: int = GRAPH_GAMMA, lam: float = DEFAULT_LAMBDA,
                             usage: Usage | None = None, max_vertices: int = 200_000, *, field: str = "graph",
                             gamma_field: str = "gamma"):
    """The pruned feasible inference graph of every accuracy-meeting policy, for inspection.

    Parameters
    ----------
    ctx : AppContext
        The application.
    gamma : int or None
        Latency units of the graph (None: ``GRAPH_GAMMA``, since the exact label DP has no units).
    lam : float
        Proximity pruning (>= 0).
    usage : Usage or None
        Capacity the other applications take.
    max_vertices : int
        Refuse graphs with more vertices than this (GraphML of millions of vertices helps nobody).
    field, gamma_field : str
        The names the caller's user knows the export and gamma by (the CLI passes
        ``"--export-graph"`` and ``"--gamma"``).

    Returns
    -------
    networkx.DiGraph
        Vertices "exit:block@node#q" with attributes (policy, block, node, q, energy_j); hops
        carry energy_j and units; plus a "source" and a "sink" vertex.

    Raises
    ------
    FinplanInputError
        Above ``max_vertices``, or for a gamma or lambda ``fin.check_parameters`` refuses.

    Notes
    -----
    Builds the graph of each accuracy-meeting policy with ``fin_graph.build_graph`` (dense view):
    O(P B N gamma) vertices and O(P B |links| gamma) hops for P policies and B blocks.
    """
    import networkx as nx

    if gamma is None:
        gamma = GRAPH_GAMMA  # the exact label DP has no graph of units to export
    check_parameters(gamma, lam, gamma_field=gamma_field)
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
                raise FinplanInputError(f"the graph has more than {max_vertices} vertices; use a smaller "
                                        f"{gamma_field} to export it", field=field)

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
