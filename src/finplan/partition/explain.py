"""Why an application has no plan, in the user's terms."""
from __future__ import annotations

import math

from finplan.partition.context import AppContext
from finplan.partition.costs import within
from finplan.partition.evaluate import Usage, ms
from finplan.partition.paths import layered_shortest


def _policy_label(ctx: AppContext, index: int) -> str:
    policy = ctx.policies[index]
    name = ctx.app.card.exits[policy.final_exit].name
    if not policy.active:
        return name
    thr = ", ".join(f"{ctx.app.card.exits[i].name}>={t:.3g}" for i, t in policy.active)
    return f"{name} with early exits {thr}"


def fastest(ctx: AppContext, usage: Usage | None = None, capacity: bool = True):
    """Exact minimum latency over the accuracy-meeting policies: (latency_s, policy, nodes) or None.

    With ``capacity`` each block (and each transfer) must fit alone in what ``usage`` leaves
    of its node's (link's) limits; the sums are not checked. Without it, limits are ignored.
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
    import numpy as np
    return np.ones((chain.n_blocks, n_nodes), dtype=bool)


def infeasibility_reason(ctx: AppContext, usage: Usage | None = None) -> tuple[str, str]:
    """(kind, sentence): kind is accuracy, latency, capacity or route."""
    app = ctx.app
    if not ctx.accurate():
        best = max(range(len(ctx.policies)), key=lambda i: (ctx.policies[i].accuracy, -i))
        cmp = "above" if ctx.options.strict else "at least"
        what = "exit" if ctx.options.mode == "static" else "exit setting"
        return "accuracy", (f"no {what} reaches accuracy {app.min_accuracy:.4g} ({cmp}); the best is "
                            f"{ctx.policies[best].accuracy:.4f} ({_policy_label(ctx, best)})")
    uncapped = fastest(ctx, capacity=False)
    if uncapped is None:
        return "route", (f"no placement can run the blocks from source {app.source} over the network's links")
    if not within(uncapped[0], app.max_latency_s, ctx.options.strict):
        return "latency", (f"the fastest placement takes {ms(uncapped[0])}, over the {ms(app.max_latency_s)} limit "
                           f"({_policy_label(ctx, uncapped[1])} on {', '.join(ctx.network.names[n] for n in uncapped[2])})")
    return "capacity", _capacity_reason(ctx, usage, uncapped)


def _share(value: float) -> str:
    text = f"{value:.3g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _bits_per_s(value: float) -> str:
    for unit, scale in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} bit/s"


def compact_placement(nodes) -> str:
    """device, device, cloud -> "device x2, cloud" (a placement in a sentence)."""
    runs: list[list] = []
    for node in nodes:
        if runs and runs[-1][0] == node:
            runs[-1][1] += 1
        else:
            runs.append([node, 1])
    return ", ".join(n if c == 1 else f"{n} x{c}" for n, c in runs)


def overloads(ctx: AppContext, policy_index: int, ev, usage: Usage | None = None) -> list[str]:
    """One phrase per node or link limit the evaluated placement ``ev`` exceeds, in the
    user's terms: the total load against the limit and what it is made of.

    Parameters: ``ev`` the exact evaluation of a placement of policy ``policy_index`` with
    ``usage``, capacity already taken by other applications (said when not zero).
    Returns e.g. ["device would be at 10.3 of max_utilization 1.0 (block1 2.056 ms x 5000 Hz)"].
    Complexity: O(B) per exceeded limit.
    """
    from finplan.partition.draw import human_bytes

    usage = usage or Usage()
    chain = ctx.chain(policy_index)
    card = ctx.app.card
    rate = ctx.app.rate_hz
    names = ctx.network.names
    out = []
    for tag in ev.violated:
        kind, _, where = tag.partition(":")
        if kind == "utilization":
            n = names.index(where)
            parts = []
            for b, placed in enumerate(ev.placement):
                if placed == where:
                    busy = chain.busy_s[b, n]
                    if b + 1 < len(ev.placement) and ev.placement[b + 1] != where:
                        busy += chain.cut_busy_s[b, n]
                    parts.append(f"{card.blocks[b].name} {ms(busy)}")
            taken = usage.node_utilization.get(where, 0.0)
            detail = ", ".join(parts) + f" x {rate:g} Hz"
            if taken:
                detail = f"{_share(taken)} taken by the other applications + {detail}"
            total = taken + ev.per_node[where]["utilization"]
            out.append(f"{where} would be at {_share(total)} of max_utilization "
                       f"{_share(ctx.network.node(where).max_utilization)} ({detail})")
        elif kind == "memory":
            parts = [f"{card.blocks[b].name} {human_bytes(chain.mem_bytes[b])}"
                     for b, placed in enumerate(ev.placement) if placed == where]
            taken = usage.node_memory_bytes.get(where, 0.0)
            detail = ", ".join(parts)
            if taken:
                detail = f"{human_bytes(taken)} taken by the other applications + {detail}"
            total = taken + ev.per_node[where]["params_bytes"]
            out.append(f"{where} would hold {human_bytes(total)} of parameters, over its memory_bytes "
                       f"{human_bytes(ctx.network.node(where).memory_bytes)} ({detail})")
        elif kind == "link":
            a, b = where.split("->")
            link = ctx.network.link(a, b)
            parts = []
            for t in ev.transfers:
                if t["from"] == a and t["to"] == b:
                    what = "the input" if t["after_block"] == "input" else f"{t['after_block']}'s output"
                    parts.append(f"{what} {human_bytes(t['bytes'])}"
                                 + (f" (p={t['probability']:.2f})" if t["probability"] < 1 else ""))
            taken = usage.link_utilization.get((a, b), 0.0)
            detail = ", ".join(parts) + f" x {rate:g} Hz over {_bits_per_s(link.bandwidth_bps)}"
            if taken:
                detail = f"{_share(taken)} taken by the other applications + {detail}"
            total = taken + ev.link_utilization[(a, b)]
            out.append(f"link {a} -> {b} would be at {_share(total)} of max_utilization "
                       f"{_share(link.max_utilization)} ({detail})")
    return out


def _capacity_reason(ctx: AppContext, usage: Usage | None, uncapped) -> str:
    """Why nothing fits although the fastest placement meets the latency bound: which node or
    link limit that placement exceeds, then what the fastest placement within the limits does."""
    names = ctx.network.names
    _lat, i, nodes = uncapped
    ev = ctx.evaluate(i, nodes, usage)
    where = f"{compact_placement(ev.placement)}: {ms(ev.latency_s)}"
    over = overloads(ctx, i, ev, usage)
    if over:
        head = "; ".join(over) + f" in the fastest placement ({where})"
    else:
        head = f"the fastest placement ({where}) is within every node and link limit"
    capped = fastest(ctx, usage)
    if capped is None:
        tail = "no placement keeps each block within the node and link limits"
        src = ctx.source
        if ctx.options.first_block_at_source and not any(ctx.allowed(ctx.chain(j), usage)[0, src]
                                                         for j in ctx.accurate()):
            tail += (f" ({ctx.app.card.blocks[0].name} alone is over {names[src]}'s limits, and first_block_at_source "
                     "keeps it there)")
        return f"{head}; {tail}"
    ev1 = ctx.evaluate(capped[1], capped[2], usage)
    where1 = compact_placement(ev1.placement)
    if "latency" in ev1.violated:
        tail = (f"the fastest placement with each block within the limits ({where1}) takes {ms(ev1.latency_s)}, "
                f"over the {ms(ctx.app.max_latency_s)} limit")
    else:
        over1 = overloads(ctx, capped[1], ev1, usage)
        if over1:
            tail = (f"the fastest placement with each block within the limits ({where1}, {ms(ev1.latency_s)}) "
                    f"still exceeds them together: " + "; ".join(over1))
        else:
            tail = f"a placement within the limits exists ({where1}, {ms(ev1.latency_s)})"
    return f"{head}; {tail}"


def suggest_gamma(ctx: AppContext, gamma: int) -> int | None:
    """Smallest gamma that certainly admits the fastest feasible placement (or None).

    Each of the k hops rounds up by less than one unit, so gamma >= k / (1 - T/L) suffices.
    """
    best = fastest(ctx)
    if best is None or best[0] >= ctx.app.max_latency_s:
        return None
    hops = ctx.chain(best[1]).n_blocks
    need = math.ceil(hops / (1.0 - best[0] / ctx.app.max_latency_s)) + 1
    return max(need, 2 * gamma)
