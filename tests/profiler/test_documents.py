"""The profile document is built from measurements by pure functions: fed made-up timings, they
give the numbers by hand, without a model, a session or a clock."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from finplan.exit_policy import class_probabilities, policy_of, score
from finplan.onnx_parts import Part
from finplan.profiler import documents as docs
from finplan.profiler.calibration import exit_scores, softmax_scores
from finplan.profiler.timing import PartTimes, TimingResult


def _timing(medians: dict[str, float]) -> TimingResult:
    # three runs around each median: p50 is the middle one exactly
    times = {name: PartTimes([m * 0.9, m, m * 1.2]) for name, m in medians.items()}
    return TimingResult(times, {name: True for name in medians}, rounds=3, elapsed_s=0.5, budget_s=1.0,
                        target_rel_ci=0.02)


def _part(name, kind, after=None):
    return Part(name=name, kind=kind, model=None, inputs=("x",), outputs=(name,), after=after)


BLOCKS = [_part("b1", "block"), _part("b2", "block")]
EXITS = [_part("e1", "exit", after="b1"), _part("e2", "exit", after="b2")]
MEDIANS = {"b1": 4e-3, "b2": 6e-3, "e1": 1e-3, "e2": 2e-3, docs.WHOLE: 11e-3, docs.OVERHEAD: 0.5e-3,
           docs.STAGE_PROBE: 5.5e-3}


def test_whole_model_compares_parts_with_the_whole_net_of_call_costs():
    whole = docs.whole_model_document(_timing(MEDIANS), BLOCKS, EXITS, 1e-7, None)
    assert whole["sum_of_blocks_p50_s"] == pytest.approx(10e-3)
    assert whole["sum_of_parts_p50_s"] == pytest.approx(13e-3)
    assert whole["parts_over_whole"] == pytest.approx(13 / 11)
    # four parts pay three calls more than the whole model
    assert whole["parts_over_whole_overhead_corrected"] == pytest.approx((13e-3 - 3 * 0.5e-3) / 11e-3)
    assert whole["split_check_max_abs_diff"] == 1e-7 and "energy_j" not in whole


def test_stage_overhead_is_the_stage_minus_its_parts_work():
    doc = docs.stage_overhead_document(_timing(MEDIANS), ("b1", "e1"))
    work = (4e-3 - 0.5e-3) + (1e-3 - 0.5e-3)
    assert doc["parts_work_sum_s"] == pytest.approx(work)
    assert doc["value"] == pytest.approx(5.5e-3 - work) and doc["runs"] == 3
    assert docs.stage_overhead_document(_timing(MEDIANS), None) is None
    # a stage faster than its parts' work is clipped at zero, the raw difference kept
    faster = docs.stage_overhead_document(_timing({**MEDIANS, docs.STAGE_PROBE: 1e-3}), ("b1", "e1"))
    assert faster["value"] == 0.0 and faster["difference_s"] == pytest.approx(1e-3 - work)


def test_part_document_and_energy_note():
    doc = docs.part_document(EXITS[0], {"flops": 10}, _timing(MEDIANS), {"value": 1.0})
    assert doc["name"] == "e1" and doc["after"] == "b1" and doc["flops"] == 10
    assert doc["latency_s"]["p50"] == pytest.approx(1e-3) and doc["latency_s"]["converged"] is True
    energy = docs.energy_document({"method": "rapl", "note": "n"}, "rapl", ["b1: 0.1 J/run estimated; why"])
    assert energy["note"].startswith("n; FALLBACK: rapl could not resolve b1;")
    assert docs.energy_document({"method": "rapl"}, "rapl", []) == {"method": "rapl"}


def _head(op):
    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph)


def test_one_policy_choice_for_emit_and_profiler():
    assert policy_of(_head("Softmax"), "y") == "max_probability"
    assert policy_of(_head("Identity"), "y") == "max_softmax"
    assert policy_of(_head("Softmax"), "not-there") == "max_softmax"


@pytest.mark.parametrize("policy", ["max_softmax", "max_probability"])
def test_calibration_scores_are_the_runtime_scorer(policy):
    rows = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    if policy == "max_probability":
        rows = np.abs(rows)
    confidence, entropy, predicted = exit_scores(rows, policy)
    expected_confidence, expected_predicted = score(policy, rows)
    assert np.array_equal(confidence, expected_confidence) and np.array_equal(predicted, expected_predicted)
    # the confidence is the largest class probability of the distribution the entropy is taken of
    assert np.array_equal(class_probabilities(policy, rows).max(axis=1), confidence)
    assert np.all((entropy >= 0) & (entropy <= 1))
    assert np.array_equal(softmax_scores(rows, probabilities=policy == "max_probability")[0], confidence)


def test_prepare_names_an_option_as_its_caller_does():
    from finplan.errors import FinplanInputError
    from finplan.profiler import ProfileOptions, prepare_profile

    with pytest.raises(FinplanInputError) as library:
        prepare_profile("never-read.onnx", ProfileOptions(budget_s=0))
    assert library.value.field == "budget_s"
    with pytest.raises(FinplanInputError) as cli:
        prepare_profile("never-read.onnx", ProfileOptions(budget_s=0, names={"budget_s": "--budget-s"}))
    assert cli.value.field == "--budget-s" and "expected seconds > 0" in str(cli.value)
