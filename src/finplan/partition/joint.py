"""Joint FIN: several applications sharing nodes and links, planned together.

The sequential planner (``multi.plan_sequentially``) plans applications one by one on the
capacity the earlier ones left and re-plans when one does not fit; once capacity binds its
time grows with every re-planning pass. Here the applications are planned together by
Dantzig-Wolfe decomposition (column generation; its dual is the Lagrangian relaxation of the
shared capacities):

1. Each application sees only the nodes it can reach from its source (``restrict``), and
   applications with the same model, constraints, rate and reachable costs form one *class*
   (their plans are the same up to the name of their private nodes), so the work below is per
   class, not per application. A node or link reachable by two applications or more is a
   *shared* resource (node utilisation, node memory, link utilisation); one only its own
   application can reach keeps its limit inside the single-application problem.
2. A plan of one application is a *column*: its exact energy and its use of every shared
   resource (``evaluate``). The master problem picks, per class, how many applications use
   each column, within the shared capacities (a linear program over the columns found so far;
   HiGHS). Its duals price the shared resources.
3. Pricing: each class's single-application FIN (``fin.fin``) minimises energy plus the priced
   use, through a priced copy of its context (``priced_context``: the prices are added to the
   block costs and the links' joules per bit that the DP reads; FIN itself is not changed). A
   plan cheaper than the class's dual becomes a new column. Phase 1 maximises the applications
   served (energy weight 0), phase 2 minimises energy serving that many.
4. Lower bound: the Lagrangian function at the master's prices, with each class's priced
   subproblem solved exactly (enumeration of its reachable placements, ``BOUND_ENUMERATION``;
   above that, FIN on a relaxation: no cumulative limits and a latency budget widened by
   FIN's rounding, which is a lower bound as well). It is a valid bound on the energy of any
   plan serving at least as many applications (the MILP optimum included), whatever the
   columns found.
5. Integer plan: the master as an integer program over the columns (HiGHS; a few integer
   variables per class), assigned to the class's applications in scenario order, then checked
   application by application with the exact evaluator on the whole network; applications
   left out are offered the residual capacity (FIN) one class at a time.

Every returned plan is feasible under the exact model. Deterministic: classes, columns and
HiGHS (one thread, fixed seed) run in a fixed order.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np

from finplan.partition.context import AppContext, AppResult
from finplan.partition.costs import link_lists
from finplan.partition.evaluate import Evaluation, Usage
from finplan.partition.explain import crowded_out, policy_of
from finplan.partition.fin import fin
from finplan.partition.problem import Network
from finplan.partition.search import count_placements, enumerate_best

# Placements per exit policy up to which the bound's subproblem is solved by enumeration (exact).
BOUND_ENUMERATION = 50_000
MAX_ROUNDS = 60
# Integer master: relative MIP gap and branch-and-bound node budget (both deterministic).
MASTER_MIP_GAP = 1e-6
MASTER_MIP_NODES = 300
# Integer plan + fill passes (a pass repeats only when the fill served more than the columns).
MAX_FILL_PASSES = 4
# Relative tolerance of a reduced cost (columns are added only when clearly improving).
RC_TOL = 1e-9
# Capacity slack the integer master keeps below each shared limit, relative, raised when the
# exact evaluation disagrees with HiGHS's feasibility tolerance.
TIGHTEN_STEPS = (1e-9, 1e-7, 1e-5)


# ---------------------------------------------------------------- restricted contexts and classes

def reachable(network: Network, source: str, succ: dict | None = None) -> list[int]:
    """Indices of the nodes reachable from ``source`` along links (source included), in
    network order. ``succ``: the successor lists of the network (``successors``), when known."""
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
    """``ctx`` on the sub-network of the nodes in ``keep`` (default: those reachable from the
    source) and the links among them. Cost arrays are slices of ``ctx.table`` (same bits), node
    order is kept, so every evaluation of a placement inside it is the one on the whole network.
    Complexity: O(B |keep| + |keep|^2 + |links|)."""
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
    """Every context restricted to the nodes its application can reach (``restrict``)."""
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
    """Group applications into classes and list the shared resources (see the module docstring).
    Complexity: O(A (R + B K + K^2)) for A applications reaching K nodes each, R links."""
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


# ---------------------------------------------------------------- pricing

def priced_context(ctx: AppContext, policy: int, prices: np.ndarray, cls: AppClass, energy_weight: float = 1.0):
    """A copy of (restricted) ``ctx`` with one exit policy whose costs are
    ``energy_weight`` x energy + prices x shared use: the price of a node's utilisation times
    rate x expected busy time is added to each (block, node) energy, the price of its memory
    times the block's parameter bytes, and the price of a link's utilisation times rate x
    seconds per bit to the link's joules per bit (the DP charges trans_prob x 8 x bytes x J/bit).
    Exact evaluations of the copy still report the real energy (they read the network's links
    and the table's block energies, which stay as they are); the DP and the enumeration read
    the priced chain and link arrays. The stage overhead a node change adds to the tail node's
    busy time is not priced (it is not a (block, node) cost), so a priced minimum is at most
    the true one: the bound stays valid. Complexity: O(B K + K^2)."""
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
    """What the priced copy's DP charges for ``nodes`` (the same sum as the enumeration's)."""
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


def _add_column(cls: AppClass, policy: int, nodes, resources) -> bool:
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


def _fin_column(cls: AppClass, policy: int, prices, weight, gamma, lam):
    pctx = priced_context(cls.rep, policy, prices, cls, weight)
    res = fin(pctx, gamma, lam)
    if not res.feasible:
        return None
    names = cls.rep.network.names
    return [names.index(n) for n in res.evaluation.placement]


def _exact_min(cls: AppClass, policy: int, prices, weight, gamma, info: "JointInfo"):
    """(priced minimum over the class's plans of one policy, or a lower bound on it; the
    minimising nodes when they are a plan of the real problem, else None). Sets
    ``info.bound_exact`` False when only the relaxation's bound could be computed."""
    pctx = priced_context(cls.rep, policy, prices, cls, weight)
    if count_placements(pctx) <= BOUND_ENUMERATION:
        ev = enumerate_best(pctx)
        if ev is None:
            return math.inf, None
        names = pctx.network.names
        nodes = [names.index(n) for n in ev.placement]
        return priced_cost(pctx, nodes), nodes
    info.bound_exact = False
    # too many placements: FIN on a relaxation (no node or link limits; the latency budget
    # widened by what FIN's rounding up can add on k + 1 hops), whose minimum is a lower bound
    k = pctx.chain(0).n_blocks
    loose = pctx.relaxed(capacity=True)
    if gamma is None:
        # the exact label DP needs no widening; a trimmed frontier is within (1 + epsilon) of the minimum
        res = fin(loose, None, 0.0)
        shrink = _bound_factor(res)
        if shrink is None:  # no stated bound on the latency-limited relaxation: drop the latency limit too
            res = fin(loose.relaxed(latency=True), None, 0.0)
            shrink = _bound_factor(res)
    else:
        if gamma > k + 1:
            widened = pctx.app.max_latency_s * gamma / (gamma - k - 1) * (1 + 1e-9)
            loose = AppContext(replace(loose.app, max_latency_s=widened), loose.network, loose.options, loose.table,
                               loose.policies, loose.quantiles, loose._chains)
        else:
            loose = loose.relaxed(latency=True)
        res = fin(loose, gamma, 0.0)
        shrink = 1.0
    if res.evaluation is None:
        return math.inf, None
    if shrink is None:
        return 0.0, None  # nothing proven about this column's minimum: the trivial bound keeps the bound valid
    names = pctx.network.names
    nodes = [names.index(n) for n in res.evaluation.placement]
    return priced_cost(pctx, nodes) / shrink, None


def _bound_factor(res) -> float | None:
    """1 + epsilon of a FIN answer on exact latencies (1 when exact), None when it states no bound."""
    g = res.guarantee
    if res.evaluation is None or g is None:
        return 1.0
    if g["exact"]:
        return 1.0
    return None if g["epsilon"] is None else 1.0 + g["epsilon"]


# ---------------------------------------------------------------- master problem

@dataclass
class _Master:
    x: list[np.ndarray]  # per class: value per column
    objective: float
    prices: np.ndarray  # per resource, >= 0
    class_duals: np.ndarray  # per class, <= 0 (convexity rows sum <= n_c)
    served_dual: float  # >= 0 (phase 2 row sum >= S)


def _solve_master(classes, resources, phase: str, served: int = 0, integer: bool = False,
                  slack: float = 0.0) -> _Master | None:
    """The master over the current columns: phase "served" maximises the applications served,
    phase "energy" minimises energy serving at least ``served``. LP (duals) or integer."""
    import highspy

    from finplan.partition.milp import _new_highs

    highs = _new_highs()
    costs, owner = [], []
    for c, cls in enumerate(classes):
        for col in cls.columns:
            costs.append(-1.0 if phase == "served" else col.energy_j)
            owner.append(c)
    n = len(costs)
    if n == 0:
        return None
    # no column upper bounds: the class rows (sum <= n_c) must carry the duals the bound uses
    highs.addVars(n, np.zeros(n), np.full(n, highspy.kHighsInf))
    idx = np.arange(n, dtype=np.int32)
    highs.changeColsCost(n, idx, np.array(costs))
    if integer:
        highs.changeColsIntegrality(n, idx, np.array([highspy.HighsVarType.kInteger] * n))
    start = 0
    for cls in classes:
        m = len(cls.columns)
        cols = np.arange(start, start + m, dtype=np.int32)
        highs.addRow(-highspy.kHighsInf, float(cls.size), m, cols, np.ones(m))
        start += m
    use = np.array([col.use for cls in classes for col in cls.columns]).reshape(n, len(resources))
    for r, res in enumerate(resources):
        nz = np.flatnonzero(use[:, r])
        cap = res.capacity * (1.0 - slack) if slack else res.capacity
        highs.addRow(-highspy.kHighsInf, cap, len(nz), nz.astype(np.int32), use[nz, r])
    if phase == "energy":
        highs.addRow(float(served), highspy.kHighsInf, n, idx, np.ones(n))
    if integer:
        # the integer master only picks among the columns: stop at a tiny relative gap or a
        # node budget (deterministic, unlike a time limit); the bound is reported separately
        highs.setOptionValue("mip_rel_gap", MASTER_MIP_GAP)
        highs.setOptionValue("mip_max_nodes", MASTER_MIP_NODES)
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        feasible = int(highspy.SolutionStatus.kSolutionStatusFeasible)
        if not integer or int(highs.getInfo().primal_solution_status) != feasible:
            return None
    sol = highs.getSolution()
    x = np.array(sol.col_value)
    if integer:
        x = np.round(x)
    out, start = [], 0
    for cls in classes:
        out.append(x[start:start + len(cls.columns)])
        start += len(cls.columns)
    duals = np.array(sol.row_dual) if not integer else np.zeros(len(classes) + len(resources) + 1)
    k = len(classes)
    prices = np.maximum(0.0, -duals[k:k + len(resources)])
    class_duals = np.minimum(0.0, duals[:k])
    served_dual = max(0.0, float(duals[k + len(resources)])) if phase == "energy" else 0.0
    return _Master(out, float(highs.getInfo().objective_function_value), prices, class_duals, served_dual)


# ---------------------------------------------------------------- the method

@dataclass
class JointInfo:
    served_upper_bound: int | None = None
    lower_bound_j: float | None = None
    rounds: int = 0
    columns: int = 0
    classes: int = 0
    bound_exact: bool = True

    def extra(self, served: int, energy_j: float) -> dict:
        """The plan's ``solver.lower_bound`` entry (see plan.schema.json)."""
        gap = None
        if self.lower_bound_j is not None and energy_j > 0:
            gap = max(0.0, (energy_j - self.lower_bound_j) / energy_j)
        return {"method": "lagrangian", "energy_j": None if self.lower_bound_j is None else float(self.lower_bound_j),
                "gap": None if gap is None else float(gap),
                "served": served, "served_at_most": self.served_upper_bound, "classes": self.classes,
                "columns": self.columns, "rounds": self.rounds,
                "subproblems": "exact" if self.bound_exact else "relaxed"}


def _price_round(classes, resources, master: _Master, phase: str, gamma, lam, exact: bool, info):
    """Add every improving column FIN (and, with ``exact``, the exact subproblem) finds at
    the master's prices. Returns (added, per class the exact priced minimum or None)."""
    weight = 0.0 if phase == "served" else 1.0
    added = False
    minima = []
    for c, cls in enumerate(classes):
        threshold = (1.0 if phase == "served" else master.served_dual) + master.class_duals[c]
        scale = max(1.0 if phase == "served" else 0.0, max((col.energy_j for col in cls.columns), default=0.0))
        tol = RC_TOL * scale + 1e-15
        best = math.inf
        for p in cls.rep.accurate():
            candidates = []
            nodes = _fin_column(cls, p, master.prices, weight, gamma, lam)
            if nodes is not None:
                candidates.append(nodes)
            if exact:
                value, nodes = _exact_min(cls, p, master.prices, weight, gamma, info)
                best = min(best, value)
                if nodes is not None:
                    candidates.append(nodes)
            for nodes in candidates:
                pctx = priced_context(cls.rep, p, master.prices, cls, weight)
                if priced_cost(pctx, nodes) < threshold - tol:
                    added |= _add_column(cls, p, nodes, resources)
        minima.append(best if exact else None)
    return added, minima


def _served_bound(classes, resources, master, minima) -> float:
    """Lagrangian upper bound on the applications served: prices x capacity + sum over
    applications of max(0, 1 - minimum priced use)."""
    total = float(master.prices @ np.array([r.capacity for r in resources])) if resources else 0.0
    for cls, w in zip(classes, minima):
        total += cls.size * max(0.0, 1.0 - w)
    return total


def _energy_bound(classes, resources, master, minima, served: int) -> float:
    """Lagrangian lower bound on the energy of any plan serving at least ``served``
    applications: sum over applications of min(0, minimum priced energy - mu) + mu S -
    prices x capacity."""
    total = master.served_dual * served
    if resources:
        total -= float(master.prices @ np.array([r.capacity for r in resources]))
    for cls, v in zip(classes, minima):
        total += cls.size * min(0.0, v - master.served_dual)
    return total


def _generate(classes, resources, phase, served, gamma, lam, info: JointInfo, target_gap: float = 1e-7):
    """Column generation for one phase; returns the last master LP and the best bound."""
    best_bound = -math.inf if phase == "energy" else math.inf
    master = None
    for _round in range(MAX_ROUNDS):
        info.rounds += 1
        master = _solve_master(classes, resources, phase, served)
        if master is None:
            return None, best_bound
        added, _ = _price_round(classes, resources, master, phase, gamma, lam, False, info)
        if added:
            continue
        # FIN finds nothing better: certify with the exact subproblems (they may add columns too)
        added, minima = _price_round(classes, resources, master, phase, gamma, lam, True, info)
        if phase == "served":
            best_bound = min(best_bound, _served_bound(classes, resources, master, minima))
        else:
            best_bound = max(best_bound, _energy_bound(classes, resources, master, minima, served))
            if master.objective - best_bound <= target_gap * max(abs(master.objective), 1e-300):
                break
        if not added:
            break
    return master, best_bound


def joint_fin(ctxs: list[AppContext], gamma: int, lam: float, info: JointInfo | None = None) -> list[AppResult]:
    """Plan several applications together (see the module docstring).

    Parameters: ``ctxs`` one context per application (the whole network); ``gamma``, ``lam``
    FIN's parameters for the pricing subproblems; ``info`` receives the bounds and counts.
    Returns one AppResult per application, in scenario order; every served plan is feasible
    under the exact evaluator with all the other served plans; unserved ones carry a reason.
    Complexity: per round, one FIN per class and exit policy plus one LP over the columns
    (a few per class); the exact bound enumerates each class's reachable placements once per
    phase; the final check evaluates every application once: O(A B) beyond the classes.
    """
    info = info if info is not None else JointInfo()
    classes, resources = build_classes(ctxs)
    info.classes = len(classes)
    _start_columns(classes, resources, gamma, lam)
    live = [cls for cls in classes if cls.columns]
    results: list = [None] * len(ctxs)
    if live:
        _served_phase(live, resources, gamma, lam, info)
        best = _solve_master(live, resources, "served", integer=True)
        target = int(round(-best.objective)) if best is not None else 0
        for _attempt in range(MAX_FILL_PASSES):
            _m, bound = _generate(live, resources, "energy", target, gamma, lam, info)
            info.lower_bound_j = bound if math.isfinite(bound) else None
            results = _integer_plan(ctxs, live, resources, target)
            results = _fill(ctxs, live, results, gamma, lam)
            served = sum(r is not None for r in results)
            if served <= target:
                break
            # the residual capacity fitted more applications than the columns did: keep their
            # plans as columns and plan again for that many (the bound is for >= served)
            for cls in live:
                for member, keep in zip(cls.members, cls.keep):
                    if results[member] is not None:
                        ev = results[member].evaluation
                        ctx = ctxs[member]
                        _add_column(cls, _policy(ctx, ev), [keep.index(ctx.network.index(n)) for n in ev.placement],
                                    resources)
            target = served
    else:
        info.served_upper_bound, info.lower_bound_j = 0, 0.0
    info.columns = sum(len(cls.columns) for cls in classes)
    return _finish(ctxs, classes, results, gamma, lam)


def _start_columns(classes, resources, gamma, lam) -> None:
    """Each class's solo FIN plan per exit policy (no prices) as its first columns."""
    zero = np.zeros(len(resources))
    for cls in classes:
        for p in cls.rep.accurate():
            nodes = _fin_column(cls, p, zero, 1.0, gamma, lam)
            if nodes is not None:
                _add_column(cls, p, nodes, resources)


def _served_phase(live, resources, gamma, lam, info) -> None:
    _m, upper = _generate(live, resources, "served", 0, gamma, lam, info)
    everyone = sum(c.size for c in live)
    info.served_upper_bound = everyone if not math.isfinite(upper) else min(everyone, int(math.floor(upper + 1e-7)))


def lower_bound(ctxs: list[AppContext], results: list[AppResult], gamma: int, lam: float) -> JointInfo:
    """The bounds of ``joint_fin`` for a plan found by any solver (``results``): a lower bound
    on the energy of any plan serving as many applications, and an upper bound on the
    applications that can be served. The plan's own placements join the columns (so the
    master can serve as many). Complexity: that of ``joint_fin`` without the integer plan."""
    info = JointInfo()
    classes, resources = build_classes(ctxs)
    info.classes = len(classes)
    _start_columns(classes, resources, gamma, lam)
    for cls in classes:
        for member, keep in zip(cls.members, cls.keep):
            r = results[member]
            if r.feasible:
                ctx = ctxs[member]
                _add_column(cls, _policy(ctx, r.evaluation),
                            [keep.index(ctx.network.index(n)) for n in r.evaluation.placement], resources)
    live = [cls for cls in classes if cls.columns]
    served = sum(r.feasible for r in results)
    if live:
        _served_phase(live, resources, gamma, lam, info)
        _m, bound = _generate(live, resources, "energy", served, gamma, lam, info)
        info.lower_bound_j = bound if math.isfinite(bound) else None
    else:
        info.served_upper_bound, info.lower_bound_j = 0, 0.0
    info.columns = sum(len(cls.columns) for cls in classes)
    return info


def _integer_plan(ctxs, classes, resources, served: int) -> list:
    """The integer master over the columns, assigned and checked exactly (see ``_check``);
    with a little capacity slack when HiGHS's tolerance let a hair-thin excess through."""
    for slack in (0.0,) + TIGHTEN_STEPS:
        final = _solve_master(classes, resources, "energy", served, integer=True, slack=slack)
        if final is None:
            continue
        results, ok = _check(ctxs, _assign(classes, final.x))
        if ok:
            return results
    return [None] * len(ctxs)


def _assign(classes, x) -> dict[int, tuple[int, list[int]]]:
    """Application index -> (policy, full-network node indices): per class, its columns in
    order of energy (then policy, nodes) handed to its members in scenario order. A column's
    node j of the representative is node j of each member's own reachable set."""
    plans = {}
    for cls, counts in zip(classes, x):
        order = sorted(range(len(cls.columns)), key=lambda j: (cls.columns[j].energy_j, cls.columns[j].policy,
                                                               cls.columns[j].nodes))
        queue = []
        for j in order:
            queue += [cls.columns[j]] * int(counts[j])
        for member, keep, col in zip(cls.members, cls.keep, queue):
            plans[member] = (col.policy, [keep[j] for j in col.nodes])
    return plans


def _check(ctxs, plans) -> tuple[list, bool]:
    """Exact evaluation of every planned application with the others' loads (scenario order)."""
    usage = Usage()
    results: list = [None] * len(ctxs)
    ok = True
    for a, ctx in enumerate(ctxs):
        if a not in plans:
            continue
        policy, nodes = plans[a]
        ev = ctx.evaluate(policy, nodes, usage)
        if not ev.feasible:
            ok = False
        usage = usage.plus(ev)
        results[a] = AppResult(ctx.app, ev)
    if not ok:
        # a hair over a limit (HiGHS's tolerance): re-check each against the final totals
        return results, False
    return results, True


def local_usage(usage: Usage, names) -> Usage:
    """``usage`` limited to the nodes named in ``names`` and the links among them (what a
    restricted context may be given)."""
    inside = set(names)
    return Usage({n: v for n, v in usage.node_utilization.items() if n in inside},
                 {n: v for n, v in usage.node_memory_bytes.items() if n in inside},
                 {k: v for k, v in usage.link_utilization.items() if k[0] in inside and k[1] in inside})


def _served_usage(results) -> Usage:
    usage = Usage()
    for r in results:
        if r is not None and r.feasible:
            usage = usage.plus(r.evaluation)
    return usage


def _fill(ctxs, classes, results, gamma, lam):
    """Offer the capacity left to the applications left out, one class at a time (the best
    placement on the residual capacity: enumerated when the class is small, else FIN); a class
    stops at its first member that does not fit (the others face the same residual)."""
    usage = _served_usage(results)
    for cls in classes:
        if not cls.columns:
            continue
        small = count_placements(cls.rep) <= BOUND_ENUMERATION
        for member, keep in zip(cls.members, cls.keep):
            if results[member] is not None:
                continue
            sub = restrict(ctxs[member], keep)
            local = local_usage(usage, sub.network.names)
            # exact and quiet when small (FIN would explain every failure)
            found = enumerate_best(sub, local) if small else fin(sub, gamma, lam, local).evaluation
            if found is None or not found.feasible:
                break
            ev = ctxs[member].evaluate(_policy(ctxs[member], found),
                                       [ctxs[member].network.index(n) for n in found.placement], usage)
            if not ev.feasible:
                break
            results[member] = AppResult(ctxs[member].app, ev)
            usage = usage.plus(ev)
    return results


def _policy(ctx, ev) -> int:
    return policy_of(ctx, ev)


def _finish(ctxs, classes, results, gamma, lam):
    """Reasons for the applications left out, in the joint MILP's words: what a plan that fits
    alone would exceed next to the served ones (``crowded_out``), or, when none fits even alone,
    FIN's own reason. (The sequential planner's proof that nothing fits the residual capacity,
    ``explain`` with the others' loads, costs about a FIN solve per application left out.)"""
    usage = _served_usage(results)
    for cls in classes:
        alone = min(cls.columns, key=lambda col: (col.energy_j, col.policy, col.nodes)) if cls.columns else None
        for member, keep in zip(cls.members, cls.keep):
            if results[member] is not None:
                continue
            ctx = ctxs[member]
            if alone is None:
                res = fin(restrict(ctx, keep), gamma, lam)
                results[member] = AppResult(ctx.app, None, res.reason or "no plan found")
                continue
            solo = ctx.evaluate(alone.policy, [keep[j] for j in alone.nodes])
            results[member] = AppResult(ctx.app, None, crowded_out(ctx, solo, usage))
    return results
