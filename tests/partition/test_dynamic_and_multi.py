"""Dynamic mode (exit thresholds as decisions) and several applications sharing capacity."""
from __future__ import annotations

import json

import numpy as np
import pytest

from finplan.partition.context import contexts
from finplan.partition.policies import policy_from_thresholds
from finplan.partition.evaluate import Usage, evaluate
from finplan.partition.exhaustive import exhaustive
from finplan.partition.fin import fin
from finplan.partition.milp import milp
from finplan.partition.documents import card_from_dict, load_scenario
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import SOLVERS, solve
from partition_helpers import MULTI


def calibrated_card(n=400, seed=7):
    """B-AlexNet's costs with synthetic per-sample scores: confident samples are mostly right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    exits = []
    for name, skill in (("exit1", 0.55), ("exit2", 0.75), ("exit3", 0.86)):
        conf = rng.uniform(0.1, 1.0, n)
        right = rng.uniform(0, 1, n) < np.clip(skill + (conf - 0.55) * 0.8, 0, 1)
        pred = np.where(right, labels, (labels + 1) % 10)
        exits.append({"name": name, "confidence": conf.round(4).tolist(), "predicted": pred.tolist()})
    return card_from_dict({
        "schema": "finplan.model/1", "name": "b-alexnet-cal", "input_bytes": 3072,
        "blocks": [{"name": f"block{i + 1}", "flops": f, "output_bytes": o} for i, (f, o) in enumerate(
            zip([22620000.0, 6711000.0, 10145000.0, 19201000.0, 13523000.0], [186624, 64896, 64896, 43264, 0]))],
        "exits": [{"name": "exit1", "after": "block1", "accuracy": 0.5637, "flops": 1e5},
                  {"name": "exit2", "after": "block3", "accuracy": 0.7805, "flops": 1e5},
                  {"name": "exit3", "after": "block5", "accuracy": 0.8595, "flops": 1e5}],
        "calibration": {"score": "max_softmax", "labels": labels.tolist(), "exits": exits},
    }, "cal.json")


def test_policy_rates_and_accuracy_by_hand():
    card = calibrated_card()
    cal = card.calibration
    thr = float(np.quantile(cal.confidence["exit1"], 0.5, method="lower"))
    policy = policy_from_thresholds(card, 2, {0: thr})
    leave = cal.confidence["exit1"] >= thr
    assert policy.exit_rates[0] == pytest.approx(leave.mean())
    assert policy.exit_rates[1] == 0 and sum(policy.exit_rates) == pytest.approx(1.0)
    correct = (cal.predicted["exit1"][leave] == cal.labels[leave]).sum() + \
        (cal.predicted["exit3"][~leave] == cal.labels[~leave]).sum()
    assert policy.accuracy == pytest.approx(correct / len(cal.labels))


def test_expected_energy_follows_exit_rates(paper_network):
    card = calibrated_card()
    app = Application("a", card, "cal.json", "device", 1.0, 0.0)
    thr = float(np.quantile(card.calibration.confidence["exit1"], 0.5, method="lower"))
    placement = ["device", "device", "edge", "edge", "edge"]
    dyn = evaluate(app, paper_network, Options(mode="dynamic"), placement, "exit3", {"exit1": thr})
    full = evaluate(app, paper_network, Options(mode="dynamic"), placement, "exit3", {})
    r = 1 - dyn.exit_rates["exit1"]
    # block 1 and exit1's head always run; blocks 2..5, the transfer and exit3's head with probability r
    node = paper_network.node("device")
    head = 1e5 / node.ops_per_s * node.power_w
    block1 = 22620000.0 / node.ops_per_s * node.power_w
    assert dyn.energy_j == pytest.approx(block1 + head + r * (full.energy_j - block1), rel=1e-9)
    # the slowest input pays the early head too; the expected latency is lower
    assert dyn.latency_s > full.latency_s and dyn.expected_latency_s < dyn.latency_s
    assert [t["probability"] for t in dyn.transfers] == [pytest.approx(r)]
    # each exit's path latency: exit1's ends at its head on device; exit3's is the slowest input's
    assert set(dyn.exit_latency_s) == {"exit1", "exit3"}
    assert dyn.exit_latency_s["exit1"] == pytest.approx(22620000.0 / node.ops_per_s + 1e5 / node.ops_per_s, rel=1e-9)
    assert dyn.exit_latency_s["exit3"] == dyn.latency_s
    assert dyn.expected_latency_s == pytest.approx(sum(rate * dyn.exit_latency_s[e] for e, rate in dyn.exit_rates.items()))


@pytest.mark.parametrize("latency, accuracy", [(0.005, 0.7), (0.004, 0.75), (0.01, 0.6), (0.003, 0.5)])
def test_dynamic_solvers_agree_and_report_thresholds(paper_network, latency, accuracy):
    card = calibrated_card()
    app = Application("a", card, "cal.json", "device", latency, accuracy)
    ctx = contexts(Scenario(paper_network, (app,), Options(mode="dynamic")))[0]
    assert len(ctx.policies) > 20  # thresholds are searched, not fixed
    best, exact, found = exhaustive(ctx), milp([ctx])[0], fin(ctx)
    assert best.evaluation is not None
    assert exact.evaluation.energy_j == pytest.approx(best.evaluation.energy_j, rel=1e-7)
    assert found.evaluation.energy_j == pytest.approx(best.evaluation.energy_j, rel=1e-9)
    ev = found.evaluation
    assert ev.feasible and ev.accuracy > accuracy
    static = exhaustive(contexts(Scenario(paper_network, (app,), Options(mode="static")))[0])
    if static.evaluation is not None:  # disabling every early exit is one of the options
        assert ev.energy_j <= static.evaluation.energy_j * (1 + 1e-9) or ev.accuracy != static.evaluation.accuracy


def test_dynamic_mode_without_calibration_is_bad_input(paper_network, paper_cards):
    from finplan.errors import FinplanInputError
    from finplan.partition.documents import check_application
    app = Application("a", paper_cards["b-alexnet"], "b-alexnet.json", "device", 0.005, 0.5)
    with pytest.raises(FinplanInputError, match="calibration"):
        check_application(app, paper_network, Options(mode="dynamic"))


def _loads(scenario, results):
    usage = Usage()
    for r in results:
        if r.feasible:
            usage = usage.plus(r.evaluation)
    return usage


@pytest.mark.parametrize("solver", SOLVERS)
def test_multi_application_capacity_respected_by_every_solver(solver):
    scenario = load_scenario(MULTI / "scenario.yaml")
    result = solve(scenario, solver)
    usage = _loads(scenario, result.apps)
    net = scenario.network
    for name, value in usage.node_utilization.items():
        assert value <= net.node(name).max_utilization * (1 + 1e-9), (solver, name, value)
    for (a, b), value in usage.link_utilization.items():
        assert value <= net.link(a, b).max_utilization * (1 + 1e-9), (solver, a, b, value)
    for r in result.apps:
        if r.evaluation is not None and r.feasible:
            assert not r.evaluation.violations
        elif r.evaluation is not None:  # a baseline's infeasible choice is reported as such
            assert r.reason


def test_multi_example_needs_offloading_and_fin_reports_gap():
    scenario = load_scenario(MULTI / "scenario.yaml")
    fin_result, joint = solve(scenario, "fin", joint_gap=True), solve(scenario, "milp")
    assert all(r.feasible for r in joint.apps)
    # alone, each application would stay on its device; shared utilisation limits push work out
    assert any(len(set(r.evaluation.placement)) > 1 for r in fin_result.apps)
    gap = fin_result.extra["joint_optimum"]
    assert gap["energy_j"] == pytest.approx(joint.energy_j, rel=1e-9)
    assert gap["gap"] is not None and gap["gap"] >= -1e-9
    assert fin_result.extra["lower_bound"]["energy_j"] <= joint.energy_j * (1 + 1e-9)
    assert solve(scenario, "fin-sequential").extra["order"][0] == "digits"  # tightest latency first


def test_shared_capacity_forces_a_choice(paper_network, paper_cards):
    """Two applications that each fit alone but not together on the device."""
    import dataclasses
    card = paper_cards["b-lenet"]
    net_doc = dict(paper_network.doc)
    net_doc["nodes"] = [dict(n) for n in net_doc["nodes"]]
    net_doc["nodes"][0]["max_utilization"] = 0.7
    from finplan.partition.documents import network_from_dict
    net = network_from_dict(net_doc)
    t_device = 255400 / 11e9
    rate = 0.4 / t_device  # 40% of the device each
    apps = tuple(Application(f"a{i}", card, "b-lenet.json", "device", 0.005, 0.95, rate) for i in range(2))
    scenario = Scenario(net, apps, Options())
    for solver in ("fin", "exhaustive", "milp"):
        result = solve(scenario, solver)
        usage = _loads(scenario, result.apps)
        assert usage.node_utilization["device"] <= 0.7 + 1e-9
        assert all(r.feasible for r in result.apps), solver
        assert sum(set(r.evaluation.placement) == {"device"} for r in result.apps) <= 1
    assert dataclasses.is_dataclass(result)


def test_dynamic_plan_document_reports_thresholds(paper_network):
    from finplan.partition.plan import plan_document, validate_plan
    card = calibrated_card()
    app = Application("a", card, "cal.json", "device", 0.004, 0.7)
    scenario = Scenario(paper_network, (app,), Options(mode="dynamic"))
    result = solve(scenario, "fin")
    doc = validate_plan(plan_document(scenario, result))
    entry = doc["applications"][0]
    ev = result.apps[0].evaluation
    assert entry["thresholds"] == ev.thresholds
    assert [(a["name"], a["threshold"]) for a in entry["active_exits"]] == list(ev.thresholds.items())
    assert sum(entry["predicted"]["exit_rates"].values()) == pytest.approx(1.0)
    assert doc["solver"]["parameters"]["threshold_quantiles"] == [0.25, 0.5, 0.75, 0.9]
    if ev.thresholds:
        assert entry["predicted"]["expected_latency_s"] < entry["predicted"]["latency_s"]


def test_capacity_is_max_utilization_by_its_design_name(paper_network):
    """DESIGN.md names the node and link share limit ``capacity``; the issue ``max_utilization``:
    both spell the same limit, and free-form ``description`` / ``x-...`` fields are allowed."""
    from finplan.partition.documents import network_from_dict

    doc = json.loads(json.dumps(paper_network.doc))
    doc["nodes"][1]["capacity"] = 0.25
    doc["nodes"][1]["description"] = "the edge server"
    doc["links"][0]["capacity"] = 0.5
    doc["links"][0]["x-owner"] = "ops"
    net = network_from_dict(doc)
    assert net.nodes[1].max_utilization == 0.25 and net.links[0].max_utilization == 0.5
    same = json.loads(json.dumps(doc))
    same["nodes"][1]["max_utilization"] = 0.25
    assert network_from_dict(same).nodes[1].max_utilization == 0.25


def _multi_with_memory(tmp_path, edge_memory_bytes=None):
    """examples/multi with parameter bytes on every block (1, 2, 3.. MB) and, optionally, a
    memory limit on edge-1: the shipped cards carry no parameter sizes, so memory never binds there."""
    import shutil

    import yaml

    shutil.copytree(MULTI, tmp_path / "multi")
    shutil.copytree(MULTI.parent / "paper", tmp_path / "paper")
    for card in (tmp_path / "paper").glob("b-*.json"):
        doc = json.loads(card.read_text())
        for i, block in enumerate(doc["blocks"]):
            block["params_bytes"] = 1e6 * (i + 1)
        card.write_text(json.dumps(doc))
    if edge_memory_bytes is not None:
        net_path = tmp_path / "multi" / "network.yaml"
        net = yaml.safe_load(net_path.read_text())
        for node in net["nodes"]:
            if node["name"] == "edge-1":
                node["memory_bytes"] = edge_memory_bytes
        net_path.write_text(json.dumps(net))
    return load_scenario(tmp_path / "multi" / "scenario.yaml")


def test_shared_memory_is_respected_by_every_solver(tmp_path):
    free = solve(_multi_with_memory(tmp_path / "free"), "fin")
    held = _loads(None, free.apps).node_memory_bytes.get("edge-1", 0.0)
    assert held > 0  # the unconstrained plans put parameters on edge-1
    scenario = _multi_with_memory(tmp_path / "tight", edge_memory_bytes=held / 2)
    for solver in SOLVERS:
        result = solve(scenario, solver)
        usage = _loads(scenario, result.apps)
        for name, value in usage.node_memory_bytes.items():
            limit = scenario.network.node(name).memory_bytes
            assert limit is None or value <= limit * (1 + 1e-9), (solver, name, value, limit)
        if solver == "fin":  # the limit binds: FIN's placements change
            assert [r.evaluation and r.evaluation.placement for r in result.apps] != \
                [r.evaluation and r.evaluation.placement for r in free.apps]
