"""profile_model end to end (short budgets): both documents validate against the schemas."""
import pytest

from finplan.hardware_profiles import validate_card, validate_profile
from finplan.profiler import profile_model


def test_tiny_profile_validates_and_records_how(tiny_path, tiny_npz):
    stages = []
    result = profile_model(tiny_path, calib=str(tiny_npz), budget_s=0.3, energy="power-model", power_w=5.0,
                           need_card=True, progress=lambda stage, done, total: stages.append(stage))
    profile, card = result.profile, result.card
    validate_profile(profile)
    validate_card(card)
    assert {"calibration", "timing parts", "energy"} <= set(stages)
    assert [b["name"] for b in profile["blocks"]] == ["block1", "block2", "block3"]
    assert profile["whole_model"]["split_check_max_abs_diff"] <= 1e-5
    assert profile["energy"]["measured"] is False and "ESTIMATED" in profile["energy"]["note"]
    for part in profile["blocks"] + profile["exits"]:
        assert part["latency_s"]["n"] >= 10 and part["flops"] > 0
        assert part["energy_j"]["value"] == pytest.approx(5.0 * part["latency_s"]["p50"])
    assert profile["session_options"]["intra_op_threads"] >= 1
    assert profile["session_options"]["allow_spinning"] is False  # as the runtime runs its parts
    assert card["hash"] == profile["model"]["hash"]
    assert card["calibration"]["samples"] == 40


def test_stage_overhead_is_measured_on_a_fused_first_stage(tiny_path):
    """stage_overhead_s: the runtime's stage code on block1 + exit1 fused, minus those parts'
    work (median less onnxruntime's per-call cost, all from the same rounds), clipped at 0,
    with how it was measured."""
    profile = profile_model(tiny_path, budget_s=0.3, energy="power-model", power_w=5.0).profile
    validate_profile(profile)
    overhead = profile["stage_overhead_s"]
    assert overhead["method"] == "runtime-stage-probe" and overhead["measured"] is True
    assert overhead["probe_parts"] == ["block1", "exit1"]
    call_s = overhead["part_call_overhead_s"]
    assert call_s == profile["whole_model"]["call_overhead_p50_s"] and call_s > 0
    p50 = {part["name"]: part["latency_s"]["p50"] for part in profile["blocks"] + profile["exits"]}
    assert overhead["parts_p50_sum_s"] == pytest.approx(p50["block1"] + p50["exit1"], rel=1e-12)
    work = max(p50["block1"] - call_s, 0.0) + max(p50["exit1"] - call_s, 0.0)
    assert overhead["parts_work_sum_s"] == pytest.approx(work, rel=1e-12)
    assert overhead["difference_s"] == pytest.approx(overhead["stage_p50_s"] - work, rel=1e-9)
    assert overhead["value"] == max(overhead["difference_s"], 0.0)
    assert overhead["runs"] >= 10


def test_embedded_profile_and_card(embedded_path):
    result = profile_model(embedded_path, calib="embedded", budget_s=1.0, energy="power-model", idle_w=1.0,
                           busy_w=4.0, need_card=True, threads=1)
    validate_profile(result.profile)
    card = validate_card(result.card)
    assert [b["name"] for b in card["blocks"]] == ["block1", "block2", "block3", "block4", "block5"]
    calibration = card["calibration"]
    assert calibration["score"] == "max_softmax" and calibration["samples"] == 359
    assert len(calibration["table"]) >= 5 and "expected_flops" in calibration["table"][0]
    # Per-part split equals the whole model on real data.
    assert result.profile["whole_model"]["split_check_max_abs_diff"] <= 1e-5
    assert result.summary["timing_input"].startswith("first 1 calibration sample")


def test_the_thread_count_is_chosen_by_measurement_unless_given(tiny_path):
    from finplan.profiler.timing import default_threads, thread_candidates

    given = profile_model(tiny_path, budget_s=0.2, energy="power-model", power_w=5.0, threads=1).profile
    assert given["session_options"]["intra_op_threads"] == 1 and "threads_choice" not in given["session_options"]
    if default_threads() == 1:
        pytest.skip("one core: nothing to choose")
    chosen = profile_model(tiny_path, budget_s=0.5, energy="power-model", power_w=5.0).profile
    validate_profile(chosen)
    options = chosen["session_options"]
    tried = options["threads_choice"]["whole_model_p50_s"]
    assert [int(k) for k in tried] == thread_candidates(default_threads())
    fastest = min(tried.values())
    assert tried[str(options["intra_op_threads"])] <= 1.03 * fastest
    assert all(int(k) >= options["intra_op_threads"] or v > 1.03 * fastest for k, v in tried.items())
