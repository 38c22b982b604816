"""The exact optimum by enumeration, for small instances."""
from __future__ import annotations

from finplan.errors import FinplanInputError
from finplan.partition.context import AppContext, AppResult
from finplan.partition.evaluate import Usage
from finplan.partition.explain import infeasibility_reason
from finplan.partition.search import count_placements, enumerate_best

# Placements enumerated in total over every exit policy; above it we refuse.
EXHAUSTIVE_LIMIT = 2_000_000


def exhaustive(ctx: AppContext, usage: Usage | None = None, limit: int = EXHAUSTIVE_LIMIT,
               objective: str = "energy", *, field: str = "solver") -> AppResult:
    """Minimum-energy deployment of one application by enumerating every placement.

    As ``fin``, solved exactly: every node sequence of every accuracy-meeting exit policy is
    scored (vectorised), invalid hops and capacity violations discarded, and the best is
    re-evaluated with the exact model. Ties: lower latency, earlier policy, lexicographically
    smaller node indices.

    Parameters
    ----------
    ctx : AppContext
        The application.
    usage : Usage or None, optional
        Capacity the other applications take.
    limit : int, optional
        The most placements (N^B summed over exit policies) to enumerate.
    objective : {"energy", "latency"}, optional
        "energy" (the planning problem) or "latency": the fastest placement meeting the accuracy
        target and every node and link limit, ties by lower energy, *without* the latency bound
        (the min-latency baseline; its answer is then evaluated, and marked infeasible when even
        it is over the bound).
    field : str, optional
        The name of the solver choice as the caller's user knows it (the CLI: ``--solver``), in
        the message that suggests another solver.

    Returns
    -------
    AppResult
        The optimum, or no evaluation and the reason (``explain``) when no placement keeps every
        constraint.

    Raises
    ------
    FinplanInputError
        When the instance has more than ``limit`` placements, or for an unknown objective.

    Notes
    -----
    Complexity: O(P N^B B) for P exit policies, N nodes and B blocks.
    """
    if objective not in ("energy", "latency"):
        raise FinplanInputError(f"is {objective!r}; expected energy or latency", field="objective")
    total = count_placements(ctx)
    if total > limit:
        raise FinplanInputError(
            f"instance too large for the exhaustive solver: {total:,} placements to enumerate, over the limit of "
            f"{limit:,}; use {field} milp (exact) or fin", field=field)
    best_eval = enumerate_best(ctx, usage, objective)
    if best_eval is None:
        _kind, reason = infeasibility_reason(ctx, usage)
        return AppResult(ctx.app, None, reason)
    return AppResult(ctx.app, best_eval, None if best_eval.feasible else "; ".join(best_eval.violations))
