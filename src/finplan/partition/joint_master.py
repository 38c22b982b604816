"""The master problem of joint FIN (``joint.py``): per class, how many applications use each
column, within the shared capacities; a linear program (duals price the resources) or an
integer one (the plan), solved by HiGHS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finplan.partition import milp  # milp.new_highs looked up per call: one HiGHS set-up for both

# Integer master: relative MIP gap and branch-and-bound node budget (both deterministic).
MASTER_MIP_GAP = 1e-6
MASTER_MIP_NODES = 300


@dataclass
class Master:
    x: list[np.ndarray]  # per class: value per column
    objective: float
    prices: np.ndarray  # per resource, >= 0
    class_duals: np.ndarray  # per class, <= 0 (convexity rows sum <= n_c)
    served_dual: float  # >= 0 (phase 2 row sum >= S)


def solve_master(classes, resources, phase: str, served: int = 0, integer: bool = False,
                  slack: float = 0.0) -> Master | None:
    """The master over the current columns.

    Parameters
    ----------
    classes : list of AppClass
        The classes with their columns.
    resources : list of Resource
        The shared resources.
    phase : {"served", "energy"}
        "served" maximises the applications served, "energy" minimises energy serving at least
        ``served``.
    served : int, optional
        The phase "energy" floor.
    integer : bool, optional
        An integer program (the plan) instead of the LP (duals).
    slack : float, optional
        Relative capacity kept free below each shared limit (HiGHS's tolerance).

    Returns
    -------
    Master or None
        Column values per class, the objective, resource prices and class duals; None when
        there are no columns or HiGHS finds no solution.

    Notes
    -----
    One LP (or a MIP stopped at MASTER_MIP_GAP or MASTER_MIP_NODES) over the columns: O(C R)
    to build for C columns and R shared resources, plus HiGHS's solve.
    """
    import highspy

    highs = milp.new_highs()
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
    return Master(out, float(highs.getInfo().objective_function_value), prices, class_duals, served_dual)
