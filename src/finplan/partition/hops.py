"""What every hop of one chain costs, per link: the inputs of FIN's two dynamic programs.

A hop into block b over the link n -> m (n = m: staying, free and instant) takes the transfer
of block b-1's output, block b's computation on m (with the exit heads it carries) and, when it
leaves n, the runtime stage overhead n pays there; it costs the expected transfer energy plus
block b's expected compute energy on m. FIN's discretised graph (``fin_graph.build_graph``) takes
these times as whole latency units, ceil(gamma t / max_latency); its exact label DP
(``pareto.label_layers``) takes them in seconds, as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finplan.partition.costs import Chain, LinkLists

# Hops (blocks x links) up to which they are computed in plain Python rather than numpy.
SMALL_HOPS = 256


@dataclass(eq=False)
class Hops:
    """Costs of every hop into blocks lo.. of one chain, per link (rows b - lo), as lists:
    ``units_list`` (ints; gamma + 1 = unusable: beyond the latency budget, or NaN) when a gamma
    was given, else ``time_list`` (seconds); ``energy`` gives the energies as an array."""
    lo: int
    units_list: list | None
    energy_list: list
    _energy: np.ndarray | None = None
    time_list: list | None = None

    @property
    def energy(self) -> np.ndarray:
        if self._energy is None:
            self._energy = np.array(self.energy_list)
        return self._energy


def chain_hops(topo: LinkLists, chain: Chain, gamma: int | None, limit: float, lo: int) -> Hops:
    """The hops into blocks lo .. k-1 of ``chain``, per link, vectorised over blocks and links.

    Element by element these are the same floating-point operations as the per-layer matrices
    of the dense construction (transfer 8 bytes s/bit + latency, 0 to stay; then + compute).
    Small instances are computed in plain Python, the rest with numpy (same bits).

    Parameters
    ----------
    topo : LinkLists
        The links.
    chain : Chain
        The costs of one exit policy's blocks.
    gamma : int or None
        Latency units; None gives the times in seconds (the exact label DP).
    limit : float
        The latency bound, seconds.
    lo : int
        The first block (>= 1) whose incoming hops are wanted.

    Returns
    -------
    Hops
        Units ceil(gamma (t_tx + t_comp) / max_latency) (or seconds) and energies E_tx + E_comp.

    Notes
    -----
    Complexity: O((k - lo) |links|).
    """
    if (chain.n_blocks - lo) * len(topo.tails) <= SMALL_HOPS:
        return _chain_hops_small(topo, chain, gamma, limit, lo)
    return _chain_hops_numpy(topo, chain, gamma, limit, lo)


def _chain_hops_numpy(topo: LinkLists, chain: Chain, gamma: int | None, limit: float, lo: int) -> Hops:
    out_bytes = chain.out_bytes[lo - 1:]
    head = topo.head
    # staying costs nothing: s_per_bit, latency_s and j_per_bit are 0 there (finite bytes)
    hop_t = (8.0 * out_bytes)[:, None] * topo.s_per_bit + topo.latency_s
    hop_t += chain.comp_time_s[lo:, head]
    # leaving a node ends a runtime stage there (chain.cut_time_s is 0 after exit heads, and
    # everywhere on analytic nodes)
    cut = chain.cut_time_s[lo - 1:, topo.tail]
    if cut.any():
        hop_t += np.where(topo.stay[None, :], 0.0, cut)
    energy = (chain.trans_prob[lo - 1:] * 8.0 * out_bytes)[:, None] * topo.j_per_bit
    energy += chain.comp_energy_j[lo:, head]
    if gamma is None:
        return Hops(lo, None, energy.tolist(), energy, hop_t.tolist())
    # fmin: NaN (never expected) and anything beyond gamma become gamma + 1, "unusable"
    units = np.fmin(np.ceil(hop_t * gamma / limit), gamma + 1).astype(np.int64)
    return Hops(lo, units.tolist(), energy.tolist(), energy)


def _chain_hops_small(topo: LinkLists, chain: Chain, gamma: int | None, limit: float, lo: int) -> Hops:
    """``chain_hops`` in plain Python, for instances where numpy's per-call overhead would
    dominate (the paper's 3 nodes x 5 blocks): the same operations in the same order, so the
    same bits (tests/partition/test_fin_graph.py checks both against each other)."""
    units_rows, energy_rows, time_rows = [], [], []
    links = list(zip(topo.tails, topo.heads, topo.s_per_bit.tolist(), topo.latency_s.tolist(),
                     topo.j_per_bit.tolist(), topo.stay.tolist()))
    out_bytes, trans_prob = chain.out_bytes.tolist(), chain.trans_prob.tolist()
    comp_time, comp_energy, cut_time = (chain.comp_time_s.tolist(), chain.comp_energy_j.tolist(),
                                        chain.cut_time_s.tolist())
    unusable = None if gamma is None else gamma + 1
    for b in range(lo, chain.n_blocks):
        bits = 8.0 * out_bytes[b - 1]
        joules = trans_prob[b - 1] * 8.0 * out_bytes[b - 1]
        comp_t, comp_e, cut = comp_time[b], comp_energy[b], cut_time[b - 1]
        units, energy, times = [], [], []
        for n, m, spb, lat, jpb, stay in links:
            t = bits * spb + lat
            t += comp_t[m]
            if not stay:
                t += cut[n]
            if unusable is None:
                times.append(t)
            else:
                x = t * gamma / limit
                units.append(math.ceil(x) if x <= unusable else unusable)  # NaN and inf too
            energy.append(joules * jpb + comp_e[m])
        units_rows.append(units)
        energy_rows.append(energy)
        time_rows.append(times)
    if unusable is None:
        return Hops(lo, None, energy_rows, None, time_rows)
    return Hops(lo, units_rows, energy_rows)


def closed_links(ctx, chain: Chain, b: int, ok_row, row_all_ok: bool, usage, link_bans, topo: LinkLists):
    """The links into block ``b`` that may not be used.

    Parameters
    ----------
    ctx : AppContext
        The application.
    chain : Chain
        The costs of one exit policy's blocks.
    b : int
        The block.
    ok_row : ndarray of bool, shape (nodes,)
        The nodes that may run block b.
    row_all_ok : bool
        Whether every node may (skips the node test).
    usage : Usage or None
        Capacity the other applications take.
    link_bans : set of (block, n, m)
        Forbidden hops.
    topo : LinkLists
        The links.

    Returns
    -------
    list of int or None
        Indices into ``topo``'s links: over a link's residual capacity (with a rate), into a
        node that may not run block b, or banned; None when every link is usable.

    Notes
    -----
    Complexity: O(|links|).
    """
    closed = None
    if ctx.app.rate_hz is not None:  # otherwise ctx.link_ok is the plain link matrix
        ok = ctx.link_ok(chain.out_bytes[b - 1], chain.trans_prob[b - 1], usage)[topo.tail, topo.head]
        if not ok.all():
            closed = set(np.flatnonzero(~ok).tolist())
    if not row_all_ok:
        bad = set(np.flatnonzero(~ok_row).tolist())
        closed = closed or set()
        for m in bad:
            closed.update(range(topo.start[m], topo.start[m + 1]))
    for bb, n, m in link_bans:
        if bb == b:
            lo, hi = topo.start[m], topo.start[m + 1]
            if n in topo.tails[lo:hi]:
                closed = closed or set()
                closed.add(lo + topo.tails[lo:hi].index(n))
    return closed


def first_hops(ctx, chain: Chain, ok, usage, link_bans) -> list[tuple[int, float, float]]:
    """Block 1's hops source -> m that may be used.

    Parameters
    ----------
    ctx : AppContext
        The application.
    chain : Chain
        The costs of one exit policy's blocks.
    ok : ndarray of bool, shape (blocks, nodes)
        The (block, node) pairs allowed.
    usage : Usage or None
        Capacity the other applications take.
    link_bans : set of (block, n, m)
        Forbidden hops.

    Returns
    -------
    list of tuple of (int, float, float)
        (m, time_s, energy_j), by node.

    Notes
    -----
    Complexity: O(N).
    """
    table = ctx.table
    src = ctx.source
    links0 = ctx.link_ok(chain.input_bytes, 1.0, usage)
    first = [src] if ctx.options.first_block_at_source else range(len(table.nodes))
    out = []
    for m in first:
        if not ok[0, m] or not links0[src, m] or (0, src, m) in link_bans:
            continue
        t = table.transfer_time_s(src, m, chain.input_bytes) + chain.comp_time_s[0, m]
        e = float(table.transfer_energy_j(src, m, chain.input_bytes) + chain.comp_energy_j[0, m])
        out.append((m, t, e))
    return out


def layer_key(chain: Chain, ok: np.ndarray, b: int) -> tuple:
    """Everything block ``b``'s layer depends on besides the earlier layers and the call's constants.

    Policies sharing a chain prefix share layers (the constants: gamma or trimming, lambda,
    usage, bans).

    Parameters
    ----------
    chain : Chain
        The costs of one exit policy's blocks.
    ok : ndarray of bool, shape (blocks, nodes)
        The (block, node) pairs allowed.
    b : int
        The block.

    Returns
    -------
    tuple
        A hashable key.

    Notes
    -----
    Complexity: O(N) (the rows hashed as bytes).
    """
    key = (ok[b].tobytes(), chain.comp_time_s[b].tobytes(), chain.comp_energy_j[b].tobytes())
    if b:
        key += (float(chain.out_bytes[b - 1]), float(chain.trans_prob[b - 1]), chain.cut_time_s[b - 1].tobytes())
    return key
