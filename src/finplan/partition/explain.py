"""Why an application has no plan, in the user's terms."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from finplan.partition.context import AppContext
from finplan.partition.costs import within
from finplan.partition.evaluate import (
    CAPACITY_TAGS, Evaluation, Usage, bits_per_s, node_busy_text, node_memory_text, sent_text,
)
from finplan.partition.paths import layered_shortest
from finplan.partition.search import count_placements, enumerate_best, fastest_within_capacity
from finplan.units import ms


def _policy_label(ctx: AppContext, index: int) -> str:
    policy = ctx.policies[index]
    name = ctx.app.card.exits[policy.final_exit].name
    if not policy.active:
        return name
    thr = ", ".join(f"{ctx.app.card.exits[i].name}>={t:.3g}" for i, t in policy.active)
    return f"{name} with early exits {thr}"


def fastest(ctx: AppContext, usage: Usage | None = None, capacity: bool = True):
    """Exact minimum latency over the accuracy-meeting policies.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.
    capacity : bool, optional
        With it each block (and each transfer) must fit alone in what ``usage`` leaves of its
        node's (link's) limits; the sums are not checked. Without it, limits are ignored.

    Returns
    -------
    tuple of (float, int, list of int) or None
        (latency_s, policy index, nodes), or None when no placement exists.

    Notes
    -----
    Complexity: O(P B N^2) (``paths.layered_shortest`` per policy).
    """
    best = None
    search = ctx if capacity else ctx.relaxed(capacity=True)
    for i in ctx.accurate():
        chain = ctx.chain(i)
        found = layered_shortest(search, chain, "latency", usage if capacity else None,
                                 None if capacity else _all_ok(chain, len(ctx.table.nodes)))
        if found is not None and (best is None or found[0] < best[0]):
            best = (found[0], i, found[2])
    return best


def _all_ok(chain, n_nodes):
    return np.ones((chain.n_blocks, n_nodes), dtype=bool)


@dataclass
class Explanation:
    """Why an application has no plan. ``kind``: accuracy, latency, route or capacity;
    ``sentence``: the reason in the user's terms; ``proven``: the sentence shows that no plan
    exists (not only that one search found none); ``witness``: a placement that keeps every
    constraint under the exact evaluation, when the search found one (the solver that asked
    then missed it: a too coarse gamma, or a repair that gave up)."""
    kind: str
    sentence: str
    proven: bool = True
    witness: Evaluation | None = None


def infeasibility_reason(ctx: AppContext, usage: Usage | None = None) -> tuple[str, str]:
    """Why ``ctx`` has no plan, as (kind, sentence).

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    tuple of (str, str)
        kind is accuracy, latency, capacity or route; the sentence is in the user's terms.

    Notes
    -----
    Complexity: that of ``explain``.
    """
    why = explain(ctx, usage)
    return why.kind, why.sentence


def explain(ctx: AppContext, usage: Usage | None = None) -> Explanation:
    """Why no placement of ``ctx`` meets its constraints with ``usage`` taken by the others.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    Explanation
        The first thing that rules every plan out: no exit reaches the accuracy target; no route
        from the source; the fastest placement (limits ignored) over the latency bound; or the
        node and link limits (``_capacity``), with ``proven`` False and a ``witness`` when a
        placement within every limit exists after all.

    Notes
    -----
    The one place every solver's no-plan reason comes from (``infeasibility_reason`` for the
    sentence alone). Complexity: O(P B N^2), plus for capacity an enumeration of up to
    EXPLAIN_EXACT_LIMIT placements (above it, the heuristic ``search.fastest_within_capacity``).
    """
    usage = usage or Usage()
    app = ctx.app
    if not ctx.accurate():
        best = max(range(len(ctx.policies)), key=lambda i: (ctx.policies[i].accuracy, -i))
        cmp = "above" if ctx.options.strict else "at least"
        what = "exit" if ctx.options.mode == "static" else "exit setting"
        return Explanation("accuracy", f"no {what} reaches accuracy {app.min_accuracy:.4g} ({cmp}); the best is "
                                       f"{ctx.policies[best].accuracy:.4f} ({_policy_label(ctx, best)})")
    uncapped = fastest(ctx, capacity=False)
    if uncapped is None:
        return Explanation("route", f"no placement can run the blocks from source {app.source} over the "
                                    "network's links")
    if not within(uncapped[0], app.max_latency_s, ctx.options.strict):
        return Explanation("latency", f"the fastest placement takes {ms(uncapped[0])}, over the "
                                      f"{ms(app.max_latency_s)} limit ({_policy_label(ctx, uncapped[1])} on "
                                      f"{', '.join(ctx.network.names[n] for n in uncapped[2])})")
    return _capacity(ctx, usage, uncapped)


# Up to this many placements (N^B summed over exit policies) the explanation finds the fastest
# placement within every node and link limit by enumeration (exact); above it, heuristically.
EXPLAIN_EXACT_LIMIT = 50_000


def compact_placement(nodes) -> str:
    """A placement in a sentence: device, device, cloud -> "device x2, cloud".

    Parameters
    ----------
    nodes : sequence of str
        The node of each block.

    Returns
    -------
    str

    Notes
    -----
    Complexity: O(B).
    """
    runs: list[list] = []
    for node in nodes:
        if runs and runs[-1][0] == node:
            runs[-1][1] += 1
        else:
            runs.append([node, 1])
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in runs)


def overloads(ctx: AppContext, policy_index: int, ev, usage: Usage | None = None) -> list[str]:
    """One phrase per node or link limit the evaluated placement ``ev`` exceeds.

    In the one wording every solver uses (``evaluate``): the total load against the limit and
    what it is made of, with the share the other applications take (``usage``, as ``ev`` was
    evaluated with). E.g. ["device would be busy 1028% of the time, over its max_utilization
    100% (block1 2.056 ms x 5000 Hz)"].

    Parameters
    ----------
    ctx : AppContext
        The application.
    policy_index : int
        The exit policy ``ev`` was evaluated with.
    ev : Evaluation
        The evaluated placement.
    usage : Usage or None, optional
        What ``ev`` was evaluated with.

    Returns
    -------
    list of str

    Notes
    -----
    Complexity: O(violations).
    """
    return [text for text, tag in zip(ev.violations, ev.violated) if tag.startswith(CAPACITY_TAGS)]


def _where(ev) -> str:
    return f"{compact_placement(ev.placement)}: {ms(ev.latency_s)}"


def _capacity(ctx: AppContext, usage: Usage, uncapped) -> Explanation:
    """The fastest placement meets the latency bound, so node and link limits rule plans out:
    say which limit the fastest placement exceeds, then why the alternatives fail too."""
    _lat, i, nodes = uncapped
    ev = ctx.evaluate(i, nodes, usage)
    if ev.feasible:  # the caller missed it
        return Explanation("capacity", f"a placement within every limit exists ({_where(ev)})", False, ev)
    over = overloads(ctx, i, ev, usage) or ev.violations
    head = "; ".join(over) + f" in the fastest placement ({_where(ev)})"
    if _stuck_at_source(ctx, usage):
        return Explanation("capacity", f"{head}; {_stuck_text(ctx, i, usage, ev)}")
    fit, exact = fastest_within_limits(ctx, usage)
    if fit is None:
        if exact:
            return Explanation("capacity", f"{head}; no placement keeps every node and link within its limits")
        return Explanation("capacity", f"{head}; no placement within every node and link limit was found", False)
    if "latency" in fit.violated:
        found = "" if exact else " found"
        return Explanation("capacity", f"{head}; the fastest placement{found} within every node and link limit "
                                       f"({compact_placement(fit.placement)}) takes {ms(fit.latency_s)}, over the "
                                       f"{ms(ctx.app.max_latency_s)} limit", exact)
    return Explanation("capacity", f"{head}; a placement within every limit exists ({_where(fit)})", False, fit)


def fastest_within_limits(ctx: AppContext, usage: Usage | None = None):
    """The fastest placement (accuracy met) keeping every node and link limit with ``usage``.

    Under the exact evaluation, possibly over the latency bound. Exact when the fastest path
    with each block fitting alone fits the sums too, or when it finds no such path, or up to
    EXPLAIN_EXACT_LIMIT placements (enumeration); above it the min-latency baseline's repair
    heuristic (``search.fastest_within_capacity``).

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.

    Returns
    -------
    tuple of (Evaluation or None, bool)
        The placement (None: none found) and whether the search was exact (False: a placement
        may be missed).

    Notes
    -----
    Complexity: O(P B N^2), or O(P N^B B) up to EXPLAIN_EXACT_LIMIT placements, or the
    heuristic's O(P B N (B N^2)).
    """
    capped = fastest(ctx, usage)
    if capped is None:
        return None, True
    ev = ctx.evaluate(capped[1], capped[2], usage)
    if not any(tag.startswith(CAPACITY_TAGS) for tag in ev.violated):
        return ev, True
    if count_placements(ctx) <= EXPLAIN_EXACT_LIMIT:
        return enumerate_best(ctx, usage, "latency"), True
    best = None
    for p in ctx.accurate():
        found = fastest_within_capacity(ctx, p, usage)
        if found is not None and (best is None or found.latency_s < best.latency_s):
            best = found
    return best, False


def _prefix_over(ctx: AppContext, chain, k: int, usage: Usage, leaves: bool) -> str | None:
    """None when blocks 1..k fit what ``usage`` leaves of the source's limits (with the stage
    cost of leaving the source after block k when ``leaves``), else the exceeded limit."""
    src = ctx.source
    name = ctx.network.names[src]
    blocks = ctx.app.card.blocks
    rate = ctx.app.rate_hz
    if rate is not None and k:
        parts = [(blocks[b].name, float(chain.busy_s[b, src])) for b in range(k)]
        if leaves:
            parts[-1] = (parts[-1][0], parts[-1][1] + float(chain.cut_busy_s[k - 1, src]))
        taken = usage.node_utilization.get(name, 0.0)
        total = taken + rate * sum(busy for _, busy in parts)
        limit = float(ctx.table.max_utilization[src])
        if total > limit * (1 + 1e-12):
            return node_busy_text(name, total, limit, parts, rate, taken)
    memory = float(ctx.table.memory_bytes[src])
    if k and np.isfinite(memory):
        parts = [(blocks[b].name, float(chain.mem_bytes[b])) for b in range(k)]
        taken = usage.node_memory_bytes.get(name, 0.0)
        total = taken + sum(nbytes for _, nbytes in parts)
        if total > memory * (1 + 1e-12):
            return node_memory_text(name, total, memory, parts, taken)
    return None


def _hop_after(ctx: AppContext, chain, k: int):
    """(bytes, probability, what) sent when the placement leaves the source after k blocks."""
    if k == 0:
        return chain.input_bytes, 1.0, "input"
    return float(chain.out_bytes[k - 1]), float(chain.trans_prob[k - 1]), ctx.app.card.blocks[k - 1].name


def _can_leave_after(ctx: AppContext, chain, k: int, usage: Usage) -> bool:
    nbytes, prob, _ = _hop_after(ctx, chain, k)
    row = ctx.link_ok(nbytes, prob, usage)[ctx.source]
    row[ctx.source] = False
    return bool(row.any())


def _stuck_at_source(ctx: AppContext, usage: Usage) -> bool:
    """Whether no placement can get past the source: for every accuracy-meeting policy, each
    way of leaving it (after blocks 1..k, k >= 1 with first_block_at_source) either overloads
    the source with blocks 1..k or sends more than any link out of it can take, and running
    every block there breaks a limit too. A proof that no plan exists: the first hop off the
    source carries one of those outputs, and the source runs at least those blocks."""
    src = ctx.source
    low = 1 if ctx.options.first_block_at_source else 0
    for p in ctx.accurate():
        chain = ctx.chain(p)
        n = chain.n_blocks
        for k in range(low, n):
            if _prefix_over(ctx, chain, k, usage, leaves=True) is None and _can_leave_after(ctx, chain, k, usage):
                return False
        if _prefix_over(ctx, chain, n, usage, leaves=False) is None and ctx.evaluate(p, [src] * n, usage).feasible:
            return False
    return True


def _blocks_text(blocks, k: int) -> str:
    names = [blocks[b].name for b in range(k)]
    if k == 1:
        return names[0]
    return " and ".join(names) if k == 2 else f"{names[0]} to {names[-1]}"


def _stuck_text(ctx: AppContext, i: int, usage: Usage, ev) -> str:
    """Why work cannot leave the source (``_stuck_at_source`` holds), told with policy ``i``
    (the fastest placement's, ``ev``), without repeating what ``ev``'s overload already says."""
    chain = ctx.chain(i)
    n = chain.n_blocks
    src = ctx.source
    name = ctx.network.names[src]
    blocks = ctx.app.card.blocks
    on_source = [b for b, node in enumerate(ev.placement) if node == name]
    low = 1 if ctx.options.first_block_at_source else 0
    # the ways to leave after k blocks whose blocks fit the source: the link is what blocks them
    blocked = [k for k in range(low, n) if _prefix_over(ctx, chain, k, usage, leaves=True) is None]
    all_fit = _prefix_over(ctx, chain, n, usage, leaves=False) is None
    if low and not blocked and not all_fit:  # every prefix overloads the source: block 1 alone does
        over = _prefix_over(ctx, chain, 1, usage, leaves=n > 1)
        if on_source == [0]:  # the head already shows block 1 alone over the limit
            return f"first_block_at_source keeps {blocks[0].name} on {name}"
        return f"with only {blocks[0].name} on it, {over}, and first_block_at_source keeps {blocks[0].name} there"
    parts = []
    if blocked:
        rate = ctx.app.rate_hz or 0.0
        table = ctx.table
        links = []
        for m, other in enumerate(ctx.network.names):
            if m != src and table.has_link[src, m]:
                free = table.link_max_utilization[src, m] - usage.link_utilization.get((name, other), 0.0)
                links.append((max(free, 0.0) * table.bandwidth_bps[src, m], other))
        if not links:
            parts.append("no link leads out of it")
        else:
            needs = []
            for k in blocked:
                nbytes, prob, what = _hop_after(ctx, chain, k)
                needs.append((rate * prob * 8.0 * nbytes, k, sent_text(what, nbytes, prob)))
            bits, _k, sent = min(needs)
            links.sort(key=lambda item: (-item[0], item[1]))
            shown = ", ".join(f"{bits_per_s(free)} to {other}" for free, other in links[:3])
            if len(links) > 3:
                shown += f" and {len(links) - 3} more"
            need = f"{sent} x {rate:g} Hz = {bits_per_s(bits)}"
            if len(blocked) == 1:
                parts.append(f"{need} is more than any link out of it can take ({shown})")
            else:
                parts.append(f"no output it could send fits a link out of it (the smallest, {need}; {shown})")
    start = (max(blocked) + 1) if blocked else low
    for k in range(max(start, 1), n + 1):
        over = _prefix_over(ctx, chain, k, usage, leaves=k < n)
        if over is not None:
            if not (k == n and on_source == list(range(n))):  # else the head says it
                parts.append(f"with {_blocks_text(blocks, k)} on it, {over}")
            break
    if all_fit:
        alone = ctx.evaluate(i, [src] * n, usage)
        if alone.violated == ["latency"]:
            parts.append(f"running every block on it takes {ms(alone.latency_s)}, over the "
                         f"{ms(ctx.app.max_latency_s)} limit")
        elif alone.violations:
            parts.append("running every block on it: " + "; ".join(alone.violations))
    return f"moving work off {name} does not help: " + ", and ".join(parts)


def policy_of(ctx: AppContext, ev) -> int:
    """The index of the exit policy ``ev`` was evaluated with.

    Parameters
    ----------
    ctx : AppContext
        The application.
    ev : Evaluation
        An evaluation of one of its policies.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        When no policy matches (a bug, not bad input).

    Notes
    -----
    Complexity: O(P H).
    """
    card = ctx.app.card
    for p, policy in enumerate(ctx.policies):
        if (card.exits[policy.final_exit].name == ev.final_exit and policy.thresholds(card) == ev.thresholds
                and policy.accuracy == ev.accuracy):
            return p
    raise ValueError(f"no exit policy of {card.name} matches {ev.final_exit} {ev.thresholds}")  # a bug, not input


def crowded_out(ctx: AppContext, alone, others: Usage) -> str:
    """Why an application that fits alone does not fit next to the others.

    Parameters
    ----------
    ctx : AppContext
        The application.
    alone : Evaluation
        A feasible placement with nothing else planned.
    others : Usage
        What the other applications' plans take.

    Returns
    -------
    str
        What that placement would then exceed, naming the contended nodes and links.

    Notes
    -----
    Complexity: one evaluation, O(B + L).
    """
    names = ctx.network.names
    p = policy_of(ctx, alone)
    ev = ctx.evaluate(p, [names.index(n) for n in alone.placement], others)
    over = overloads(ctx, p, ev, others)
    text = f"alone it would fit (e.g. {compact_placement(alone.placement)}), but not next to the other applications"
    return text + ("; with them, in that placement " + "; ".join(over) if over else "")


def gamma_for(ctx: AppContext, witness, gamma: int) -> int | None:
    """Smallest gamma that certainly admits the placement ``witness``.

    Each of the k hops rounds up by less than one unit, so gamma >= k / (1 - T/L) suffices for
    latency T under the bound L.

    Parameters
    ----------
    ctx : AppContext
        The application.
    witness : Evaluation or None
        A feasible placement.
    gamma : int
        The gamma that missed it.

    Returns
    -------
    int or None
        At least twice ``gamma``; None when there is no witness or T is not below L.

    Notes
    -----
    Complexity: O(1).
    """
    limit = ctx.app.max_latency_s
    if witness is None or not witness.feasible or witness.latency_s >= limit:
        return None
    need = math.ceil(len(witness.placement) / (1.0 - witness.latency_s / limit)) + 1
    return max(need, 2 * gamma)


def suggest_gamma(ctx: AppContext, gamma: int, usage: Usage | None = None) -> int | None:
    """A gamma with which FIN would admit the fastest placement keeping every constraint.

    Parameters
    ----------
    ctx : AppContext
        The application.
    gamma : int
        The gamma that found nothing.
    usage : Usage or None, optional
        Capacity the other applications take (exact evaluation).

    Returns
    -------
    int or None
        None when no such placement was found.

    Notes
    -----
    Complexity: that of ``fastest_within_limits``.
    """
    fit, _exact = fastest_within_limits(ctx, usage or Usage())
    return gamma_for(ctx, fit, gamma)
