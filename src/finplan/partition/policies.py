"""Exit policies: which exit is final, which earlier exits are active and at what threshold.

Static mode (the paper's) has one policy per exit: every input leaves there. Dynamic mode adds
confidence thresholds for the earlier exits, chosen on a grid of calibration quantiles of the
card's per-sample scores; each threshold sits strictly between two neighbouring calibration
scores (``threshold_below``), so the exit rates the planner predicts are the ones the runtime
gives. ``costs.chain_for`` lays a policy out along the blocks it deploys.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from finplan.partition.problem import ModelCard

DEFAULT_QUANTILES = (0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class ExitPolicy:
    """Which exit is final, which earlier exits are active (with thresholds), and what follows.

    ``exit_rates[i]`` is the fraction of inputs leaving at exit i (zero for inactive exits).
    """
    final_exit: int
    active: tuple[tuple[int, float], ...]
    exit_rates: tuple[float, ...]
    accuracy: float

    def thresholds(self, card: ModelCard) -> dict[str, float]:
        return {card.exits[i].name: thr for i, thr in self.active}


def static_policies(card: ModelCard) -> list[ExitPolicy]:
    """One exit policy per exit: every input leaves there (static mode).

    Parameters
    ----------
    card : ModelCard
        The model.

    Returns
    -------
    list of ExitPolicy
        In card order, each with its card accuracy.

    Notes
    -----
    Complexity: O(H^2).
    """
    policies = []
    for e, exit_ in enumerate(card.exits):
        rates = [0.0] * len(card.exits)
        rates[e] = 1.0
        policies.append(ExitPolicy(e, (), tuple(rates), exit_.accuracy))
    return policies


# Half the smallest gap between two calibration scores that a threshold may sit in. Above
# verify's default --atol (1e-5): a difference it accepts between the chained parts and the
# whole model cannot move a score across a threshold.
THRESHOLD_MARGIN = 1e-5


def threshold_grid(confidence: np.ndarray, quantiles=DEFAULT_QUANTILES) -> list[float]:
    """Candidate thresholds of one exit.

    At each calibration quantile (an observed score), the threshold that lets the same samples
    leave but sits strictly between two neighbouring scores (``threshold_below``), so float
    noise cannot flip a sample's decision.

    Parameters
    ----------
    confidence : ndarray
        The exit's calibration scores.
    quantiles : sequence of float, optional
        The quantiles to take.

    Returns
    -------
    list of float
        Distinct thresholds, in increasing order.

    Notes
    -----
    Complexity: O(n log n) for n samples.
    """
    if confidence.size == 0:
        return []
    values = np.quantile(confidence, quantiles, method="lower")
    distinct = np.unique(np.asarray(confidence, dtype=float))
    return sorted({threshold_below(distinct, float(v)) for v in values})


def threshold_below(distinct: np.ndarray, score: float, margin: float = THRESHOLD_MARGIN) -> float:
    """The threshold just below ``score`` that no sample sits on.

    The midpoint between ``score`` (one of the sorted ``distinct`` scores) and the next lower
    score, so exactly the samples scoring >= ``score`` reach the threshold (``confidence >=
    threshold``), and none sits on it. Scores closer than ``2 * margin`` to their lower
    neighbour count as one (saturated softmax outputs differ by float noise): the threshold
    goes below the whole run, at least ``margin`` from every score. Below the lowest score:
    half of it.

    Parameters
    ----------
    distinct : ndarray
        The distinct calibration scores, sorted.
    score : float
        One of them.
    margin : float, optional
        The least distance to any score.

    Returns
    -------
    float

    Notes
    -----
    Complexity: O(log n + run length) for n distinct scores.
    """
    i = int(np.searchsorted(distinct, score))
    while i > 0 and distinct[i] - distinct[i - 1] < 2 * margin:
        i -= 1
    lower = float(distinct[i - 1]) if i > 0 else 0.0
    return (lower + float(distinct[i])) / 2


def policy_from_thresholds(card: ModelCard, final_exit: int, thresholds: dict[int, float]) -> ExitPolicy:
    """Exit rates and accuracy of one threshold setting, from the per-sample calibration scores.

    Exits without calibration scores cannot be early exits. A final exit without scores
    contributes its card accuracy for the inputs that reach it.

    Parameters
    ----------
    card : ModelCard
        A card with per-sample calibration.
    final_exit : int
        The exit every remaining input leaves at.
    thresholds : dict of int to float
        Early exit index -> confidence threshold.

    Returns
    -------
    ExitPolicy

    Notes
    -----
    Complexity: O(n H) for n calibration samples.
    """
    cal = card.calibration
    n_exits = len(card.exits)
    if cal is None or cal.labels is None or len(cal.labels) == 0:
        rates = [0.0] * n_exits
        rates[final_exit] = 1.0
        return ExitPolicy(final_exit, (), tuple(rates), card.exits[final_exit].accuracy)
    labels = cal.labels
    n = len(labels)
    remaining = np.ones(n, dtype=bool)
    correct = 0.0
    rates = [0.0] * n_exits
    active = []
    for i in range(final_exit):
        if i not in thresholds:
            continue
        name = card.exits[i].name
        leave = remaining & (cal.confidence[name] >= thresholds[i])
        rates[i] = float(leave.sum()) / n
        correct += float((cal.predicted[name][leave] == labels[leave]).sum())
        remaining &= ~leave
        active.append((i, float(thresholds[i])))
    final_name = card.exits[final_exit].name
    reach = float(remaining.sum())
    rates[final_exit] = reach / n
    if final_name in cal.predicted:
        correct += float((cal.predicted[final_name][remaining] == labels[remaining]).sum())
    else:
        correct += reach * card.exits[final_exit].accuracy
    return ExitPolicy(final_exit, tuple(active), tuple(rates), correct / n)


def dynamic_policies(card: ModelCard, quantiles=DEFAULT_QUANTILES) -> list[ExitPolicy]:
    """Every (final exit, thresholds of earlier exits) on the grid (dynamic mode).

    Parameters
    ----------
    card : ModelCard
        A card with a calibration.
    quantiles : sequence of float, optional
        The calibration quantiles of each exit's grid (plus "disabled" per exit).

    Returns
    -------
    list of ExitPolicy
        The grid's policies, or every row of a calibration table.

    Notes
    -----
    Complexity: O(n H G^(H-1)) for n samples and G thresholds per exit.
    """
    cal = card.calibration
    if cal is None:
        return static_policies(card)
    if cal.table and not cal.confidence:
        return table_policies(card)
    policies = []
    for e in range(len(card.exits)):
        options = []
        for i in range(e):
            name = card.exits[i].name
            grid = threshold_grid(cal.confidence[name], quantiles) if name in cal.confidence else []
            options.append([None] + grid)
        for combo in itertools.product(*options):
            thresholds = {i: thr for i, thr in enumerate(combo) if thr is not None}
            policies.append(policy_from_thresholds(card, e, thresholds))
    return policies


def table_policies(card: ModelCard) -> list[ExitPolicy]:
    """The exit policies of a card whose calibration is a table (threshold -> exit rates).

    Parameters
    ----------
    card : ModelCard
        A card with ``calibration.table`` rows.

    Returns
    -------
    list of ExitPolicy
        One per table row, in row order.

    Notes
    -----
    Complexity: O(rows x exits).
    """
    index = {e.name: i for i, e in enumerate(card.exits)}
    policies = []
    for row in card.calibration.table:
        named = [index[k] for k, v in row["exit_rates"].items() if v > 0] or [len(card.exits) - 1]
        final = max(named)
        rates = [0.0] * len(card.exits)
        for k, v in row["exit_rates"].items():
            rates[index[k]] = float(v)
        active = tuple(sorted((index[k], float(v)) for k, v in row["thresholds"].items()
                              if v is not None and index[k] < final))
        policies.append(ExitPolicy(final, active, tuple(rates), float(row["accuracy"])))
    return policies


def policies_for(card: ModelCard, mode: str, quantiles=DEFAULT_QUANTILES) -> list[ExitPolicy]:
    """The exit policies of ``card`` in ``mode``.

    Parameters
    ----------
    card : ModelCard
        The model.
    mode : {"static", "dynamic"}
        The scenario's mode.
    quantiles : sequence of float, optional
        Dynamic mode: the calibration quantiles.

    Returns
    -------
    list of ExitPolicy
        ``static_policies`` or ``dynamic_policies``.

    Notes
    -----
    Complexity: that of the one called.
    """
    return dynamic_policies(card, quantiles) if mode == "dynamic" else static_policies(card)
