"""Exact evaluation of one given deployment: placement, final exit and thresholds.

This is the reference every solver's answer is re-checked against (FIN's discretised
latency never decides feasibility on its own), and what benchmarks call to score any
placement. It is written as plain loops, independently of the solvers' vectorised code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from finplan.errors import FinplanInputError
from finplan.partition.costs import CostTable, accuracy_ok, cost_table, within
from finplan.partition.policies import ExitPolicy, policy_from_thresholds, table_policies
from finplan.partition.problem import Application, Network, Options
from finplan.units import decimal_bytes, ms

# A plan is "at" a limit when it uses at least this share of it: latency >= 0.99 max_latency_s,
# min_accuracy >= 0.99 accuracy, or >= 0.99 of a node's or link's max_utilization or memory_bytes
# (with the other applications' usage). See ``Evaluation.at_limit``.
BINDING_SHARE = 0.99
CAPACITY_TAGS = ("utilization:", "memory:", "link:")


@dataclass
class Usage:
    """Capacity already taken by other applications (utilisation shares and bytes)."""
    node_utilization: dict[str, float] = field(default_factory=dict)
    node_memory_bytes: dict[str, float] = field(default_factory=dict)
    link_utilization: dict[tuple[str, str], float] = field(default_factory=dict)

    def plus(self, ev: "Evaluation") -> "Usage":
        out = Usage(dict(self.node_utilization), dict(self.node_memory_bytes), dict(self.link_utilization))
        for name, load in ev.per_node.items():
            out.node_utilization[name] = out.node_utilization.get(name, 0.0) + (load["utilization"] or 0.0)
            out.node_memory_bytes[name] = out.node_memory_bytes.get(name, 0.0) + load["params_bytes"]
        for key, value in ev.link_utilization.items():
            out.link_utilization[key] = out.link_utilization.get(key, 0.0) + value
        return out


@dataclass
class Evaluation:
    placement: list[str]
    final_exit: str
    thresholds: dict[str, float]
    feasible: bool
    energy_j: float
    compute_energy_j: float
    transfer_energy_j: float
    latency_s: float
    expected_latency_s: float
    accuracy: float
    exit_rates: dict[str, float]
    per_node: dict[str, dict]
    transfers: list[dict]
    link_utilization: dict[tuple[str, str], float]
    violations: list[str]
    # Constraints this plan is at (>= BINDING_SHARE of the limit used): "latency", "accuracy",
    # "utilization:NODE", "memory:NODE", "link:A->B". A fact of the plan alone, not of the problem.
    at_limit: list[str]
    # One tag per violation, in the same vocabulary plus "route" (no such link) and
    # "first_block_at_source", so callers need not parse the sentences.
    violated: list[str] = field(default_factory=list)
    # Constraints that bind (set by ``finplan.partition.binding.add_binding``; empty until then).
    binding: list[str] = field(default_factory=list)
    # Exit name -> latency of an input that leaves there (active early exits and the final exit).
    exit_latency_s: dict[str, float] = field(default_factory=dict)


def percent(share: float) -> str:
    """A share of time as a percentage.

    Parameters
    ----------
    share : float
        1.0 is 100%.

    Returns
    -------
    str
        Four significant digits, whole percents from 1000% on.

    Notes
    -----
    Complexity: O(1).

    Examples
    --------
    >>> percent(10.282), percent(0.9333)
    ('1028%', '93.33%')
    """
    value = 100.0 * share
    return f"{value:.0f}%" if abs(value) >= 1000 else f"{value:.4g}%"


def over_limit(total: float, limit: float) -> tuple[str, str]:
    """``total`` and ``limit`` as percentages, with enough digits to tell them apart.

    Parameters
    ----------
    total, limit : float
        Shares of time.

    Returns
    -------
    tuple of (str, str)

    Notes
    -----
    Complexity: O(1).

    Examples
    --------
    >>> over_limit(1.0000101, 1.0)
    ('100.00101%', '100%')
    """
    a, b = percent(total), percent(limit)
    if a == b:
        a, b = f"{100.0 * total:.8g}%", f"{100.0 * limit:.8g}%"
    return a, b


def bits_per_s(value: float) -> str:
    """A bit rate in a sentence, four significant digits, the largest unit below it.

    Parameters
    ----------
    value : float
        Bits per second.

    Returns
    -------
    str

    Notes
    -----
    Complexity: O(1).

    Examples
    --------
    >>> bits_per_s(522.6e6)
    '522.6 Mbit/s'
    """
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} bit/s"


def node_busy_text(name: str, total: float, limit: float, parts: Sequence[tuple[str, float]], rate: float,
                   taken: float = 0.0) -> str:
    """The one wording of a node over its max_utilization (used by every solver and baseline).

    Parameters
    ----------
    name : str
        The node.
    total : float
        Its utilisation with this placement (and ``taken``).
    limit : float
        Its max_utilization.
    parts : sequence of (str, float)
        (block, busy seconds per input).
    rate : float
        Requests per second.
    taken : float, optional
        The share the other applications use.

    Returns
    -------
    str
        E.g. "device would be busy 1028% of the time, over its max_utilization 100% (block1
        2.056 ms x 5000 Hz)".

    Notes
    -----
    Complexity: O(len(parts)).
    """
    shown, cap = over_limit(total, limit)
    detail = ", ".join(f"{block} {ms(busy)}" for block, busy in parts) + f" x {rate:g} Hz"
    if taken:
        detail = f"{percent(taken)} taken by the other applications + {detail}"
    return f"{name} would be busy {shown} of the time, over its max_utilization {cap} ({detail})"


def node_memory_text(name: str, total: float, limit: float, parts: Sequence[tuple[str, float]],
                     taken: float = 0.0) -> str:
    """The one wording of a node over its memory_bytes.

    Parameters
    ----------
    name : str
        The node.
    total : float
        Parameter bytes it would hold (with ``taken``).
    limit : float
        Its memory_bytes.
    parts : sequence of (str, float)
        (block, parameter bytes).
    taken : float, optional
        Bytes the other applications hold there.

    Returns
    -------
    str

    Notes
    -----
    Complexity: O(len(parts)).
    """
    detail = ", ".join(f"{block} {decimal_bytes(nbytes)}" for block, nbytes in parts)
    if taken:
        detail = f"{decimal_bytes(taken)} taken by the other applications + {detail}"
    return (f"{name} would hold {decimal_bytes(total)} of parameters, over its memory_bytes {decimal_bytes(limit)} "
            f"({detail})")


def sent_text(after: str, nbytes: float, probability: float) -> str:
    """What a hop carries, in words.

    Parameters
    ----------
    after : str
        The block whose output is sent, or "input".
    nbytes : float
        Bytes per input.
    probability : float
        The share of inputs that make the hop.

    Returns
    -------
    str
        E.g. "block1's output 186.6 kB" (+ " (p=0.50)" below 1).

    Notes
    -----
    Complexity: O(1).
    """
    what = "the input" if after == "input" else f"{after}'s output"
    return f"{what} {decimal_bytes(nbytes)}" + (f" (p={probability:.2f})" if probability < 1 else "")


def link_busy_text(src: str, dst: str, total: float, limit: float, sent: Sequence[str], bits: float, bandwidth: float,
                   rate: float, taken: float = 0.0) -> str:
    """The one wording of a link over its max_utilization.

    Parameters
    ----------
    src, dst : str
        The link's ends.
    total : float
        Its utilisation with this placement (and ``taken``).
    limit : float
        Its max_utilization.
    sent : sequence of str
        What crosses it (``sent_text``).
    bits : float
        Bits per second this placement sends over it.
    bandwidth : float
        Its bandwidth_bps.
    rate : float
        Requests per second.
    taken : float, optional
        The share the other applications use.

    Returns
    -------
    str
        E.g. "link a -> b would be busy 261% of the time, over its max_utilization 100%
        (block1's output 186.6 kB x 350 Hz = 522.6 Mbit/s of its 200 Mbit/s)".

    Notes
    -----
    Complexity: O(len(sent)).
    """
    shown, cap = over_limit(total, limit)
    detail = f"{', '.join(sent)} x {rate:g} Hz = {bits_per_s(bits)} of its {bits_per_s(bandwidth)}"
    if taken:
        detail = f"{percent(taken)} taken by the other applications + {detail}"
    return f"link {src} -> {dst} would be busy {shown} of the time, over its max_utilization {cap} ({detail})"


def resolve_policy(app: Application, mode: str, final_exit: str, thresholds: Mapping[str, float] | None) -> ExitPolicy:
    """The exit policy named by a final exit and (dynamic mode) thresholds of earlier exits.

    Parameters
    ----------
    app : Application
        The application (its card and calibration).
    mode : {"static", "dynamic"}
        The scenario's mode.
    final_exit : str
        The final exit's name.
    thresholds : mapping of str to float or None
        Dynamic mode: early exit name -> threshold.

    Returns
    -------
    ExitPolicy

    Raises
    ------
    FinplanInputError
        For unknown exits, thresholds in static mode, or (table calibration) thresholds no row has.

    Notes
    -----
    Complexity: O(n H) for n calibration samples (or a table lookup).
    """
    card = app.card
    try:
        e = card.exit_index(final_exit)
    except KeyError:
        raise FinplanInputError(f"names exit {final_exit!r}, which card {card.path} does not have",
                                field="final_exit") from None
    thresholds = dict(thresholds or {})
    index = {}
    for name, value in thresholds.items():
        try:
            index[card.exit_index(name)] = float(value)
        except KeyError:
            raise FinplanInputError(f"names exit {name!r}, which card {card.path} does not have",
                                    field="thresholds") from None
    if mode != "dynamic":
        if thresholds:
            raise FinplanInputError("thresholds are only used in dynamic mode", field="thresholds")
        rates = [0.0] * len(card.exits)
        rates[e] = 1.0
        return ExitPolicy(e, (), tuple(rates), card.exits[e].accuracy)
    cal = card.calibration
    if cal is not None and cal.table and not cal.confidence:
        for policy in table_policies(card):
            if policy.final_exit == e and dict(policy.active) == {k: v for k, v in index.items() if k < e}:
                return policy
        raise FinplanInputError("no row of the card's calibration table has these thresholds", field="thresholds")
    return policy_from_thresholds(card, e, {k: v for k, v in index.items() if k < e})


def evaluate(app: Application, network: Network, options: Options, placement: Sequence[str], final_exit: str,
             thresholds: Mapping[str, float] | None = None, *, usage: Usage | None = None,
             policy: ExitPolicy | None = None, table: CostTable | None = None) -> Evaluation:
    """Energy, latency, accuracy, loads and feasibility of one deployment, exactly.

    Parameters
    ----------
    app : Application
        The application (card, source, bounds, rate).
    network : Network
        The nodes and links.
    options : Options
        Mode, first_block_at_source, strictness.
    placement : sequence of str
        The node of each deployed block (blocks 1 .. the final exit's block).
    final_exit : str
        The exit every input reaches at the latest.
    thresholds : mapping of str to float, optional
        Dynamic mode: early exit name -> confidence threshold.
    usage : Usage or None, optional
        Capacity already taken by other applications.
    policy : ExitPolicy or None, optional
        The resolved exit policy, when the caller has it (skips resolving ``thresholds``).
    table : CostTable or None, optional
        The cost table, when the caller has it (else built from ``network``).

    Returns
    -------
    Evaluation
        ``feasible`` is False with ``violations`` in user terms and ``violated`` tags (latency,
        accuracy, route, first_block_at_source, utilization:NODE, memory:NODE, link:A->B) when
        any constraint fails.

    Raises
    ------
    FinplanInputError
        For unknown nodes or exits or a placement of the wrong length.

    Notes
    -----
    The one exact model every solver's answer is re-checked with. Complexity: O(B + H + L) for
    B blocks, H exit heads and L links used.
    """
    card = app.card
    table = table or cost_table(card, network)
    policy = policy or resolve_policy(app, options.mode, final_exit, thresholds)
    usage = usage or Usage()
    e = policy.final_exit
    k = card.exits[e].after + 1
    if len(placement) != k:
        raise FinplanInputError(f"has {len(placement)} nodes; exit {card.exits[e].name} needs blocks 1..{k}",
                                field="placement")
    for name in placement:
        if name not in network.names:
            raise FinplanInputError(f"names node {name!r}, which the network does not have", field="placement")
    x = [network.index(name) for name in placement]
    src = network.index(app.source)
    rate = app.rate_hz
    violations: list[str] = []
    violated: list[str] = []

    prob = [1.0] * k
    for i, _ in policy.active:
        for b in range(card.exits[i].after + 1, k):
            prob[b] -= policy.exit_rates[i]
    prob = [min(1.0, max(0.0, p)) for p in prob]
    heads: list[list[int]] = [[] for _ in range(k)]
    for i, _ in policy.active:
        heads[card.exits[i].after].append(i)
    heads[k - 1].append(e)

    per_node: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in per_node:
            per_node[name] = {"blocks": [], "exits": [], "energy_j": 0.0, "busy_s": 0.0, "params_bytes": 0.0,
                              "utilization": None}
        return per_node[name]

    transfers: list[dict] = []
    link_util: dict[tuple[str, str], float] = {}
    busy_parts: dict[str, list] = {}  # node -> [(block, busy seconds per input)], for the violation text
    mem_parts: dict[str, list] = {}
    compute_energy = transfer_energy = 0.0
    reach_time = []  # worst-case time at which each block (and its heads) finishes
    clock = 0.0

    def send(a: int, b: int, nbytes: float, p: float, after: str) -> float:
        nonlocal transfer_energy
        link = network.link(network.names[a], network.names[b])
        if link is None:
            violations.append(f"there is no link {network.names[a]} -> {network.names[b]}")
            violated.append("route")
            return 0.0
        transfer_energy += p * link.energy_j(nbytes)
        transfers.append({"from": link.src, "to": link.dst, "after_block": after, "bytes": nbytes, "probability": p,
                          "time_s": link.time_s(nbytes), "energy_j": p * link.energy_j(nbytes)})
        key = (link.src, link.dst)
        if rate is not None:
            link_util[key] = link_util.get(key, 0.0) + rate * p * 8.0 * nbytes / link.bandwidth_bps
        return link.time_s(nbytes)

    if x[0] != src:
        if options.first_block_at_source:
            violations.append(f"{card.blocks[0].name} must run at the source {app.source} (first_block_at_source)")
            violated.append("first_block_at_source")
        clock += send(src, x[0], card.input_bytes, 1.0, "input")
    for b in range(k):
        n = x[b]
        node_load = load(network.names[n])
        node_load["blocks"].append(card.blocks[b].name)
        t = table.block_time_s[b, n]
        en = table.block_energy_j[b, n]
        node_load["params_bytes"] += card.blocks[b].params_bytes
        mem_b = card.blocks[b].params_bytes
        for h in heads[b]:
            t += table.exit_time_s[h, n]
            en += table.exit_energy_j[h, n]
            node_load["exits"].append(card.exits[h].name)
            node_load["params_bytes"] += card.exits[h].params_bytes
            mem_b += card.exits[h].params_bytes
        if heads[b]:  # exit heads end a runtime stage: its fixed cost, once
            t += table.stage_overhead_s[n]
        compute_energy += prob[b] * en
        node_load["energy_j"] += prob[b] * en
        node_load["busy_s"] += prob[b] * t
        busy = prob[b] * t
        clock += t
        reach_time.append(clock)
        if b + 1 < k and x[b + 1] != n:
            if not heads[b]:  # a node change ends a stage too (unless exit heads just ended one)
                cut = table.stage_overhead_s[n]
                node_load["busy_s"] += prob[b] * cut
                busy += prob[b] * cut
                clock += cut
            clock += send(n, x[b + 1], card.blocks[b].output_bytes, prob[b + 1], card.blocks[b].name)
        busy_parts.setdefault(network.names[n], []).append((card.blocks[b].name, busy))
        mem_parts.setdefault(network.names[n], []).append((card.blocks[b].name, mem_b))
    latency = clock

    # Expected latency: an input leaving at exit i waits for its block and the active heads
    # up to i on that block (head order = card order).
    def path_s(i: int) -> float:
        b = card.exits[i].after
        t = reach_time[b]
        for h in heads[b]:
            if h > i:
                t -= table.exit_time_s[h, x[b]]
        return t

    expected = sum(rate_i * path_s(i) for i, rate_i in enumerate(policy.exit_rates) if rate_i > 0)
    # per exit that can take inputs: the latency of an input leaving there (the report's
    # predicted percentiles are this distribution, weighted by the exit rates)
    exit_latency = {card.exits[i].name: path_s(i) for i in sorted({i for i, _ in policy.active} | {e})}

    at_limit: list[str] = []
    if not within(latency, app.max_latency_s, options.strict):
        violations.append(f"latency {ms(latency)} is over the {ms(app.max_latency_s)} limit")
        violated.append("latency")
    elif latency >= BINDING_SHARE * app.max_latency_s:
        at_limit.append("latency")
    if not accuracy_ok(policy.accuracy, app.min_accuracy, options.strict):
        violations.append(f"accuracy {policy.accuracy:.4f} does not reach {app.min_accuracy:.4f}")
        violated.append("accuracy")
    elif app.min_accuracy >= BINDING_SHARE * policy.accuracy:
        at_limit.append("accuracy")
    for name, node_load in per_node.items():
        node = network.node(name)
        if rate is not None:
            node_load["utilization"] = rate * node_load["busy_s"]
            total = usage.node_utilization.get(name, 0.0) + node_load["utilization"]
            if total > node.max_utilization * (1 + 1e-12):
                violations.append(node_busy_text(name, total, node.max_utilization, busy_parts[name], rate,
                                                 usage.node_utilization.get(name, 0.0)))
                violated.append(f"utilization:{name}")
            elif total >= BINDING_SHARE * node.max_utilization:
                at_limit.append(f"utilization:{name}")
        if node.memory_bytes is not None:
            total = usage.node_memory_bytes.get(name, 0.0) + node_load["params_bytes"]
            if total > node.memory_bytes * (1 + 1e-12):
                violations.append(node_memory_text(name, total, node.memory_bytes, mem_parts[name],
                                                   usage.node_memory_bytes.get(name, 0.0)))
                violated.append(f"memory:{name}")
            elif total >= BINDING_SHARE * node.memory_bytes:
                at_limit.append(f"memory:{name}")
    for key, value in link_util.items():
        link = network.link(*key)
        total = usage.link_utilization.get(key, 0.0) + value
        if total > link.max_utilization * (1 + 1e-12):
            sent = [sent_text(t["after_block"], t["bytes"], t["probability"]) for t in transfers
                    if (t["from"], t["to"]) == key]
            violations.append(link_busy_text(key[0], key[1], total, link.max_utilization, sent,
                                             value * link.bandwidth_bps, link.bandwidth_bps, rate,
                                             usage.link_utilization.get(key, 0.0)))
            violated.append(f"link:{key[0]}->{key[1]}")
        elif total >= BINDING_SHARE * link.max_utilization:
            at_limit.append(f"link:{key[0]}->{key[1]}")
    return Evaluation(
        placement=list(placement), final_exit=card.exits[e].name, thresholds=policy.thresholds(card),
        feasible=not violations, energy_j=compute_energy + transfer_energy, compute_energy_j=compute_energy,
        transfer_energy_j=transfer_energy, latency_s=latency, expected_latency_s=expected, accuracy=policy.accuracy,
        exit_rates={card.exits[i].name: r for i, r in enumerate(policy.exit_rates) if r > 0},
        per_node=per_node, transfers=transfers, link_utilization=link_util, violations=violations,
        at_limit=at_limit, violated=violated, exit_latency_s=exit_latency,
    )
