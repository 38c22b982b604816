"""The runtime's lean paths keep the decisions exact: the batch-of-one scorers are the profiler's
float64 scoring bit for bit, a threshold equal to a sample's score exits it at any batch size,
the input check is cached per shape but never skipped for a new one."""
from __future__ import annotations

import numpy as np
import pytest

from finplan.deploy.executor import LocalExecutor
from finplan.deploy.node_runtime import NodeRuntime
from finplan.errors import FinplanInputError
from finplan.exit_policy import (
    max_probability, max_probability_one, max_softmax, max_softmax_one, max_softmax_reported,
)
from finplan.profiler.calibration import softmax_scores


def _rows(seed=0, count=3000):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        width = int(rng.integers(2, 40))
        scale = float(rng.choice([1e-3, 1.0, 10.0, 300.0]))
        row = (rng.standard_normal((1, width)) * scale).astype(np.float32)
        if rng.uniform() < 0.1:
            row[0, int(rng.integers(width))] = row.max()  # a tie for the top class
        yield row


def test_batch_of_one_scorers_are_the_profilers_bit_for_bit():
    for row in _rows():
        confidence, _entropy, predicted = softmax_scores(row)
        one = max_softmax_one(row)
        assert one == (float(confidence[0]), int(predicted[0]))
        batch = max_softmax(row)
        assert one == (float(batch[0][0]), int(batch[1][0]))
        probabilities = np.abs(row) / np.abs(row).sum()
        p_conf, _e, p_pred = softmax_scores(probabilities, probabilities=True)
        assert max_probability_one(probabilities) == (float(p_conf[0]), int(p_pred[0]))
        assert max_probability_one(probabilities) == tuple(v.item() for v in max_probability(probabilities))
        # the final exit's reported confidence: same class, same value to rounding
        reported = max_softmax_reported(row)
        assert reported[1] == int(predicted[0]) and reported[0] == pytest.approx(float(confidence[0]), rel=1e-12)


def test_reported_confidence_of_a_non_finite_row_falls_back():
    row = np.array([[np.inf, 0.0, 1.0]], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        confidence, predicted = max_softmax(row)
        got = max_softmax_reported(row)
    assert got[1] == int(predicted[0]) and (np.isnan(got[0]) and np.isnan(confidence[0]) or got[0] == confidence[0])


@pytest.mark.parametrize("batch_size", [1, 5, 96])
def test_a_threshold_equal_to_a_score_exits_that_sample(plan_factory, tmp_path, tiny, inputs, whole_model_outputs,
                                                        batch_size):
    """Ties exit, at batch 1 (scalar path) as in batches: the threshold is sample 3's exact score."""
    from finplan.deploy.emit import emit

    confidence, _entropy, _predicted = softmax_scores(whole_model_outputs["exit1"])
    threshold = float(confidence[3])
    out = tmp_path / f"tie-{batch_size}"
    emit(plan_factory(["device", "device", "edge"], thresholds={"exit1": threshold}), tiny[0], out)
    m = LocalExecutor(out).run(inputs[0], batch_size=batch_size)
    assert m.exit_names == ["exit1" if c >= threshold else "exit2" for c in confidence]
    assert m.exit_names[3] == "exit1"
    early = np.array([name == "exit1" for name in m.exit_names])
    np.testing.assert_array_equal(m.confidences[early], confidence[early])  # decided scores: exact


def test_batch_one_and_batch_answers_agree(deployments, inputs):
    folder, _, _ = deployments["two-dynamic"]
    x = inputs[0][:40]
    one = LocalExecutor(folder).run(x, batch_size=1)
    many = LocalExecutor(folder).run(x, batch_size=40)
    assert one.exit_names == many.exit_names
    np.testing.assert_array_equal(one.predictions, many.predictions)
    np.testing.assert_allclose(one.confidences, many.confidences, rtol=1e-12, atol=0)
    assert one.block_samples == many.block_samples and one.link_bytes == many.link_bytes
    assert one.node_calls["device"] == 40 and many.node_calls["device"] == 1


def test_input_check_is_cached_per_shape_but_never_skipped(deployments, inputs):
    folder, _, _ = deployments["one-dynamic"]
    runtime = NodeRuntime(folder / "device")
    x = inputs[0]
    runtime.process(x[:1], entry="x")
    runtime.process(x[1:2], entry="x")
    with pytest.raises(FinplanInputError, match="float64"):
        runtime.process(x[:1].astype(np.float64), entry="x")
    with pytest.raises(FinplanInputError, match=r"\(1, 1, 9, 8\)"):
        runtime.process(np.zeros((1, 1, 9, 8), np.float32), entry="x")
    with pytest.raises(FinplanInputError, match="numpy array"):
        runtime.process(x[:1].tolist(), entry="x")
    with pytest.raises(FinplanInputError, match="no entry"):
        runtime.process(x[:1], entry="nope")
    assert runtime.process(x[:1], entry="x").batch_size == 1


def test_node_result_arrays_match_its_lists(deployments, inputs):
    folder, _, _ = deployments["three-dynamic"]
    runtime = NodeRuntime(folder / "device")
    result = runtime.process(inputs[0][:16], entry="x")
    assert result.predictions.dtype == np.int64 and result.predictions.tolist() == result.prediction_list
    np.testing.assert_array_equal(result.confidences, np.asarray(result.confidence_list, dtype=np.float64))
    np.testing.assert_array_equal(result.exit_offset_s, np.asarray(result.offset_list, dtype=np.float64))
    forwarded = [i for i, name in enumerate(result.exit_names) if name is None]
    assert result.forward.indices.tolist() == forwarded
    assert all(result.prediction_list[i] == -1 and np.isnan(result.confidence_list[i]) for i in forwarded)
