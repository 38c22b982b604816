"""The MILP's time limit: a stopped search returns its incumbent, marked not proven optimal
with its MIP gap, or no plan with a clear reason; never a plan that breaks a constraint."""
from __future__ import annotations

import pytest

import finplan.partition.milp as milp_module
from finplan.cli.main import main
from finplan.errors import FinplanInputError
from finplan.partition.context import contexts
from finplan.partition.milp import NO_INCUMBENT, milp
from finplan.partition.documents import network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import solve
from partition_helpers import MULTI

CONSTRAINTS = {"b-alexnet": (0.005, 0.80), "b-resnet": (0.0015, 0.80), "b-lenet": (0.00002, 0.95)}


def crowded(paper_network, paper_cards, users: int) -> Scenario:
    """``users`` devices per model (3 models) sharing one edge and one cloud at 20% utilisation."""
    device, edge, cloud = (paper_network.node(n) for n in ("device", "edge", "cloud"))
    nodes, links, apps = [], [], []
    for node in (edge, cloud):
        nodes.append({"name": node.name, "tier": node.tier, "max_utilization": 0.2,
                      "compute": {"ops_per_s": node.ops_per_s, "power_w": node.power_w}})
    for model, (latency, accuracy) in CONSTRAINTS.items():
        for u in range(users):
            name = f"{model}-{u}"
            nodes.append({"name": name, "tier": "mobile",
                          "compute": {"ops_per_s": device.ops_per_s, "power_w": device.power_w}})
            for dst, ref in (("edge", ("device", "edge")), ("cloud", ("device", "cloud"))):
                link = paper_network.link(*ref)
                links.append({"from": name, "to": dst, "bandwidth_bps": link.bandwidth_bps,
                              "latency_s": link.latency_s, "energy_j_per_bit": link.energy_j_per_bit})
            apps.append(Application(name, paper_cards[model], f"{model}.json", name, latency, accuracy, 200.0))
    link = paper_network.link("edge", "cloud")
    links.append({"from": "edge", "to": "cloud", "bandwidth_bps": link.bandwidth_bps, "latency_s": link.latency_s,
                  "energy_j_per_bit": link.energy_j_per_bit})
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    return Scenario(network, tuple(apps), Options())


def test_tiny_time_limit_on_a_large_instance(paper_network, paper_cards):
    ctxs = contexts(crowded(paper_network, paper_cards, 20))
    info: dict = {}
    results = milp(ctxs, time_limit_s=1e-6, info=info)
    assert info["proven_optimal"] is False and info["stopped"] == "time limit"
    served = [r for r in results if r.evaluation is not None]
    if not served:  # the usual outcome: HiGHS stops before its first incumbent
        assert all(r.reason == NO_INCUMBENT for r in results)
    for r in served:
        assert r.feasible and not r.evaluation.violations
        assert r.notes and r.notes[0].startswith("not proven optimal (time limit), MIP gap ")


def test_no_limit_and_a_generous_limit_agree(paper_network, paper_cards):
    ctxs = contexts(crowded(paper_network, paper_cards, 3))
    info: dict = {}
    free = milp(ctxs)
    bounded = milp(ctxs, time_limit_s=600, info=info)
    assert info == {"proven_optimal": True, "stopped": None, "mip_gap": None}
    assert [r.evaluation and r.evaluation.placement for r in free] == \
        [r.evaluation and r.evaluation.placement for r in bounded]
    assert not any(r.notes for r in bounded)


def test_an_incumbent_found_before_the_stop_is_returned_and_marked(monkeypatch, paper_network, paper_cards):
    """Stopping deterministically at HiGHS's first incumbent (solution limit) exercises the
    same path as a time limit reached after an incumbent."""
    original = milp_module.new_highs

    def first_incumbent():
        highs = original()
        highs.setOptionValue("mip_max_improving_sols", 1)
        return highs

    monkeypatch.setattr(milp_module, "new_highs", first_incumbent)
    ctxs = contexts(crowded(paper_network, paper_cards, 10))
    info: dict = {}
    results = milp(ctxs, info=info)
    assert info["proven_optimal"] is False and info["stopped"] == "solution limit"
    assert info["mip_gap"] is not None and info["mip_gap"] > 0
    assert any(r.feasible for r in results)
    for r in results:
        assert r.notes == [f"not proven optimal (solution limit), MIP gap {100 * info['mip_gap']:.3g}%"]
        if r.evaluation is not None:
            assert r.feasible and not r.evaluation.violations
    monkeypatch.undo()
    exact = milp(ctxs)
    assert sum(r.evaluation.energy_j for r in exact if r.feasible) <= \
        sum(r.evaluation.energy_j for r in results if r.feasible) * (1 + 1e-9)


def test_a_stop_before_any_incumbent_gives_a_reason(monkeypatch, paper_network, paper_cards):
    original = milp_module.new_highs

    def no_nodes():
        highs = original()
        highs.setOptionValue("mip_max_nodes", 0)
        return highs

    monkeypatch.setattr(milp_module, "new_highs", no_nodes)
    results = milp(contexts(crowded(paper_network, paper_cards, 3)))
    assert all(r.evaluation is None and "before any feasible plan was found" in r.reason for r in results)


def test_solve_passes_the_limit_and_reports_it(paper_network, paper_cards):
    scenario = crowded(paper_network, paper_cards, 20)
    result = solve(scenario, "milp", time_limit_s=1e-6)
    assert result.parameters["time_limit_s"] == 1e-6
    assert result.extra["proven_optimal"] is False and result.extra["stopped"] == "time limit"
    with pytest.raises(FinplanInputError):
        solve(scenario, "milp", time_limit_s=0)
    with pytest.raises(ValueError):
        milp(contexts(scenario), time_limit_s=-1.0)


def test_cli_time_limit(capsys, tmp_path):
    out = tmp_path / "plan.json"
    assert main(["plan", str(MULTI / "scenario.yaml"), "--solver", "milp", "--time-limit", "30s", "-o", str(out)]) == 0
    import json

    doc = json.loads(out.read_text())
    assert doc["solver"]["parameters"]["time_limit_s"] == 30.0
    assert all(a["feasible"] for a in doc["applications"]) and "proven_optimal" not in doc["solver"]
    capsys.readouterr()
    assert main(["plan", str(MULTI / "scenario.yaml"), "--solver", "milp", "--time-limit", "soon"]) == 2
    err = capsys.readouterr().err
    assert "--time-limit" in err and "Traceback" not in err
