"""One entry point for every solver, for one or several applications."""
from __future__ import annotations

import math
import time
from typing import Mapping

from finplan.errors import FinplanInputError
from finplan.partition.baselines import BASELINES
from finplan.partition.context import SolveResult, contexts
from finplan.partition.costs import is_close
from finplan.partition.policies import DEFAULT_QUANTILES
from finplan.partition.exhaustive import EXHAUSTIVE_LIMIT, exhaustive
from finplan.partition.explain import policy_of
from finplan.partition.fin import (
    DEFAULT_EPSILON, DEFAULT_GAMMA, DEFAULT_LAMBDA, check_epsilon, check_parameters, fin, fin_parameters,
)
from finplan.partition.joint import JointInfo, joint_fin, lower_bound
from finplan.partition.milp import milp
from finplan.partition.multi import plan_sequentially
from finplan.partition.problem import Scenario

SOLVERS = ("fin", "fin-sequential", "exhaustive", "milp", "mcp", "device-only", "cloud-only", "single-cut",
           "min-latency")
# How messages name solve()'s parameters unless the caller says otherwise (``fields``).
PARAMETER_FIELDS = {"solver": "solver", "gamma": "gamma", "lam": "lambda", "epsilon": "epsilon",
                    "time_limit_s": "time_limit_s"}
# The joint MILP is run to report FIN's gap only below this many applications x policies x blocks x links.
JOINT_GAP_SIZE = 200_000


def solve(scenario: Scenario, solver: str = "fin", *, gamma: int = DEFAULT_GAMMA, lam: float = DEFAULT_LAMBDA,
          quantiles=DEFAULT_QUANTILES, exhaustive_limit: int = EXHAUSTIVE_LIMIT, joint_gap: bool = False,
          time_limit_s: float | None = None, epsilon: float = DEFAULT_EPSILON, warm_start: bool = True,
          bound: bool = True, fields: Mapping[str, str] | None = None) -> SolveResult:
    """Plan every application of ``scenario`` with ``solver`` (one of SOLVERS).

    With one application every solver solves it alone. With several: fin plans them jointly
    (``joint.joint_fin``: FIN priced by the shared capacities, an integer master, an exact
    check), fin-sequential, exhaustive and the baselines one by one on residual capacity (see
    multi.py), milp jointly and exactly, warm-started from joint FIN's plan unless
    ``warm_start`` is False (its solve time then includes FIN's).

    Parameters
    ----------
    scenario : Scenario
        The network, the applications and the options (``documents.load_scenario``).
    solver : str, optional
        One of SOLVERS (default "fin").
    gamma : int or None, optional
        FIN: None (default) runs its exact label DP; an integer the discretised graph (``fin.fin``).
    lam : float, optional
        FIN's proximity pruning (>= 0).
    quantiles : sequence of float, optional
        Dynamic mode: the quantiles of the calibration scores the thresholds are drawn from.
    exhaustive_limit : int, optional
        The most placements the exhaustive solver enumerates.
    joint_gap : bool, optional
        With fin and several applications, also run the joint MILP (warm-started) when the
        instance is small enough, for ``extra["joint_optimum"]``.
    time_limit_s : float or None, optional
        (> 0, default None: no limit) bounds every MILP run (the milp solver and fin's joint-gap
        reference); a run stopped by it returns its best plan, noted "not proven optimal (time
        limit), MIP gap X%" (``extra["proven_optimal"]`` False, ``extra["mip_gap"]``), or no plan
        with the reason "MILP time limit reached before any feasible plan was found".
    epsilon : float, optional
        The label DP's bound where a frontier is trimmed (>= 0).
    warm_start : bool, optional
        milp with several applications: start HiGHS from joint FIN's plan.
    bound : bool, optional
        Every multi-application plan gets ``extra["lower_bound"]`` unless this is False: the
        Lagrangian lower bound on the energy of any plan serving as many applications, the gap
        to it, and an upper bound on the applications that can be served (``joint.lower_bound``;
        computed after the solver's clock stops for the solvers other than fin, for which it is
        part of the method).
    fields : mapping of str to str, optional
        The parameter names (solver, gamma, lam, epsilon, time_limit_s) as the caller's user
        knows them, for messages (the CLI passes its options); default: the parameter names.

    Returns
    -------
    SolveResult
        One AppResult per application in scenario order, the parameters, the solve time and
        ``extra`` (bounds, gaps, the sequential planner's order).

    Raises
    ------
    FinplanInputError
        For an unknown solver, gamma <= 0, lambda < 0, epsilon < 0, a time limit that is not a
        positive number, or an instance too large for exhaustive.

    Notes
    -----
    Complexity: that of the solver chosen (``fin.fin``, ``exhaustive.exhaustive``,
    ``milp.milp``, ``joint.joint_fin``, ``baselines``), plus with several applications one
    ``joint.lower_bound``.
    """
    name = {**PARAMETER_FIELDS, **(fields or {})}
    if solver not in SOLVERS:
        raise FinplanInputError(f"is {solver!r}; expected one of {', '.join(SOLVERS)}", field=name["solver"])
    check_parameters(gamma, lam, gamma_field=name["gamma"], lambda_field=name["lam"])
    check_epsilon(epsilon, name["epsilon"])
    if time_limit_s is not None and (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float))
                                     or not math.isfinite(time_limit_s) or time_limit_s <= 0):
        raise FinplanInputError(f"is {time_limit_s!r}; expected a duration > 0 such as 30s",
                                field=name["time_limit_s"])
    ctxs = contexts(scenario, quantiles)
    parameters: dict = {}
    if scenario.options.mode == "dynamic":
        parameters["threshold_quantiles"] = list(quantiles)
    extra: dict = {}
    start = time.perf_counter()
    joint: JointInfo | None = None
    several = len(ctxs) > 1
    if solver == "milp":
        info: dict = {}
        start_plan = None
        if several and warm_start:
            start_plan = _start_of(ctxs, joint_fin(ctxs, gamma, lam))
            parameters["warm_start"] = "fin"
        results = milp(ctxs, time_limit_s=time_limit_s, info=info, start=start_plan)
        parameters["joint"] = True
        if time_limit_s is not None:
            parameters["time_limit_s"] = float(time_limit_s)
        if not info.get("proven_optimal", True):
            extra.update(proven_optimal=False, stopped=info["stopped"], mip_gap=info["mip_gap"])
    elif solver == "fin" and several:
        parameters.update(fin_parameters(gamma, lam, epsilon), joint=True)
        joint = JointInfo()
        results = joint_fin(ctxs, gamma, lam, joint)
    else:
        if solver in ("fin", "fin-sequential"):
            parameters.update(fin_parameters(gamma, lam, epsilon))
            one = lambda ctx, usage: fin(ctx, gamma, lam, usage, epsilon=epsilon)  # noqa: E731
        elif solver == "exhaustive":
            parameters["limit"] = exhaustive_limit
            one = lambda ctx, usage: exhaustive(ctx, usage, exhaustive_limit, field=name["solver"])  # noqa: E731
        else:
            one = BASELINES[solver]
        results, info = plan_sequentially(ctxs, one, fallback=solver in ("fin", "fin-sequential", "exhaustive"))
        if several:
            extra.update(info)
    elapsed = time.perf_counter() - start
    if several and bound:
        served = sum(r.feasible for r in results)
        energy = sum(r.evaluation.energy_j for r in results if r.feasible)
        if joint is None:
            joint = lower_bound(ctxs, results, gamma, lam)
        extra["lower_bound"] = joint.extra(served, energy)
    if solver == "fin" and several and joint_gap and _size(ctxs) <= JOINT_GAP_SIZE:
        joint_info: dict = {}
        reference = milp(ctxs, time_limit_s=time_limit_s, info=joint_info, start=_start_of(ctxs, results))
        served = sum(r.feasible for r in reference)
        energy = sum(r.evaluation.energy_j for r in reference if r.feasible)
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


def _start_of(ctxs, results) -> list:
    """A plan as the MILP's starting solution: per application (policy index, node indices) or None."""
    out = []
    for ctx, r in zip(ctxs, results):
        if not r.feasible:
            out.append(None)
            continue
        ev = r.evaluation
        out.append((policy_of(ctx, ev), [ctx.network.index(n) for n in ev.placement]))
    return out


def _size(ctxs) -> int:
    total = 0
    for ctx in ctxs:
        links = int(ctx.table.has_link.sum())
        for i in ctx.accurate():
            total += ctx.chain(i).n_blocks * links
    return total
