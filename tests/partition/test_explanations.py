"""Why an application has no plan, as every solver says it: true (no gamma advice when no plan
exists, no "left out" when it cannot fit even alone), naming the real cause, said once."""
from __future__ import annotations

import json
import re

import pytest

from finplan.partition.context import contexts
from finplan.partition.evaluate import Usage
from finplan.partition.fin import fin
from finplan.partition.documents import load_scenario
from finplan.partition.solve import solve
from partition_helpers import MULTI, PAPER
from partition_helpers import run, shortcut

ALEXNET = PAPER / "b-alexnet.json"


def _scenario(tmp_path, apps: list[dict]):
    doc = {"schema": "finplan.scenario/1", "network": str(MULTI / "network.yaml"), "applications": apps,
           "options": {"mode": "static"}}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(doc))
    return path


def _app(name, model, source, latency, accuracy, rate):
    return {"name": name, "model": str(PAPER / f"{model}.json"), "source": source, "max_latency_s": latency,
            "min_accuracy": accuracy, "rate_hz": rate}


OTHERS = [_app("scenes", "b-resnet", "phone-b", "8ms", 0.90, 700),
          _app("digits", "b-lenet", "camera", "2ms", 0.95, 700)]


@pytest.fixture
def shared_phone(tmp_path):
    """Two B-AlexNet applications on phone-a at 250 Hz: the second cannot fit next to the first
    (block1 alone would take phone-a to 118% of the time), though each fits alone."""
    return _scenario(tmp_path, [_app("photos", "b-alexnet", "phone-a", "12ms", 0.80, 250),
                                _app("photos2", "b-alexnet", "phone-a", "12ms", 0.80, 250)] + OTHERS)


@pytest.mark.parametrize("gamma", [1000, 100000])
def test_fin_gives_no_gamma_advice_when_no_plan_fits_the_residual_capacity(shared_phone, gamma):
    scenario = load_scenario(shared_phone)
    for solver in ("exhaustive", "milp"):  # the exact solvers agree: photos2 has no plan
        assert [r.feasible for r in solve(scenario, solver).apps] == [True, False, True, True]
    joint = solve(scenario, "fin", gamma=gamma).apps[1]  # planned jointly: the MILP's wording
    assert not joint.feasible and "--gamma" not in joint.reason and "--solver milp" not in joint.reason
    assert "not next to the other applications" in joint.reason and "phone-a would be busy" in joint.reason
    result = solve(scenario, "fin-sequential", gamma=gamma)
    reason = result.apps[1].reason
    assert not result.apps[1].feasible
    assert "--gamma" not in reason and "within the latency limit exists" not in reason, reason
    assert "--solver milp" not in reason, reason  # the explanation proves there is none
    # the capacity reason, naming the node and what the other applications take
    assert reason.startswith("phone-a would be busy 230.8% of the time, over its max_utilization 80% (66.66% taken "
                             "by the other applications + block1 2.056 ms, "), reason
    assert ("with only block1 on it, phone-a would be busy 118.1% of the time, over its max_utilization 80% (66.66% "
            "taken by the other applications + block1 2.056 ms x 250 Hz), and first_block_at_source keeps block1 "
            "there") in reason


def test_suggest_gamma_counts_the_other_applications(shared_phone):
    from finplan.partition.explain import explain, suggest_gamma

    ctx = contexts(load_scenario(shared_phone))[1]
    taken = Usage(node_utilization={"phone-a": 0.6666})
    assert suggest_gamma(ctx, 1000, taken) is None
    assert suggest_gamma(ctx, 1000) is not None  # alone a placement exists: the advice stays possible
    assert explain(ctx, taken).proven and explain(ctx, taken).witness is None


def test_fin_still_suggests_a_gamma_when_a_plan_exists(paper_network, paper_cards):
    from partition_helpers import paper_ctx

    ctx = paper_ctx(paper_network, paper_cards["b-alexnet"], 0.005, 0.8)
    result = fin(ctx, gamma=3)
    assert not result.feasible
    match = re.search(r"^FIN with gamma=3 found no plan, but a placement within every limit exists \(([^)]*)\); "
                      r"try --gamma (\d+)$", result.reason)
    assert match, result.reason
    assert fin(ctx, gamma=int(match.group(2))).feasible


def test_milp_says_why_an_application_cannot_fit_even_alone(tmp_path):
    """photos at 400 Hz: block1 alone takes 2.056 ms x 400 Hz = 82% of phone-a's 80%."""
    path = _scenario(tmp_path, [_app("photos", "b-alexnet", "phone-a", "12ms", 0.80, 400)] + OTHERS)
    result = solve(load_scenario(path), "milp")
    reason = result.apps[0].reason
    assert not result.apps[0].feasible and all(r.feasible for r in result.apps[1:])
    assert "left out" not in reason and "cannot all fit" not in reason, reason
    assert ("with only block1 on it, phone-a would be busy 82.25% of the time, over its max_utilization 80% "
            "(block1 2.056 ms x 400 Hz), and first_block_at_source keeps block1 there") in reason


def test_milp_reason_feeds_the_compare_footnotes(capsys, tmp_path):
    path = _scenario(tmp_path, [_app("photos", "b-alexnet", "phone-a", "12ms", 0.80, 400)] + OTHERS)
    code, out, _ = run(capsys, "plan", path, "--compare")
    assert code == 0
    milp_row = next(line for line in out.splitlines() if re.match(r"\s+milp\s+photos\s", line))
    mark = re.search(r"no plan \((\d+)\)", milp_row).group(1)
    note = next(line for line in out.splitlines() if line.startswith(f"({mark}) "))
    assert "milp (photos)" in note and "with only block1 on it, phone-a would be busy 82.25%" in note, note


def test_milp_names_the_contended_nodes_when_an_application_fits_alone(shared_phone):
    result = solve(load_scenario(shared_phone), "milp")
    reason = result.apps[1].reason
    assert reason.startswith("alone it would fit (e.g. "), reason
    assert "but not next to the other applications; with them, in that placement " in reason
    assert "phone-a would be busy" in reason and "taken by the other applications" in reason


def test_capacity_reason_names_the_link_and_does_not_repeat_itself(capsys):
    """B-AlexNet from phone-a at 350 Hz: on phone-a the blocks take 230% of the time; block1's
    output (186.6 kB x 350 Hz = 522.5 Mbit/s) fits no link out of phone-a; blocks 1-2 take 93%."""
    args = shortcut(ALEXNET, MULTI / "network.yaml", "--json", source="phone-a", latency="12ms")
    reasons = {}
    for solver in ("fin", "exhaustive", "milp", "min-latency"):
        code, out, _ = run(capsys, *args, "--rate", "350", "--solver", solver)
        assert code == 0
        reasons[solver] = json.loads(out)["applications"][0]["reason"]
    assert len(set(reasons.values())) == 1, reasons  # FIN adds nothing: no plan exists, which it proves
    reason = reasons["fin"]
    assert reason.count("229.7%") == 1 and reason.count("would be busy") == 2, reason
    assert "in the fastest placement (phone-a x5: 6.564 ms)" in reason
    assert ("block1's output 186.6 kB x 350 Hz = 522.5 Mbit/s is more than any link out of it can take "
            "(200 Mbit/s to edge-1, 100 Mbit/s to edge-2, 50 Mbit/s to cloud)") in reason
    assert "with block1 and block2 on it, phone-a would be busy 93.33% of the time, over its max_utilization 80%" \
        in reason
    assert "milp may still" not in reason


def test_baselines_and_solvers_state_an_overload_in_one_wording(capsys):
    args = shortcut(ALEXNET, PAPER / "network.yaml", "--rate", "5000", "--compare")
    code, out, _ = run(capsys, *args)
    assert code == 0
    table = out[out.index("Comparison"):]
    assert "of max_utilization 1.0" not in table and "1028.2%" not in table and "node device" not in table
    notes = [line for line in table.splitlines() if re.match(r"\(\d+\) ", line)]
    said = [line for line in notes if "device would be busy 1028% of the time, over its max_utilization 100% "
            "(block1 2.056 ms x 5000 Hz)" in line]
    assert len(said) == 2, notes  # fin & co (the fastest placement), mcp (its own plan)
    # fin, fin-sequential, exhaustive, milp and min-latency give the same reason: one footnote, one mark in each row
    shared = next(line for line in notes
                  if line.split(" ", 1)[1].startswith("fin, fin-sequential, exhaustive, milp, min-latency: "))
    mark = shared.split(" ", 1)[0]
    for solver in ("fin", "fin-sequential", "exhaustive", "milp", "min-latency"):
        row = next(line for line in table.splitlines() if line.strip().startswith(solver + " "))
        assert f"no plan {mark}" in row, row
    assert sum(line.endswith("first_block_at_source keeps block1 on device") for line in notes) == 1


def test_memory_overload_in_the_same_wording(paper_network, paper_cards):
    from finplan.partition.evaluate import evaluate
    from finplan.partition.documents import network_from_dict
    from finplan.partition.problem import Application, Options

    doc = json.loads(json.dumps(paper_network.doc))
    doc["nodes"][0]["memory_bytes"] = 1000
    network = network_from_dict(doc)
    card = paper_cards["b-alexnet"]
    import dataclasses

    blocks = tuple(dataclasses.replace(b, params_bytes=600.0) for b in card.blocks)
    card = dataclasses.replace(card, blocks=blocks)
    app = Application("a", card, "c.json", "device", 0.05, 0.8, None)
    ev = evaluate(app, network, Options(), ["device", "device", "cloud", "cloud", "cloud"], "exit3")
    assert ev.violated == ["memory:device"]
    assert ev.violations == ["device would hold 1.2 kB of parameters, over its memory_bytes 1.0 kB "
                             "(block1 600 B, block2 600 B)"]
