"""FIN: minimum-energy deployment through the Feasible Inference Graph (the policy loop).

``fin`` tries every exit policy meeting the accuracy target, solves each with one of two
dynamic programs over the same layered placements (one layer per block), re-checks the
cheapest answers with the exact model, and repairs cumulative capacity overloads:

- by default (gamma None) the exact one of ``pareto.label_layers``: labels (latency_s,
  energy_j) on exact latencies, so the answer is the optimum of the exact model, or, where a
  frontier outgrows ``pareto.FRONT_CAP`` labels, within a stated factor (1 + epsilon) of it;
- with an integer gamma, the paper's discretised graph (``fin_graph.build_graph``): latencies
  rounded up to whole units of max_latency / gamma. Its answer is feasible and never below the
  optimum, but the rounding can cut the optimum off and its loss in energy has no bound
  (docs/planner.md).

The paper is cited once, in ``fin``'s docstring (References).
"""
from __future__ import annotations

import math

import numpy as np

from finplan.errors import FinplanInputError
from finplan.partition import pareto
from finplan.partition.context import AppContext, AppResult, better
from finplan.partition.costs import is_close
from finplan.partition.evaluate import Usage
from finplan.partition.explain import compact_placement, explain, gamma_for
from finplan.partition.hops import SMALL_HOPS
from finplan.partition.fin_graph import METHODS, build_graph, graph_path, graph_terminals
from finplan.partition.pareto import label_layers, label_path, label_terminals, trim_factor
from finplan.units import ms

# Default: no latency units, the exact label DP (pareto.py).
DEFAULT_GAMMA = None
DEFAULT_LAMBDA = 0.0
# Bound of the exact DP where a frontier is trimmed (energy <= (1 + epsilon) x the optimum).
DEFAULT_EPSILON = 1e-3
# Terminal states re-checked with the exact model before giving up on a chain.
MAX_EXACT_CHECKS = 64
# Scalarised placements evaluated for an incumbent before the label DP of a large chain.
MAX_INCUMBENT_CHECKS = 3


def _solve_policies(ctx: AppContext, gamma: int | None, lam: float, usage: Usage | None, bans: frozenset,
                    link_bans: frozenset, method: str = "auto", epsilon: float = DEFAULT_EPSILON):
    """The cheapest latency-feasible placement over every accurate policy, by the exact label
    DP (gamma None) or the discretised graph. Returns (key, evaluation, accounting) where the
    accounting holds ``bound`` (the label DP's epsilon, max over chains) and ``complete``
    (False when a chain's first MAX_EXACT_CHECKS terminals all failed the exact check)."""
    best, best_eval = None, None
    accurate = ctx.accurate()
    shared = {} if len(accurate) > 1 else None
    trim = 1.0
    if gamma is None:
        trim = trim_factor(epsilon, max((ctx.chain(i).n_blocks for i in accurate), default=1))
    bound, complete = 0.0, True
    for i in accurate:
        chain = ctx.chain(i)
        ok = ctx.allowed(chain, usage)
        for b, n in bans:
            if b < chain.n_blocks:
                ok[b, n] = False
        if gamma is None:
            upper = None if best is None else best[0]
            if (chain.n_blocks - 1) * len(ctx.table.links.tails) > SMALL_HOPS:
                upper = _incumbent_energy(ctx, i, chain, usage, ok, link_bans, upper)
            labels = label_layers(ctx, chain, usage, ok, link_bans, lam=lam, trim=trim, upper_j=upper, shared=shared)
            bound = max(bound, labels.bound)
            terminals = [(e, m, j) for e, _t, m, j in label_terminals(labels)]
            path = lambda m, j: label_path(labels, m, j)  # noqa: E731
        else:
            graph = build_graph(ctx, chain, gamma, lam, usage, ok, link_bans, method, shared)
            terminals = [(e, m, q) for e, q, m in graph_terminals(graph)]
            path = lambda m, q: graph_path(graph, m, q)  # noqa: E731
        settled = False
        for energy, m, where in terminals[:MAX_EXACT_CHECKS]:
            if best is not None and energy > best[0] and not is_close(energy, best[0]):
                settled = True
                break  # terminals come in energy order: nothing later can win
            nodes = path(m, where)
            ev = ctx.evaluate(i, nodes, usage)
            if not _latency_ok(ev):
                continue  # rounding cannot cause this, but strict equality at the limit can
            key = (ev.energy_j, ev.latency_s, i, nodes)
            if better(key, best):
                best, best_eval = key, ev
            settled = True
            break
        if not settled and len(terminals) > MAX_EXACT_CHECKS:
            complete = False
    return best, best_eval, {"bound": bound, "complete": complete}


# What the DPs already keep; a terminal the exact model refuses for one of these (strict equality
# at the latency limit) is skipped, while capacity tags go to the repair loop.
_PATH_TAGS = frozenset(("latency", "route", "first_block_at_source"))


def _incumbent_energy(ctx: AppContext, i: int, chain, usage, ok, link_bans, upper: float | None):
    """The lower of ``upper`` and the energy of the cheapest scalarised placement of policy i that
    the exact evaluation accepts as the DP loop would (``pareto.incumbent_placements``): a plan
    the label DP then only has to beat, so it drops most labels. Never changes the answer: every
    label that can lead to a plan at most that costly is kept."""
    for energy, nodes in pareto.incumbent_placements(ctx, chain, usage, ok, link_bans)[:MAX_INCUMBENT_CHECKS]:
        if upper is not None and energy >= upper:
            break
        ev = ctx.evaluate(i, nodes, usage)
        if _latency_ok(ev):
            return ev.energy_j if upper is None else min(upper, ev.energy_j)
    return upper


def _latency_ok(ev) -> bool:
    return _PATH_TAGS.isdisjoint(ev.violated)


def fin(ctx: AppContext, gamma: int | None = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA, usage: Usage | None = None,
        method: str = "auto", epsilon: float = DEFAULT_EPSILON) -> AppResult:
    """Minimum-energy placement and exit (and thresholds, dynamic mode) of one application.

    Choose a final exit (dynamic mode: an exit policy from the threshold grid) meeting the
    accuracy target and a node for every deployed block, moving only along links, minimising
    expected energy subject to latency < max_latency_s (<= when not strict) and the residual
    node and link capacity in ``usage``. This is FIN [1]_.

    Parameters
    ----------
    ctx : AppContext
        The application with its cost tables (``context.contexts``).
    gamma : int or None, optional
        None (default): the exact label DP (``pareto.label_layers``); an int > 0: the paper's
        discretised graph with that many latency units (``fin_graph.build_graph``).
    lam : float, optional
        Proximity pruning (>= 0; 0 prunes nothing): frontiers trimmed by a factor (1 + lam).
    usage : Usage or None, optional
        Capacity the other applications take.
    method : {"auto", "sparse", "dense"}, optional
        The graph representation with an integer gamma (the answer does not depend on it).
    epsilon : float, optional
        Bound of the label DP where a frontier outgrows ``pareto.FRONT_CAP`` labels (>= 0; 0:
        never trim, always exact).

    Returns
    -------
    AppResult
        Its evaluation, when present, is feasible under the exact model, and its ``guarantee``
        says how far from the exact model's optimum it can be (``guarantee``). When FIN finds
        nothing although a placement keeping every constraint exists (checked with the exact
        evaluation, on the capacity ``usage`` leaves), the reason says so and suggests a gamma
        (or, after capacity repairs, the exact MILP); when no plan exists, the reason says why.

    Raises
    ------
    FinplanInputError
        For gamma <= 0, lambda < 0, epsilon < 0 or an unknown method.

    See Also
    --------
    finplan.partition.milp.milp : the exact optimum (several applications jointly).
    finplan.partition.joint.joint_fin : FIN for several applications sharing capacity.

    Notes
    -----
    Cumulative capacity (several blocks on one node) is checked exactly; a violating answer
    triggers a ban of the heaviest (block, node) or link hop on the violated resource and a
    re-solve (heuristic, so the plan then carries no bound; the MILP is exact).

    Complexity: O(P B |links| F) time for P exit policies, B blocks and frontier size F
    (labels, or replicas of at most gamma + 1 units, per (block, node)); on small instances
    policies sharing a chain prefix share its layers.

    References
    ----------
    .. [1] Singhal, Wu, Malandrino, Levorato, Chiasserini, "Resource-aware Deployment of
       Dynamic DNNs over Multi-tiered Interconnected Systems", IEEE INFOCOM 2024
       (arXiv 2404.08060).

    Examples
    --------
    A phone that is too slow for the last exit within 50 ms (block 2 alone takes 800 ms there)
    offloads block 2 to the edge: 4 mJ for b1 on the phone, 0.32 mJ to send its output, 400 mJ
    for b2 on the edge; 2 ms + 1.32 ms + 8 ms:

    >>> from finplan.partition.context import contexts
    >>> from finplan.partition.documents import card_from_dict, network_from_dict
    >>> from finplan.partition.problem import Application, Options, Scenario
    >>> card = card_from_dict({"schema": "finplan.model/1", "name": "tiny", "input_bytes": 3000,
    ...     "blocks": [{"name": "b1", "flops": 2e6, "output_bytes": 4000},
    ...                {"name": "b2", "flops": 8e8, "output_bytes": 40}],
    ...     "exits": [{"name": "e1", "after": "b1", "accuracy": 0.6},
    ...               {"name": "e2", "after": "b2", "accuracy": 0.9}]})
    >>> network = network_from_dict({"schema": "finplan.network/1",
    ...     "nodes": [{"name": "phone", "tier": "device", "compute": {"ops_per_s": 1e9, "power_w": 2.0}},
    ...               {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 1e11, "power_w": 50.0}}],
    ...     "links": [{"from": "phone", "to": "edge", "bandwidth_bps": 1e8, "latency_s": 0.001,
    ...                "energy_j_per_bit": 1e-8}]})
    >>> app = Application("cam", card, "tiny.json", "phone", max_latency_s=0.05, min_accuracy=0.85)
    >>> ctx, = contexts(Scenario(network, (app,), Options()))
    >>> result = fin(ctx)
    >>> result.evaluation.placement, result.evaluation.final_exit
    (['phone', 'edge'], 'e2')
    >>> print(f"{result.evaluation.energy_j:.5f} J, {result.evaluation.latency_s * 1e3:.2f} ms")
    0.40432 J, 11.32 ms
    >>> result.guarantee["exact"]
    True
    """
    check_parameters(gamma, lam)
    check_epsilon(epsilon)
    if method not in METHODS:
        raise FinplanInputError(f"is {method!r}; expected one of {', '.join(METHODS)}", field="method")
    bans: set = set()
    link_bans: set = set()
    for _attempt in range(4 * ctx.table.block_time_s.size + 4):
        _best, ev, accounting = _solve_policies(ctx, gamma, lam, usage, frozenset(bans), frozenset(link_bans), method,
                                                epsilon)
        if ev is None:
            break
        if ev.feasible:
            return AppResult(ctx.app, ev, notes=[_excluded_note(ctx, bans, link_bans)] if bans or link_bans else [],
                             guarantee=guarantee(gamma, lam, epsilon, accounting, bool(bans or link_bans)))
        if not _ban_heaviest(ctx, ev, usage, bans, link_bans):
            break
    return AppResult(ctx.app, None, _no_plan_reason(ctx, gamma, usage, bans, link_bans))


def guarantee(gamma: int | None, lam: float, epsilon: float, accounting: dict, repaired: bool) -> dict:
    """What a FIN plan is guaranteed to be, against the optimum of the exact model (the MILP's).

    Parameters
    ----------
    gamma : int or None
        The discretised graph's units (None: the exact label DP).
    lam : float
        The proximity pruning used.
    epsilon : float
        The label DP's trimming bound.
    accounting : dict
        ``bound`` (the label DP's epsilon, max over chains) and ``complete`` from the solve.
    repaired : bool
        Whether capacity repairs ruled options out.

    Returns
    -------
    dict
        {"exact": bool, "epsilon": float or None, "basis": str}: exact (epsilon 0); or energy
        <= (1 + epsilon) x the optimum; or epsilon None, no bound, with the reason in basis.

    Notes
    -----
    Complexity: O(1).
    """
    if gamma is not None:
        return {"exact": False, "epsilon": None,
                "basis": f"latencies rounded up to whole units of max_latency/{gamma} per block: feasible and never "
                         "below the optimum, but the rounding may cut the optimum off, by an energy not bounded"}
    if repaired:
        return {"exact": False, "epsilon": None,
                "basis": "several blocks on one node or link went over its capacity; FIN's repair of that "
                         "(ruling options out) is a heuristic, so there is no bound (the MILP is exact)"}
    if not accounting["complete"]:
        return {"exact": False, "epsilon": None,
                "basis": f"the exact evaluation refused the {MAX_EXACT_CHECKS} cheapest placements of an exit "
                         "policy at the latency limit; the rest were not checked"}
    bound = accounting["bound"]
    if bound <= 0.0:
        return {"exact": True, "epsilon": 0.0,
                "basis": "exact latencies; every Pareto-optimal (latency, energy) partial placement kept"}
    if lam == 0.0 and bound <= epsilon * (1 + 1e-9):
        bound = min(bound, epsilon)  # r^J <= 1 + epsilon; only the floating-point product can exceed it
    why = []
    if epsilon > 0 and bound > lam:
        why.append(f"frontiers over {pareto.FRONT_CAP} labels trimmed to within a factor (1 + {epsilon:g})^(1/(B-1))")
    if lam > 0:
        why.append(f"every frontier trimmed by the proximity pruning lambda = {lam:g}")
    return {"exact": False, "epsilon": float(f"{bound:.6g}") if lam > 0 else bound,
            "basis": "exact latencies; " + "; ".join(why) + ": energy <= (1 + epsilon) x the optimum"}


def _no_plan_reason(ctx: AppContext, gamma: int | None, usage: Usage | None, bans: set, link_bans: set) -> str:
    """Why FIN returns no plan. When the explanation proves that none exists, that; when it
    found a placement keeping every constraint (exact evaluation, with the capacity the other
    applications take), what FIN missed: a coarse gamma (try a larger one) or its repair
    (the exact --solver milp); when neither is known, the explanation and that FIN gave up.
    The exact label DP (gamma None) misses nothing through latencies, so only its repair or
    its bounded re-checks can leave such a placement out."""
    why = explain(ctx, usage)
    if why.kind != "capacity" or why.proven:
        return why.sentence
    repaired = bool(bans or link_bans)
    if why.witness is not None:
        where = f"{compact_placement(why.witness.placement)}, {ms(why.witness.latency_s)}"
        suggestion = None if repaired or gamma is None else gamma_for(ctx, why.witness, gamma)
        if suggestion is not None:
            return (f"FIN with gamma={gamma} found no plan, but a placement within every limit exists ({where}); "
                    f"try --gamma {suggestion}")
        missed = f" ({_excluded_note(ctx, bans, link_bans)})" if repaired else ""
        if gamma is None or repaired:
            which, remedy = "FIN", "the exact --solver milp finds the best one"
        else:  # at the limit itself no finer grid is sure to admit it; exact latencies are
            which, remedy = f"FIN with gamma={gamma}", "FIN on exact latencies (no --gamma) or --solver milp finds it"
        return (f"{which} found no plan{missed}, but a placement within every limit exists "
                f"({where}); {remedy}")
    if repaired:
        return (f"{why.sentence}; {_excluded_note(ctx, bans, link_bans)}, and then found no plan "
                "(the exact --solver milp may still find one)")
    return f"{why.sentence} (the exact --solver milp may still find a plan)"


def _excluded_note(ctx: AppContext, bans: set, link_bans: set) -> str:
    """The options FIN set aside because the sum of loads on a node or link went over its
    limit, in the user's terms (block on node, block's output over a link)."""
    names = ctx.network.names
    blocks = ctx.app.card.blocks
    items = [f"{blocks[b].name} on {names[n]}" for b, n in sorted(bans)]
    items += [("the input" if b == 0 else f"{blocks[b - 1].name}'s output") + f" over {names[n]} -> {names[m]}"
              for b, n, m in sorted(link_bans)]
    return "to keep every node and link within its limit, FIN ruled out: " + ", ".join(items)


def _ban_heaviest(ctx: AppContext, ev, usage: Usage | None, bans: set, link_bans: set) -> bool:
    """Relieve the first violated cumulative capacity: on a node, forbid the last block it
    runs (the path then leaves the node earlier, like moving a cut); on a link, forbid the
    heaviest hop. Returns False when nothing is left to forbid."""
    names = ctx.network.names
    for tag in ev.violated:
        kind, _, where = tag.partition(":")
        if kind in ("utilization", "memory"):
            node = where
            n = names.index(node)
            pinned = 0 if ctx.options.first_block_at_source and n == ctx.source else -1
            on_node = [b for b, placed in enumerate(ev.placement) if placed == node and b != pinned and (b, n) not in bans]
            if on_node:
                bans.add((on_node[-1], n))
                return True
        if kind == "link":
            hops = [t for t in ev.transfers if f"{t['from']}->{t['to']}" == where]
            if hops:
                a, b_ = hops[0]["from"], hops[0]["to"]
                heaviest = max(hops, key=lambda t: (t["bytes"] * t["probability"]))
                block = 0 if heaviest["after_block"] == "input" else \
                    [blk.name for blk in ctx.app.card.blocks].index(heaviest["after_block"]) + 1
                link_bans.add((block, names.index(a), names.index(b_)))
                return True
    return False


def fin_parameters(gamma: int | None, lam: float, epsilon: float) -> dict:
    """FIN's parameters as a plan records them.

    Parameters
    ----------
    gamma : int or None
        None: the exact label DP; else the graph's units.
    lam : float
        Proximity pruning.
    epsilon : float
        The label DP's trimming bound.

    Returns
    -------
    dict
        {"latency": "exact", "epsilon", "lambda"} or {"gamma", "lambda"}.

    Notes
    -----
    Complexity: O(1).
    """
    if gamma is None:
        return {"latency": "exact", "epsilon": float(epsilon), "lambda": float(lam)}
    return {"gamma": int(gamma), "lambda": float(lam)}


def check_parameters(gamma, lam, *, gamma_field: str = "gamma", lambda_field: str = "lambda") -> None:
    """Refuse a gamma or lambda FIN cannot run with.

    Parameters
    ----------
    gamma : int or None
        None (the exact label DP) or an integer > 0 (latency units of the discretised graph).
    lam : float
        Proximity pruning, a finite number >= 0.
    gamma_field, lambda_field : str
        The names the caller's user knows them by (the CLI passes ``"--gamma"``, ``"--lambda"``).

    Raises
    ------
    FinplanInputError
        Naming the field and what was expected.

    Notes
    -----
    The one check of FIN's parameters: ``solve``, ``fin``, the GraphML export and the CLI all
    call it. O(1).
    """
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma <= 0):
        raise FinplanInputError(f"is {gamma!r}; expected an integer > 0 (latency units)", field=gamma_field)
    if not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise FinplanInputError(f"is {lam!r}; expected a number >= 0", field=lambda_field)


def check_epsilon(epsilon, field: str = "epsilon") -> None:
    """Refuse an epsilon that is not a finite number >= 0.

    Parameters
    ----------
    epsilon : float
        The label DP's bound where a frontier is trimmed (0: never trim).
    field : str
        The name the caller's user knows it by (the CLI passes ``"--epsilon"``).

    Raises
    ------
    FinplanInputError
        Naming ``field`` and what was expected.

    Notes
    -----
    O(1).
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise FinplanInputError(f"is {epsilon!r}; expected a number >= 0 (0: always exact)", field=field)
