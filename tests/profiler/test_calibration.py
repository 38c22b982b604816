"""Exit scores and the threshold table: synthetic checks, then the embedded B-AlexNet."""
import numpy as np
import pytest

from finplan.profiler import calibration as calib


def test_softmax_scores_of_logits_and_probabilities():
    logits = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    confidence, entropy, predicted = calib.softmax_scores(logits)
    assert confidence[0] == pytest.approx(0.5) and entropy[0] == pytest.approx(1.0)
    assert confidence[1] > 0.99 and entropy[1] < 0.01
    assert list(predicted) == [0, 0, 1]
    probs = np.array([[0.2, 0.8]])
    assert calib.softmax_scores(probs, probabilities=True)[0][0] == pytest.approx(0.8)


def _scores():
    # 4 samples, exits a (early) and b (final).
    confidence = np.array([[0.95, 0.6, 0.8, 0.3], [0.99, 0.9, 0.7, 0.6]])
    predicted = np.array([[1, 0, 2, 2], [1, 1, 2, 0]])
    labels = np.array([1, 1, 0, 0])
    return calib.ExitScores(["a", "b"], confidence, np.zeros_like(confidence), predicted, labels)


def test_policy_outcome_by_hand():
    row = calib.policy_outcome(_scores(), [0.75], flops_to_exit=[10.0, 30.0])
    # a takes samples 0 and 2 (0.95, 0.8 >= 0.75); b takes 1 and 3.
    assert row["exit_rates"] == {"a": 0.5, "b": 0.5}
    assert row["accuracy"] == pytest.approx(0.75)  # sample 2 wrong at a (2 vs 0); 0, 1, 3 right
    assert row["expected_flops"] == pytest.approx(20.0)
    assert row["thresholds"] == {"a": 0.75}


def test_threshold_table_rates_move_with_the_threshold():
    table = calib.threshold_table(_scores(), [10.0, 30.0], thresholds=(0.5, 0.75, 0.99))
    early = [row["exit_rates"]["a"] for row in table]
    assert early == sorted(early, reverse=True)
    for row in table:
        assert sum(row["exit_rates"].values()) == pytest.approx(1.0)


def test_flops_to_exit_counts_every_head_on_the_way():
    costs = calib.flops_to_exit({"b1": 100, "b2": 200}, {"e1": 5, "e2": 7}, {"e1": "b1", "e2": "b2"},
                                ["e1", "e2"], ["b1", "b2"])
    assert costs == [105.0, 312.0]


def test_embedded_exit_scores_and_table(embedded_path):
    import onnxruntime as ort

    from finplan.contract import load_branchy_model
    from finplan.data import load_data

    model, contract = load_branchy_model(embedded_path)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [e.output for e in contract.exits]
    data = load_data("embedded", (1, 32, 32), num_classes=10)
    scores = calib.collect_scores(lambda x: session.run(outputs, {contract.input: x}), data.x, data.y,
                                  [e.name for e in contract.exits], batch_size=50)
    assert scores.confidence.shape == (3, len(data))
    accuracy = calib.exit_accuracy(scores)
    # The embedded model's README reports 0.9192 / 0.9610 at exits 1 and 2 on this split; deeper is no worse here.
    assert accuracy["exit1"] == pytest.approx(0.9192, abs=0.002)
    assert accuracy["exit2"] == pytest.approx(0.9610, abs=0.002)
    assert accuracy["exit3"] >= accuracy["exit1"]
    table = calib.threshold_table(scores, [1.0, 2.0, 3.0])
    final_rates = [row["exit_rates"]["exit3"] for row in table]
    assert final_rates == sorted(final_rates)  # a stricter threshold sends more samples to the end
    assert all(0 <= row["accuracy"] <= 1 for row in table)
    section = calib.card_section(scores, table, "embedded")
    assert [e["name"] for e in section["exits"]] == ["exit1", "exit2", "exit3"]
    assert len(section["labels"]) == section["samples"] == len(section["exits"][0]["confidence"])
