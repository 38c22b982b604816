"""One entry point for every solver, for one or several applications."""
from __future__ import annotations

import math
import time

from finplan.errors import FinplanInputError
from finplan.partition.baselines import BASELINES
from finplan.partition.context import SolveResult, contexts
from finplan.partition.costs import DEFAULT_QUANTILES, is_close
from finplan.partition.exhaustive import EXHAUSTIVE_LIMIT, exhaustive
from finplan.partition.fin import (
    DEFAULT_EPSILON, DEFAULT_GAMMA, DEFAULT_LAMBDA, check_epsilon, check_parameters, fin, fin_parameters,
)
from finplan.partition.milp import milp
from finplan.partition.multi import plan_sequentially
from finplan.partition.problem import Scenario

SOLVERS = ("fin", "exhaustive", "milp", "mcp", "device-only", "cloud-only", "single-cut", "min-latency")
# The joint MILP is run to report FIN's gap only below this many applications x policies x blocks x links.
JOINT_GAP_SIZE = 200_000


def solve(scenario: Scenario, solver: str = "fin", *, gamma: int = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA,
          quantiles=DEFAULT_QUANTILES, exhaustive_limit: int = EXHAUSTIVE_LIMIT, joint_gap: bool = True,
          time_limit_s: float | None = None, epsilon: float = DEFAULT_EPSILON) -> SolveResult:
    """Plan every application of ``scenario`` with ``solver`` (one of SOLVERS).

    fin, exhaustive and the baselines plan applications one by one on residual capacity
    (see multi.py); milp plans them jointly. With several applications, fin also reports
    the gap to the joint MILP optimum when the instance is small enough (``extra``).
    ``time_limit_s`` (> 0, default None: no limit) bounds every MILP run (the milp solver and
    fin's joint-gap reference); a run stopped by it returns its best plan, noted "not proven
    optimal (time limit), MIP gap X%" (``extra["proven_optimal"]`` False, ``extra["mip_gap"]``),
    or no plan with the reason "MILP time limit reached before any feasible plan was found".
    FIN: ``gamma`` None (default) runs its exact label DP, with ``epsilon`` its bound where a
    frontier is trimmed; an integer gamma the discretised graph (``fin.fin``).
    Raises FinplanInputError for an unknown solver, gamma <= 0, lambda < 0, epsilon < 0, a time
    limit that is not a positive number, or an instance too large for exhaustive.
    """
    if solver not in SOLVERS:
        raise FinplanInputError(f"is {solver!r}; expected one of {', '.join(SOLVERS)}", field="--solver")
    check_parameters(gamma, lam)
    check_epsilon(epsilon)
    if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                     or not math.isfinite(time_limit_s) or time_limit_s <= 0):
        raise FinplanInputError(f"is {time_limit_s!r}; expected a duration > 0 such as 30s", field="--time-limit")
    ctxs = contexts(scenario, quantiles)
    parameters: dict = {}
    if scenario.options.mode == "dynamic":
        parameters["threshold_quantiles"] = list(quantiles)
    extra: dict = {}
    start = time.perf_counter()
    if solver == "milp":
        info: dict = {}
        results = milp(ctxs, time_limit_s=time_limit_s, info=info)
        parameters["joint"] = True
        if time_limit_s is not None:
            parameters["time_limit_s"] = float(time_limit_s)
        if not info.get("proven_optimal", True):
            extra.update(proven_optimal=False, stopped=info["stopped"], mip_gap=info["mip_gap"])
    else:
        if solver == "fin":
            parameters.update(fin_parameters(gamma, lam, epsilon))
            one = lambda ctx, usage: fin(ctx, gamma, lam, usage, epsilon=epsilon)  # noqa: E731
        elif solver == "exhaustive":
            parameters["limit"] = exhaustive_limit
            one = lambda ctx, usage: exhaustive(ctx, usage, exhaustive_limit)  # noqa: E731
        else:
            one = BASELINES[solver]
        results, info = plan_sequentially(ctxs, one, fallback=solver in ("fin", "exhaustive"))
        if len(ctxs) > 1:
            extra.update(info)
    elapsed = time.perf_counter() - start
    if solver == "fin" and len(ctxs) > 1 and joint_gap and _size(ctxs) <= JOINT_GAP_SIZE:
        joint_info: dict = {}
        joint = milp(ctxs, time_limit_s=time_limit_s, info=joint_info)
        served = sum(r.feasible for r in joint)
        energy = sum(r.evaluation.energy_j for r in joint if r.feasible)
        mine = sum(r.evaluation.energy_j for r in results if r.feasible)
        mine_served = sum(r.feasible for r in results)
        extra["joint_optimum"] = {
            "solver": "milp", "served": served, "energy_j": energy,
            "gap": (None if served != mine_served or energy <= 0 else
                    (0.0 if is_close(mine, energy) else (mine - energy) / energy)),
        }
        if not joint_info.get("proven_optimal", True):
            extra["joint_optimum"].update(proven_optimal=False, stopped=joint_info["stopped"],
                                          mip_gap=joint_info["mip_gap"])
    return SolveResult(solver, parameters, results, elapsed, extra)


def _size(ctxs) -> int:
    total = 0
    for ctx in ctxs:
        links = int(ctx.table.has_link.sum())
        for i in ctx.accurate():
            total += ctx.chain(i).n_blocks * links
    return total
