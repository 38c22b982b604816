"""What every solver needs about one application, computed once; and what solvers return."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from finplan.partition.costs import Chain, CostTable, accuracy_ok, chain_for, cost_table, is_close
from finplan.partition.policies import DEFAULT_QUANTILES, ExitPolicy, policies_for
from finplan.partition.evaluate import Evaluation, Usage, evaluate
from finplan.partition.problem import Application, Network, Options, Scenario


@dataclass(eq=False)
class AppContext:
    app: Application
    network: Network
    options: Options
    table: CostTable
    policies: list[ExitPolicy]  # every policy of the mode (accuracy not yet filtered)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    _chains: dict = field(default_factory=dict)

    @property
    def source(self) -> int:
        return self.network.index(self.app.source)

    def chain(self, policy_index: int) -> Chain:
        if policy_index not in self._chains:
            self._chains[policy_index] = chain_for(self.table, self.policies[policy_index])
        return self._chains[policy_index]

    def accurate(self) -> list[int]:
        """Indices of the policies meeting the accuracy target (in policy order)."""
        return [i for i, p in enumerate(self.policies)
                if accuracy_ok(p.accuracy, self.app.min_accuracy, self.options.strict)]

    def evaluate(self, policy_index: int, nodes: list[int], usage: Usage | None = None) -> Evaluation:
        policy = self.policies[policy_index]
        names = [self.network.names[n] for n in nodes]
        return evaluate(self.app, self.network, self.options, names, self.app.card.exits[policy.final_exit].name,
                        usage=usage, policy=policy, table=self.table)

    def relaxed(self, *, latency: bool = False, accuracy: bool = False, capacity: bool = False) -> "AppContext":
        """The same application with some constraints dropped (for ``binding.add_binding`` and
        the explanations): ``latency`` (bound set far above any placement's latency, see
        ``no_latency_bound_s``), ``accuracy`` (every exit policy qualifies), ``capacity`` (no
        rate, so no utilisation limit, and no memory_bytes; pass no usage with it). Shares
        the cost table's arrays and the chain cache (chains do not depend on the limits)."""
        app, network, table = self.app, self.network, self.table
        if latency:
            app = replace(app, max_latency_s=no_latency_bound_s(self))
        if accuracy:
            app = replace(app, min_accuracy=-1.0)
        if capacity:
            app = replace(app, rate_hz=None)
            nodes = tuple(replace(node, memory_bytes=None) for node in network.nodes)
            network = type(network)(nodes, network.links, network.path, network.doc)
            table = replace(table, memory_bytes=np.full(len(table.nodes), np.inf))
        return AppContext(app, network, self.options, table, self.policies, self.quantiles, self._chains)

    def allowed(self, chain: Chain, usage: Usage | None):
        """Per-element capacity screen: (block, node) pairs and per-layer links that fit alone
        in the residual capacity. Cumulative sums are checked on the exact evaluation."""
        names = self.network.names
        rate = self.app.rate_hz
        node_ok = np.ones((chain.n_blocks, len(names)), dtype=bool)
        if rate is None and not self.table.memory_limited and (usage is None or not usage.node_memory_bytes):
            return node_ok  # nothing to screen: the common single-application case, kept cheap
        usage = usage or Usage()
        resid_mem = np.array([self.table.memory_bytes[j] - usage.node_memory_bytes.get(n, 0.0)
                              for j, n in enumerate(names)])
        node_ok &= chain.mem_bytes[:, None] <= resid_mem[None, :] * (1 + 1e-12)
        if rate is not None:
            resid = np.array([self.table.max_utilization[j] - usage.node_utilization.get(n, 0.0)
                              for j, n in enumerate(names)])
            node_ok &= rate * chain.busy_s <= resid[None, :] * (1 + 1e-12)
        return node_ok

    def link_ok(self, nbytes: float, prob: float, usage: Usage | None) -> np.ndarray:
        ok = self.table.has_link.copy()
        rate = self.app.rate_hz
        if rate is None or nbytes == 0:
            return ok
        usage = usage or Usage()
        need = rate * prob * 8.0 * nbytes * self.table.link_s_per_bit
        resid = self.table.link_max_utilization.copy()
        for (a, b), value in usage.link_utilization.items():
            resid[self.network.index(a), self.network.index(b)] -= value
        off = ~np.eye(len(ok), dtype=bool)
        ok[off] &= need[off] <= resid[off] * (1 + 1e-12)
        return ok


def no_latency_bound_s(ctx: AppContext) -> float:
    """A latency bound no placement of ``ctx`` can reach.

    Parameters
    ----------
    ctx : AppContext
        The application.

    Returns
    -------
    float
        Four times the sum, over the input and every block, of the slowest computation, stage
        cost and transfer, plus one second. Finite, so FIN's latency units stay well defined
        (each placement then uses under a quarter of them, plus one per hop for the rounding).

    Notes
    -----
    Complexity: O(B N^2).
    """
    t = ctx.table
    finite = np.isfinite(t.link_s_per_bit) & t.has_link
    s_per_bit = float(t.link_s_per_bit[finite].max()) if finite.any() else 0.0
    hop_s = float(t.link_latency_s.max())
    biggest = max([t.input_bytes] + t.output_bytes.tolist())
    worst = (t.block_time_s.max(axis=1).sum() + t.exit_time_s.max(axis=1).sum()
             + 2 * len(t.output_bytes) * float(t.stage_overhead_s.max(initial=0.0))
             + (len(t.output_bytes) + 1) * (8.0 * biggest * s_per_bit + hop_s))
    return 4.0 * float(worst) + 1.0


def contexts(scenario: Scenario, quantiles=DEFAULT_QUANTILES) -> list[AppContext]:
    """One solver context per application of ``scenario``: its cost table and exit policies.

    Parameters
    ----------
    scenario : Scenario
        The network, the applications and the options.
    quantiles : sequence of float, optional
        Dynamic mode: the quantiles of the calibration scores the threshold grid is drawn from.

    Returns
    -------
    list of AppContext
        In scenario order; applications sharing a card share one cost table.

    Notes
    -----
    Complexity: O(C N (B + H)) for C distinct cards, plus the exit policies of each
    application (``policies.policies_for``).
    """
    tables: dict[int, CostTable] = {}
    out = []
    for app in scenario.applications:
        key = id(app.card)
        if key not in tables:
            tables[key] = cost_table(app.card, scenario.network)
        out.append(AppContext(app, scenario.network, scenario.options, tables[key],
                              policies_for(app.card, scenario.options.mode, quantiles), tuple(quantiles)))
    return out


@dataclass
class AppResult:
    """One application's answer: an evaluation (feasible or, for baselines, possibly not),
    or none with a reason."""
    app: Application
    evaluation: Evaluation | None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    # How evaluation.binding was decided (``binding.add_binding``): "relaxation" or "at_limit".
    binding_basis: str | None = None
    # How far from the exact model's optimum the plan can be (FIN: ``fin.guarantee``); None: not stated.
    guarantee: dict | None = None

    @property
    def feasible(self) -> bool:
        return self.evaluation is not None and self.evaluation.feasible


@dataclass
class SolveResult:
    solver: str
    parameters: dict
    apps: list[AppResult]
    solve_time_s: float
    extra: dict = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        return sum(r.evaluation.energy_j for r in self.apps if r.feasible)


def better(a: tuple, b: tuple | None) -> bool:
    """Whether candidate ``a`` beats the best so far ``b``, with explicit tie-breaking.

    Parameters
    ----------
    a : tuple
        (energy_j, latency_s, policy_index, nodes) of the candidate.
    b : tuple or None
        The same of the best so far (None: nothing yet).

    Returns
    -------
    bool
        Lower energy wins; equal energy (up to rounding) -> lower latency -> earlier policy ->
        lexicographically smaller node indices.

    Notes
    -----
    Complexity: O(B).
    """
    if b is None:
        return True
    if not is_close(a[0], b[0]):
        return a[0] < b[0]
    if not is_close(a[1], b[1]):
        return a[1] < b[1]
    return (a[2], tuple(a[3])) < (b[2], tuple(b[3]))
