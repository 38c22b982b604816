"""Exact one-criterion shortest paths through the block layers (no latency discretisation).

Used for the minimum-latency baseline, for explaining infeasibility ("the fastest
placement takes ...") and for the energy-only lower bound that tells whether the latency
constraint binds.
"""
from __future__ import annotations

import numpy as np

from finplan.partition.context import AppContext
from finplan.partition.costs import Chain
from finplan.partition.evaluate import Usage


def layered_shortest(ctx: AppContext, chain: Chain, weight: str, usage: Usage | None = None,
                     node_ok: np.ndarray | None = None) -> tuple[float, float, list[int]] | None:
    """The placement of ``chain`` minimising ``weight``, exactly, by a DP over the block layers.

    Parameters
    ----------
    ctx : AppContext
        The application.
    chain : Chain
        The costs of one exit policy's blocks.
    weight : {"latency", "energy"}
        What to minimise; ties broken by the other criterion, then by lower node index.
    usage : Usage or None, optional
        Capacity the other applications take (each block and transfer must fit alone).
    node_ok : ndarray of bool, shape (blocks, nodes), optional
        The (block, node) pairs allowed (default: those fitting ``usage``).

    Returns
    -------
    tuple of (float, float, list of int) or None
        (latency_s, energy_j, nodes), or None when no placement exists (links, rules,
        per-element capacity).

    Notes
    -----
    Sums of loads on one node or link are not checked (``search.fastest_within_capacity`` does).
    Complexity: O(B N^2).
    """
    table = ctx.table
    n_nodes = len(table.nodes)
    src = ctx.source
    ok = ctx.allowed(chain, usage) if node_ok is None else node_ok
    inf = np.inf
    time = np.full(n_nodes, inf)
    energy = np.full(n_nodes, inf)
    first = [src] if ctx.options.first_block_at_source else list(range(n_nodes))
    links0 = ctx.link_ok(chain.input_bytes, 1.0, usage)
    for m in first:
        if not ok[0, m] or not links0[src, m]:
            continue
        time[m] = table.transfer_time_s(src, m, chain.input_bytes) + chain.comp_time_s[0, m]
        energy[m] = table.transfer_energy_j(src, m, chain.input_bytes) + chain.comp_energy_j[0, m]
    parents = []
    for b in range(1, chain.n_blocks):
        nbytes, prob = chain.out_bytes[b - 1], chain.trans_prob[b - 1]
        links = ctx.link_ok(nbytes, prob, usage)
        with np.errstate(invalid="ignore"):  # 0 bytes x inf (no link) is masked below
            tx_t = 8.0 * nbytes * table.link_s_per_bit + table.link_latency_s
        tx_e = prob * 8.0 * nbytes * table.link_j_per_bit
        tx_t = tx_t + chain.cut_time_s[b - 1][:, None]  # leaving a node ends a runtime stage there
        np.fill_diagonal(tx_t, 0.0)
        np.fill_diagonal(tx_e, 0.0)
        ct = time[:, None] + tx_t + chain.comp_time_s[b][None, :]
        ce = energy[:, None] + tx_e + chain.comp_energy_j[b][None, :]
        valid = links & ok[b][None, :] & np.isfinite(time)[:, None]
        ct = np.where(valid, ct, inf)
        ce = np.where(valid, ce, inf)
        first_key, second_key = (ct, ce) if weight == "latency" else (ce, ct)
        best = first_key.min(axis=0)
        tie = first_key <= best[None, :] * (1 + 1e-12)
        second = np.where(tie & np.isfinite(first_key), second_key, inf)
        par = np.argmin(second, axis=0)  # argmin takes the lowest index among equal values
        cols = np.arange(n_nodes)
        time, energy = ct[par, cols], ce[par, cols]
        parents.append(par)
    final_key, other = (time, energy) if weight == "latency" else (energy, time)
    if not np.isfinite(final_key).any():
        return None
    best = final_key.min()
    tie = np.isfinite(final_key) & (final_key <= best * (1 + 1e-12))
    m = int(np.argmin(np.where(tie, other, inf)))
    nodes = [m]
    for par in reversed(parents):
        m = int(par[m])
        nodes.append(m)
    nodes.reverse()
    return float(time[nodes[-1]]), float(energy[nodes[-1]]), nodes
