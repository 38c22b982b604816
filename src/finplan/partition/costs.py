"""The cost model: what each block, exit head and transfer costs, and how exits change it.

Static mode (the paper's): the final exit e is chosen; blocks up to e run once per input,
the final exit's head runs on its block's node; nothing after e is deployed.

Dynamic mode: early exits are active with confidence thresholds. From the card's
calibration scores a sample leaves at the first active exit whose confidence reaches its
threshold (the policies, ``policies.py``), so block b runs with probability r_b and the expected energy is
``sum r_b (block + exit heads) + sum r_{b+1} transfer(b)``. The latency bound holds for
the slowest input (the one reaching the final exit, paying every active head on its way).

Runtime stages: a stage is a run of consecutive blocks on one node, cut at every active exit
(and the final one) and at every node change; the runtime pays a fixed ``stage_overhead_s``
of the stage's node once per stage (one session call, exit scoring, bookkeeping), beyond the
blocks' and heads' own times. So it is added once per block that carries exit heads, and once
per node change after a block that carries none; in the expected busy time it is weighted by
the probability the stage runs. It is a time, not an energy (the profiles' energies are per
part). It is 0 on analytic nodes, so the paper's model is unchanged there.

Not modelled (on purpose, as in the paper): returning the result to the source, queueing
at nodes or links, and idle power.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finplan.partition.policies import ExitPolicy
from finplan.partition.problem import ModelCard, Network
from finplan.partition.profile_costs import node_block_costs, node_stage_overhead_s



@dataclass(frozen=True, eq=False)
class LinkLists:
    """The links of a network as flat lists, the diagonal ("stay on the node", free and
    instant) included, sorted by head node then tail node: the links into node m are
    ``start[m]:start[m + 1]``. Built once with the cost table, for the solvers that relax
    links one by one (FIN); arrays for vectorised steps, lists for Python loops."""
    n_nodes: int
    tail: np.ndarray
    head: np.ndarray
    tails: list
    heads: list
    start: list
    ranges: list
    stay: np.ndarray
    s_per_bit: np.ndarray
    latency_s: np.ndarray
    j_per_bit: np.ndarray
    out_degree: list
    max_out_degree: int


def link_lists(has_link: np.ndarray, s_per_bit: np.ndarray, latency_s: np.ndarray,
               j_per_bit: np.ndarray) -> LinkLists:
    """The links of (N, N) link matrices as per-head lists (the DPs' view of the topology).

    Parameters
    ----------
    has_link : ndarray of bool, shape (N, N)
        Which directed links exist (the diagonal, staying, always does).
    s_per_bit, latency_s, j_per_bit : ndarray, shape (N, N)
        Seconds per bit, fixed seconds and joules per bit of each link (staying: 0, 0, 0).

    Returns
    -------
    LinkLists

    Notes
    -----
    Complexity: O(N^2).
    """
    n_nodes = len(has_link)
    head, tail = np.nonzero(has_link.T)
    start = np.searchsorted(head, np.arange(n_nodes + 1)).tolist()
    stay = head == tail
    spb = s_per_bit[tail, head]
    spb[stay] = 0.0
    degree = np.bincount(tail, minlength=n_nodes)
    return LinkLists(n_nodes, tail, head, tail.tolist(), head.tolist(), start, list(zip(start[:-1], start[1:])),
                     stay, spb, np.where(stay, 0.0, latency_s[tail, head]), np.where(stay, 0.0, j_per_bit[tail, head]),
                     degree.tolist(), int(degree.max()))


@dataclass(frozen=True, eq=False)
class CostTable:
    """Costs of one model card on every node of one network (arrays indexed [block, node])."""
    nodes: tuple[str, ...]
    block_time_s: np.ndarray
    block_energy_j: np.ndarray
    exit_time_s: np.ndarray
    exit_energy_j: np.ndarray
    output_bytes: np.ndarray
    input_bytes: float
    block_params_bytes: np.ndarray
    exit_params_bytes: np.ndarray
    exit_after: np.ndarray
    # link matrices; the diagonal is "stay on the node" (free, instant); inf/False: no link
    has_link: np.ndarray
    link_s_per_bit: np.ndarray
    link_latency_s: np.ndarray
    link_j_per_bit: np.ndarray
    bandwidth_bps: np.ndarray
    memory_bytes: np.ndarray  # inf where unlimited
    max_utilization: np.ndarray
    link_max_utilization: np.ndarray
    stage_overhead_s: np.ndarray  # per node: the fixed cost of one runtime stage there (0 on analytic nodes)
    links: LinkLists

    @property
    def memory_limited(self) -> bool:
        """Whether any node has a memory_bytes limit."""
        return bool(np.isfinite(self.memory_bytes).any())

    def transfer_time_s(self, n: int, m: int, nbytes: float) -> float:
        if n == m:
            return 0.0
        return 8.0 * nbytes * self.link_s_per_bit[n, m] + self.link_latency_s[n, m]

    def transfer_energy_j(self, n: int, m: int, nbytes: float) -> float:
        return 0.0 if n == m else 8.0 * nbytes * self.link_j_per_bit[n, m]


def cost_table(card: ModelCard, network: Network) -> CostTable:
    """The cost arrays of ``card`` on ``network`` (node order = network order).

    Parameters
    ----------
    card : ModelCard
        The model.
    network : Network
        The nodes and links.

    Returns
    -------
    CostTable
        Per (block, node) and (exit, node) times and energies (``profile_costs``), stage costs,
        memory, and the link matrices.

    Raises
    ------
    FinplanInputError
        When a node's costs of the card cannot be read (``profile_costs.node_block_costs``).

    Notes
    -----
    Complexity: O(N (B + H) + N^2).
    """
    n_nodes = len(network.nodes)
    bt = np.zeros((len(card.blocks), n_nodes))
    be, et, ee = np.zeros_like(bt), np.zeros((len(card.exits), n_nodes)), np.zeros((len(card.exits), n_nodes))
    stage = np.zeros(n_nodes)
    for j, node in enumerate(network.nodes):
        t, e, xt, xe = node_block_costs(node, card, network.path)
        bt[:, j], be[:, j], et[:, j], ee[:, j] = t, e, xt, xe
        stage[j] = node_stage_overhead_s(node, card)
    has = np.eye(n_nodes, dtype=bool)
    spb = np.full((n_nodes, n_nodes), np.inf)
    lat = np.zeros((n_nodes, n_nodes))
    jpb = np.zeros((n_nodes, n_nodes))
    bw = np.full((n_nodes, n_nodes), np.inf)
    lutil = np.ones((n_nodes, n_nodes))
    np.fill_diagonal(spb, 0.0)
    for link in network.links:
        a, b = network.index(link.src), network.index(link.dst)
        has[a, b] = True
        spb[a, b] = 1.0 / link.bandwidth_bps
        lat[a, b] = link.latency_s
        jpb[a, b] = link.energy_j_per_bit
        bw[a, b] = link.bandwidth_bps
        lutil[a, b] = link.max_utilization
    return CostTable(
        nodes=network.names, block_time_s=bt, block_energy_j=be, exit_time_s=et, exit_energy_j=ee,
        output_bytes=np.array([b.output_bytes for b in card.blocks], dtype=float), input_bytes=card.input_bytes,
        block_params_bytes=np.array([b.params_bytes for b in card.blocks], dtype=float),
        exit_params_bytes=np.array([e.params_bytes for e in card.exits], dtype=float),
        exit_after=np.array([e.after for e in card.exits], dtype=int),
        has_link=has, link_s_per_bit=spb, link_latency_s=lat, link_j_per_bit=jpb, bandwidth_bps=bw,
        memory_bytes=np.array([np.inf if n.memory_bytes is None else n.memory_bytes for n in network.nodes]),
        max_utilization=np.array([n.max_utilization for n in network.nodes]),
        link_max_utilization=lutil, stage_overhead_s=stage, links=link_lists(has, spb, lat, jpb),
    )


# ---------------------------------------------------------------- chains

@dataclass(frozen=True, eq=False)
class Chain:
    """One exit policy laid out along the blocks it deploys (arrays [block, node]).

    comp_time_s: worst-case time on the slowest input's path (block + active heads after it,
    + the node's stage overhead when heads end a stage there);
    comp_energy_j / busy_s: expected per input (weighted by r_b);
    out_bytes[b], trans_prob[b]: what is sent after block b and how often (r_{b+1});
    cut_time_s[b, n] / cut_busy_s[b, n]: the stage overhead paid on node n when the chain leaves
    n right after block b (a node change that does not follow exit heads), worst case / expected.
    """
    policy: ExitPolicy
    n_blocks: int
    block_prob: np.ndarray
    comp_time_s: np.ndarray
    comp_energy_j: np.ndarray
    busy_s: np.ndarray
    mem_bytes: np.ndarray
    heads: tuple[tuple[int, ...], ...]
    out_bytes: np.ndarray
    trans_prob: np.ndarray
    input_bytes: float
    cut_time_s: np.ndarray
    cut_busy_s: np.ndarray


def block_probabilities(table: CostTable, policy: ExitPolicy) -> np.ndarray:
    """The probability that an input reaches each deployed block under ``policy``.

    Parameters
    ----------
    table : CostTable
        The card's cost table.
    policy : ExitPolicy
        The exit policy.

    Returns
    -------
    ndarray, shape (blocks,)
        1 minus the rates of the active exits before each block, clipped to [0, 1].

    Notes
    -----
    Complexity: O(B H).
    """
    k = int(table.exit_after[policy.final_exit]) + 1
    prob = np.ones(k)
    if policy.active:
        for i, _ in policy.active:
            prob[table.exit_after[i] + 1:] -= policy.exit_rates[i]
        np.clip(prob, 0.0, 1.0, out=prob)
    return prob


def chain_for(table: CostTable, policy: ExitPolicy) -> Chain:
    """The per-block costs of one exit policy, as the solvers read them.

    Parameters
    ----------
    table : CostTable
        The card's cost table.
    policy : ExitPolicy
        The exit policy.

    Returns
    -------
    Chain
        Per (block, node): time with the heads and stage costs it carries, expected energy and
        busy time, memory; per cut: output bytes, transfer probability and the stage cost of
        leaving a node.

    Notes
    -----
    Complexity: O(B N).
    """
    k = int(table.exit_after[policy.final_exit]) + 1
    prob = block_probabilities(table, policy)
    heads: list[list[int]] = [[] for _ in range(k)]
    for i, _ in policy.active:
        heads[table.exit_after[i]].append(i)
    heads[k - 1].append(policy.final_exit)
    time = table.block_time_s[:k].copy()
    energy = table.block_energy_j[:k].copy()
    mem = table.block_params_bytes[:k].copy()
    for b, hs in enumerate(heads):
        for h in hs:
            time[b] += table.exit_time_s[h]
            energy[b] += table.exit_energy_j[h]
            mem[b] += table.exit_params_bytes[h]
        if hs:  # the exit heads end a runtime stage on this block's node
            time[b] += table.stage_overhead_s
    cut = np.zeros((k - 1, len(table.nodes)))
    if table.stage_overhead_s.any():
        for b in range(k - 1):
            if not heads[b]:  # leaving the node here ends a stage there
                cut[b] = table.stage_overhead_s
    if policy.active:
        energy *= prob[:, None]
        busy = time * prob[:, None]
        cut_busy = cut * prob[:k - 1, None]
    else:  # every deployed block runs for every input
        busy, cut_busy = time, cut
    return Chain(policy, k, prob, time, energy, busy, mem, tuple(tuple(h) for h in heads),
                 table.output_bytes[:k - 1].copy(), prob[1:].copy(), table.input_bytes, cut, cut_busy)


def is_close(a: float, b: float, rel: float = 1e-12) -> bool:
    """Whether two energies are equal up to summation-order rounding (ties are then broken explicitly).

    Parameters
    ----------
    a, b : float
        The energies.
    rel : float, optional
        Relative tolerance.

    Returns
    -------
    bool

    Notes
    -----
    Complexity: O(1).
    """
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def within(value: float, limit: float, strict: bool) -> bool:
    """Whether ``value`` keeps the bound ``limit`` (below it when strict, else at most it).

    Parameters
    ----------
    value, limit : float
        E.g. a latency and its bound.
    strict : bool
        The scenario's ``strict`` option.

    Returns
    -------
    bool

    Notes
    -----
    Complexity: O(1).
    """
    return value < limit if strict else value <= limit


def accuracy_ok(accuracy: float, minimum: float, strict: bool) -> bool:
    """Whether ``accuracy`` meets ``minimum`` (above it when strict, else at least it).

    Parameters
    ----------
    accuracy, minimum : float
        A policy's accuracy and the target.
    strict : bool
        The scenario's ``strict`` option.

    Returns
    -------
    bool

    Notes
    -----
    Complexity: O(1).
    """
    return accuracy > minimum if strict else accuracy >= minimum
