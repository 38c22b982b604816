"""The data of joint FIN's decomposition (``joint.py``): what each application can reach,
classes of interchangeable applications, the shared resources, columns (plans with their
use of those resources) and the priced copy of a context the pricing step solves.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from finplan.partition.context import AppContext
from finplan.partition.costs import link_lists
from finplan.partition.evaluate import Evaluation
from finplan.partition.problem import Network


def reachable(network: Network, source: str, succ: dict | None = None) -> list[int]:
    """The nodes reachable from ``source`` along links.

    Parameters
    ----------
    network : Network
        The network.
    source : str
        The source node's name.
    succ : dict or None, optional
        The network's successor lists (``successors``), when known.

    Returns
    -------
    list of int
        Node indices (source included), in network order.

    Notes
    -----
    Complexity: O(N + |links|).
    """
    succ = successors(network) if succ is None else succ
    seen = {source}
    stack = [source]
    while stack:
        for nxt in succ.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return sorted(network.index(n) for n in seen)


def successors(network: Network) -> dict[str, list[str]]:
    """Each node's successors along links.

    Parameters
    ----------
    network : Network
        The network.

    Returns
    -------
    dict of str to list of str
        Node name -> the names its links lead to, in link order.

    Notes
    -----
    Complexity: O(|links|).
    """
    succ: dict[str, list[str]] = {}
    for link in network.links:
        succ.setdefault(link.src, []).append(link.dst)
    return succ


def _slices(table, keep: list[int]) -> dict:
    ix = np.asarray(keep, dtype=np.int64)
    sub = np.ix_(ix, ix)
    return dict(
        nodes=tuple(table.nodes[i] for i in keep), block_time_s=table.block_time_s[:, ix],
        block_energy_j=table.block_energy_j[:, ix], exit_time_s=table.exit_time_s[:, ix],
        exit_energy_j=table.exit_energy_j[:, ix], has_link=table.has_link[sub], link_s_per_bit=table.link_s_per_bit[sub],
        link_latency_s=table.link_latency_s[sub], link_j_per_bit=table.link_j_per_bit[sub],
        bandwidth_bps=table.bandwidth_bps[sub], memory_bytes=table.memory_bytes[ix],
        max_utilization=table.max_utilization[ix], link_max_utilization=table.link_max_utilization[sub],
        stage_overhead_s=table.stage_overhead_s[ix])


def restrict(ctx: AppContext, keep: list[int] | None = None) -> AppContext:
    """``ctx`` on the sub-network of the nodes in ``keep`` and the links among them.

    Cost arrays are slices of ``ctx.table`` (same bits), node order is kept, so every
    evaluation of a placement inside it is the one on the whole network.

    Parameters
    ----------
    ctx : AppContext
        The application on the whole network.
    keep : list of int or None, optional
        Node indices (default: those reachable from the source).

    Returns
    -------
    AppContext

    Notes
    -----
    Complexity: O(B |keep| + |keep|^2 + |links|).
    """
    keep = reachable(ctx.network, ctx.app.source) if keep is None else keep
    parts = _slices(ctx.table, keep)
    inside = set(keep)
    table = replace(ctx.table, **parts, links=link_lists(parts["has_link"], parts["link_s_per_bit"],
                                                           parts["link_latency_s"], parts["link_j_per_bit"]))
    net = ctx.network
    links = [net.link(net.names[a], net.names[b]) for a in keep for b in keep
             if a != b and b in inside and net.link(net.names[a], net.names[b]) is not None]
    network = Network(tuple(net.nodes[i] for i in keep), tuple(links), net.path, net.doc)
    return AppContext(ctx.app, network, ctx.options, ctx.table if keep == list(range(len(ctx.table.nodes)))
                      else table, ctx.policies, ctx.quantiles)


def restricted_contexts(ctxs: list[AppContext]) -> list[AppContext]:
    """Every context restricted to the nodes its application can reach.

    Parameters
    ----------
    ctxs : list of AppContext
        One per application.

    Returns
    -------
    list of AppContext
        ``restrict`` of each.

    Notes
    -----
    Complexity: A times that of ``restrict``.
    """
    return [restrict(ctx) for ctx in ctxs]


@dataclass(frozen=True)
class Resource:
    kind: str  # "utilization", "memory" or "link"
    where: str | tuple[str, str]
    capacity: float

    @property
    def tag(self) -> str:
        return f"link:{self.where[0]}->{self.where[1]}" if self.kind == "link" else f"{self.kind}:{self.where}"


@dataclass(frozen=True, eq=False)
class Column:
    """One single-application plan of a class: policy index and restricted node indices, its
    exact energy and its use of every shared resource (the master's coefficients)."""
    policy: int
    nodes: tuple[int, ...]
    energy_j: float
    use: np.ndarray


@dataclass(eq=False)
class AppClass:
    members: list[int]  # application indices, in scenario order
    keep: list[list[int]]  # per member: its reachable node indices (full network)
    rep: AppContext  # the first member's restricted context
    columns: list[Column] = field(default_factory=list)
    seen: dict = field(default_factory=dict)
    # per (restricted) node / link: index into the resource vector, or -1 (private / unpriced)
    util_index: np.ndarray | None = None
    mem_index: np.ndarray | None = None
    link_index: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.members)


def _class_key(ctx: AppContext, keep: list[int], shared_nodes: set[int]) -> tuple:
    """Equal keys: the same model, constraints, rate, options, exit policies and costs on the
    reachable nodes (link parameters included: they are in the sliced link arrays), the same
    shared nodes at the same positions, the source at the same position."""
    parts = _slices(ctx.table, keep)
    digest = hashlib.sha256()
    for name in sorted(parts):
        if name != "nodes":
            digest.update(np.ascontiguousarray(parts[name]).tobytes())
    src = ctx.network.index(ctx.app.source)
    app = ctx.app
    return (id(ctx.table), ctx.options, ctx.quantiles, app.max_latency_s, app.min_accuracy, app.rate_hz, keep.index(src),
            tuple(ctx.table.nodes[j] if j in shared_nodes else None for j in keep), digest.hexdigest())


def build_classes(ctxs: list[AppContext]) -> tuple[list[AppClass], list[Resource]]:
    """Group applications into classes and list the shared resources (see ``joint``'s docstring).

    Parameters
    ----------
    ctxs : list of AppContext
        One per application (the whole network).

    Returns
    -------
    tuple of (list of AppClass, list of Resource)

    Notes
    -----
    Complexity: O(A (R + B K + K^2)) for A applications reaching K nodes each, R links.
    """
    network = ctxs[0].network
    succ = successors(network)
    keeps = [reachable(network, ctx.app.source, succ) for ctx in ctxs]
    reach_count: dict[int, int] = {}
    for keep in keeps:
        for j in keep:
            reach_count[j] = reach_count.get(j, 0) + 1
    shared_nodes = {j for j, c in reach_count.items() if c > 1}
    any_rate = any(ctx.app.rate_hz is not None for ctx in ctxs)
    resources: list[Resource] = []
    names = network.names
    for j in sorted(shared_nodes):
        node = network.nodes[j]
        if any_rate:
            resources.append(Resource("utilization", names[j], node.max_utilization))
        if node.memory_bytes is not None:
            resources.append(Resource("memory", names[j], float(node.memory_bytes)))
    if any_rate:
        users: dict[tuple[int, int], int] = {}  # link -> how many applications can use it
        for keep in keeps:
            inside = set(keep)
            for j in keep:
                for nxt in succ.get(names[j], ()):
                    m = network.index(nxt)
                    if m in inside:
                        users[(j, m)] = users.get((j, m), 0) + 1
        for link in network.links:
            if users.get((network.index(link.src), network.index(link.dst)), 0) > 1:
                resources.append(Resource("link", (link.src, link.dst), link.max_utilization))
    index = {(r.kind, r.where): i for i, r in enumerate(resources)}
    classes: dict[tuple, AppClass] = {}
    for a, (ctx, keep) in enumerate(zip(ctxs, keeps)):
        key = _class_key(ctx, keep, shared_nodes)
        cls = classes.get(key)
        if cls is None:
            rep = restrict(ctx, keep)
            sub = rep.network.names
            util = np.array([index.get(("utilization", n), -1) for n in sub])
            mem = np.array([index.get(("memory", n), -1) for n in sub])
            link = np.array([[index.get(("link", (n, m)), -1) for m in sub] for n in sub])
            classes[key] = cls = AppClass([], [], rep, util_index=util, mem_index=mem, link_index=link)
        cls.members.append(a)
        cls.keep.append(keep)
    return list(classes.values()), resources


# ---------------------------------------------------------------- priced contexts and columns

def priced_context(ctx: AppContext, policy: int, prices: np.ndarray, cls: AppClass, energy_weight: float = 1.0):
    """A priced copy of (restricted) ``ctx`` with one exit policy, for the pricing step.

    Its costs are ``energy_weight`` x energy + prices x shared use: the price of a node's
    utilisation times rate x expected busy time is added to each (block, node) energy, the price
    of its memory times the block's parameter bytes, and the price of a link's utilisation times
    rate x seconds per bit to the link's joules per bit (the DP charges trans_prob x 8 x bytes x
    J/bit). Exact evaluations of the copy still report the real energy (they read the network's
    links and the table's block energies, which stay as they are); the DP and the enumeration
    read the priced chain and link arrays. The stage overhead a node change adds to the tail
    node's busy time is not priced (it is not a (block, node) cost), so a priced minimum is at
    most the true one: the bound stays valid.

    Parameters
    ----------
    ctx : AppContext
        The class's representative (restricted).
    policy : int
        The exit policy.
    prices : ndarray
        Per shared resource, >= 0.
    cls : AppClass
        The class (its resource indices).
    energy_weight : float, optional
        0 in the phase that maximises the applications served.

    Returns
    -------
    AppContext

    Notes
    -----
    Complexity: O(B K + K^2).
    """
    table = ctx.table
    chain = ctx.chain(policy)
    rate = ctx.app.rate_hz or 0.0
    lam_util = np.where(cls.util_index >= 0, prices[np.maximum(cls.util_index, 0)], 0.0) if prices.size else \
        np.zeros(len(table.nodes))
    lam_mem = np.where(cls.mem_index >= 0, prices[np.maximum(cls.mem_index, 0)], 0.0) if prices.size else \
        np.zeros(len(table.nodes))
    lam_link = np.where(cls.link_index >= 0, prices[np.maximum(cls.link_index, 0)], 0.0) if prices.size else \
        np.zeros(table.has_link.shape)
    comp = energy_weight * chain.comp_energy_j + rate * chain.busy_s * lam_util[None, :] \
        + chain.mem_bytes[:, None] * lam_mem[None, :]
    off = table.has_link & ~np.eye(len(table.nodes), dtype=bool)
    jpb = np.where(off, energy_weight * table.link_j_per_bit
                   + rate * lam_link * np.where(off, table.link_s_per_bit, 0.0), 0.0)
    ptable = replace(table, link_j_per_bit=jpb,
                     links=link_lists(table.has_link, table.link_s_per_bit, table.link_latency_s, jpb))
    pchain = replace(chain, comp_energy_j=comp)
    return AppContext(ctx.app, ctx.network, ctx.options, ptable, [ctx.policies[policy]], ctx.quantiles, {0: pchain})


def priced_cost(pctx: AppContext, nodes) -> float:
    """What the priced copy's DP charges for ``nodes`` (the same sum as the enumeration's).

    Parameters
    ----------
    pctx : AppContext
        A ``priced_context``.
    nodes : sequence of int
        The placement.

    Returns
    -------
    float

    Notes
    -----
    Complexity: O(B).
    """
    chain = pctx.chain(0)
    jpb = pctx.table.link_j_per_bit
    src = pctx.source
    cost = 0.0 if nodes[0] == src else 8.0 * chain.input_bytes * jpb[src, nodes[0]]
    for b, n in enumerate(nodes):
        cost += chain.comp_energy_j[b, n]
        if b + 1 < len(nodes) and nodes[b + 1] != n:
            cost += chain.trans_prob[b] * 8.0 * chain.out_bytes[b] * jpb[n, nodes[b + 1]]
    return float(cost)


def _use(ev: Evaluation, resources: list[Resource], cls: AppClass) -> np.ndarray:
    out = np.zeros(len(resources))
    sub = cls.rep.network.names
    for j, name in enumerate(sub):
        load = ev.per_node.get(name)
        if load is None:
            continue
        if cls.util_index[j] >= 0:
            out[cls.util_index[j]] = load["utilization"] or 0.0
        if cls.mem_index[j] >= 0:
            out[cls.mem_index[j]] = load["params_bytes"]
    for (a, b), value in ev.link_utilization.items():
        r = cls.link_index[sub.index(a), sub.index(b)]
        if r >= 0:
            out[r] = value
    return out


def add_column(cls: AppClass, policy: int, nodes, resources) -> bool:
    """Add the plan (``policy``, ``nodes``) to the class's columns when it is new and feasible.

    Parameters
    ----------
    cls : AppClass
        The class; its columns and the plans seen are updated.
    policy : int
        The exit policy.
    nodes : sequence of int
        The placement (indices in the class's restricted network).
    resources : list of Resource
        The shared resources (the column's use of each).

    Returns
    -------
    bool
        Whether a column was added.

    Notes
    -----
    Complexity: one exact evaluation, O(B + L).
    """
    key = (policy, tuple(int(n) for n in nodes))
    if key in cls.seen:
        return False
    ev = cls.rep.evaluate(policy, list(key[1]))
    if not ev.feasible:
        cls.seen[key] = None
        return False
    cls.seen[key] = len(cls.columns)
    cls.columns.append(Column(policy, key[1], ev.energy_j, _use(ev, resources, cls)))
    return True
