"""Class 5: dynamic thresholds never sit on a calibration sample: strictly between neighbouring
scores (at least THRESHOLD_MARGIN from every one), with the exit rates of the score they stand
for, so float noise between the chained parts and the whole model cannot flip a decision."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hardening_helpers import cli

from finplan.partition.policies import THRESHOLD_MARGIN, threshold_below, threshold_grid


def _scores(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0.1, 1.0, 500)
    if kind == "saturated":  # float32 softmax outputs near 1 differ by ~6e-8: runs of near-equal scores
        return np.concatenate([1.0 - rng.integers(0, 40, 300) * 6e-8, rng.uniform(0.2, 0.99, 200)]).astype(np.float32)
    if kind == "ties":  # many samples with exactly the same score
        return np.repeat(rng.uniform(0.3, 1.0, 20), 25)
    return rng.beta(8, 1, 1000)  # most scores high, as a trained exit's


@pytest.mark.parametrize("kind", ["uniform", "saturated", "ties", "beta"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_threshold_is_within_1e_6_of_a_calibration_score(kind, seed):
    scores = _scores(kind, seed).astype(float)
    grid = threshold_grid(scores)
    assert grid
    for threshold in grid:
        assert np.min(np.abs(scores - threshold)) >= 1e-6, (threshold, kind)
        assert np.min(np.abs(scores - threshold)) >= THRESHOLD_MARGIN * (1 - 1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_where_neighbours_are_apart_the_exit_rate_is_the_sample_valued_thresholds(seed):
    """At each quantile score v with a clear gap below it, exactly the samples >= v leave."""
    scores = np.random.default_rng(seed).uniform(0, 1, 300)
    distinct = np.unique(scores)
    gaps = np.diff(distinct)
    for i in np.flatnonzero(gaps >= 2 * THRESHOLD_MARGIN)[:50] + 1:
        v = float(distinct[i])
        t = threshold_below(distinct, v)
        assert distinct[i - 1] < t < v
        assert t == pytest.approx((distinct[i - 1] + v) / 2)
        assert np.array_equal(scores >= t, scores >= v)


def test_a_run_of_near_equal_scores_counts_as_one():
    distinct = np.array([0.5, 0.9, 0.9 + 4e-6, 0.9 + 8e-6, 0.95])
    assert threshold_below(distinct, 0.9 + 8e-6) == pytest.approx(0.7)  # below the whole run
    assert threshold_below(distinct, 0.5) == pytest.approx(0.25)           # below the lowest: half of it
    assert threshold_below(distinct, 0.95) == pytest.approx((0.9 + 8e-6 + 0.95) / 2)


def test_the_planned_thresholds_sit_between_the_cards_scores_and_run_matches_the_plan(capsys, world):
    card = json.loads((world / "model.card.json").read_text())
    plan = json.loads((world / "plan.json").read_text())
    app = plan["applications"][0]
    assert app["thresholds"], "the world's plan should use an early exit"
    scores = {e["name"]: np.asarray(e["confidence"]) for e in card["calibration"]["exits"]}
    for name, threshold in app["thresholds"].items():
        assert np.min(np.abs(scores[name] - threshold)) >= 1e-6
    # the deployment's exit rates on the calibration data are the plan's, exactly
    code, out, err = cli(capsys, "run", world / "deploy", "--data", "embedded", "--json")
    assert code == 0, err
    report = json.loads(out)
    planned = app["predicted"]["exit_rates"]
    assert report["samples"] == card["calibration"]["samples"]
    for name, rate in planned.items():
        assert report["exit_rates"].get(name, 0.0) == pytest.approx(rate, abs=1e-12), (name, report["exit_rates"])
    code, out, err = cli(capsys, "verify", world / "deploy", "--model", world / "model.onnx", "--data", "embedded",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["decision_mismatches"] == 0
