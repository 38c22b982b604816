"""Joint FIN (partition/joint.py): several applications sharing edge and cloud capacity.

Property tests on random contended instances (devices of their own or shared, one or two
edge servers, a cloud; utilisation, memory and link limits) check every plan with the exact
evaluator, against the exact joint MILP: never over a shared limit, never below the MILP's
energy, the lower bound never above it and the served upper bound never below its count.
Small instances of the paper's contended setting are solved to the MILP's optimum exactly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finplan.partition.context import contexts
from finplan.partition.evaluate import Usage
from finplan.partition.joint import JointInfo, joint_fin
from finplan.partition.joint_columns import build_classes, restrict
from finplan.partition.milp import milp
from finplan.partition.plan import plan_document
from finplan.partition.documents import card_from_dict, network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import solve

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

RANDOM = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _card(draw, name):
    n_blocks = draw(st.integers(2, 4))
    blocks = [{"name": f"b{i}", "flops": draw(st.floats(1e6, 5e7)), "output_bytes": draw(st.floats(1e3, 2e5)),
               "params_bytes": draw(st.floats(1e3, 4e4))} for i in range(n_blocks)]
    afters = sorted(set(draw(st.lists(st.integers(0, n_blocks - 1), min_size=1, max_size=2))))
    exits = [{"name": f"e{i}", "after": f"b{a}", "flops": draw(st.floats(0, 1e6)),
              "accuracy": draw(st.floats(0.5, 0.99))} for i, a in enumerate(afters)]
    return card_from_dict({"schema": "finplan.model/1", "name": name, "input_bytes": draw(st.floats(1e3, 1e5)),
                           "blocks": blocks, "exits": exits})


@st.composite
def contended(draw):
    """2-6 applications on 1-4 devices (a device may be shared), 1-2 edges and a cloud."""
    n_dev = draw(st.integers(1, 4))
    n_edge = draw(st.integers(1, 2))
    nodes = [{"name": f"d{i}", "tier": "mobile", "compute": {"ops_per_s": draw(st.floats(1e9, 1e10)),
                                                            "power_w": draw(st.floats(0.5, 8))}}
             for i in range(n_dev)]
    for j in range(n_edge):
        node = {"name": f"e{j}", "tier": "edge", "compute": {"ops_per_s": draw(st.floats(5e10, 2e11)),
                                                            "power_w": draw(st.floats(20, 200))},
                "max_utilization": draw(st.floats(0.05, 0.6))}
        if draw(st.booleans()):
            node["memory_bytes"] = draw(st.floats(2e4, 2e5))
        nodes.append(node)
    nodes.append({"name": "c", "tier": "cloud", "compute": {"ops_per_s": 3e11, "power_w": draw(st.floats(200, 500))},
                  "max_utilization": draw(st.floats(0.05, 0.6))})

    def link(a, b):
        out = {"from": a, "to": b, "bandwidth_bps": draw(st.floats(1e7, 1e10)),
               "latency_s": draw(st.sampled_from([0.0, 1e-4])), "energy_j_per_bit": draw(st.floats(1e-10, 1e-7))}
        if draw(st.integers(0, 3)) == 0:
            out["max_utilization"] = draw(st.floats(0.05, 0.8))
        return out

    links = []
    for i in range(n_dev):
        for j in range(n_edge):
            if j == 0 or draw(st.booleans()):
                links.append(link(f"d{i}", f"e{j}"))
        if draw(st.booleans()):
            links.append(link(f"d{i}", "c"))
    for j in range(n_edge):
        links.append(link(f"e{j}", "c"))
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    cards = [_card(draw, f"m{k}") for k in range(draw(st.integers(1, 2)))]
    apps = []
    for a in range(draw(st.integers(2, 6))):
        card = cards[draw(st.integers(0, len(cards) - 1))]
        apps.append(Application(f"a{a}", card, f"{card.name}.json", f"d{draw(st.integers(0, n_dev - 1))}",
                                draw(st.floats(2e-3, 5e-2)), draw(st.floats(0.3, 0.9)), draw(st.floats(10, 400))))
    return Scenario(network, tuple(apps), Options(first_block_at_source=draw(st.booleans())))


def _check_feasible(scenario, results):
    """Every served plan feasible with all the others' loads; totals within every limit."""
    usage = Usage()
    for r in results:
        if r.feasible:
            usage = usage.plus(r.evaluation)
    net = scenario.network
    for name, value in usage.node_utilization.items():
        assert value <= net.node(name).max_utilization * (1 + 1e-12), name
    for name, value in usage.node_memory_bytes.items():
        limit = net.node(name).memory_bytes
        assert limit is None or value <= limit * (1 + 1e-12), name
    for (a, b), value in usage.link_utilization.items():
        assert value <= net.link(a, b).max_utilization * (1 + 1e-12), (a, b)
    ctxs = contexts(scenario)
    from finplan.partition.explain import policy_of

    for a, r in enumerate(results):
        if not r.feasible:
            assert r.reason
            continue
        others = Usage()
        for b, o in enumerate(results):
            if b != a and o.feasible:
                others = others.plus(o.evaluation)
        ctx = ctxs[a]
        ev = ctx.evaluate(policy_of(ctx, r.evaluation), [ctx.network.index(n) for n in r.evaluation.placement],
                          others)
        assert ev.feasible, ev.violations


@RANDOM
@given(contended())
def test_joint_fin_is_feasible_and_bounded_by_the_milp(scenario):
    ctxs = contexts(scenario)
    info = JointInfo()
    results = joint_fin(ctxs, 1000, 0.0, info)
    _check_feasible(scenario, results)
    exact = milp(contexts(scenario))
    _check_feasible(scenario, exact)
    served = sum(r.feasible for r in results)
    energy = sum(r.evaluation.energy_j for r in results if r.feasible)
    best_served = sum(r.feasible for r in exact)
    best_energy = sum(r.evaluation.energy_j for r in exact if r.feasible)
    assert served <= best_served <= info.served_upper_bound
    if served == best_served:
        assert energy >= best_energy * (1 - 1e-9) - 1e-15
    # the bound holds for any plan serving at least `served` applications, the MILP's included
    assert info.lower_bound_j <= best_energy * (1 + 1e-9) + 1e-15
    assert info.lower_bound_j <= energy * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("users", [1, 3, 7, 12])
def test_equals_the_milp_on_the_paper_contended_setting(users):
    from paper import multi_scenario

    scenario = multi_scenario(users)
    mine, exact = solve(scenario, "fin"), solve(scenario, "milp", warm_start=False)
    _check_feasible(scenario, mine.apps)
    assert sum(r.feasible for r in mine.apps) == sum(r.feasible for r in exact.apps)
    assert mine.energy_j == pytest.approx(exact.energy_j, rel=1e-9)
    bound = mine.extra["lower_bound"]
    assert bound["energy_j"] <= exact.energy_j * (1 + 1e-9)
    assert bound["served_at_most"] >= bound["served"] == sum(r.feasible for r in exact.apps)
    assert mine.parameters["joint"] is True


def test_sequential_stays_available_and_gets_a_bound():
    from paper import multi_scenario

    scenario = multi_scenario(4)
    seq, joint = solve(scenario, "fin-sequential"), solve(scenario, "fin")
    assert "order" in seq.extra and "order" not in joint.extra
    for res in (seq, joint):
        _check_feasible(scenario, res.apps)
        bound = res.extra["lower_bound"]
        assert bound["energy_j"] <= res.energy_j * (1 + 1e-12)
        assert bound["gap"] == pytest.approx((res.energy_j - bound["energy_j"]) / res.energy_j, abs=1e-12)


def test_milp_warm_start_gives_the_same_optimum():
    from paper import multi_scenario

    scenario = multi_scenario(5)
    warm, cold = solve(scenario, "milp"), solve(scenario, "milp", warm_start=False)
    assert warm.parameters["warm_start"] == "fin" and "warm_start" not in cold.parameters
    assert sum(r.feasible for r in warm.apps) == sum(r.feasible for r in cold.apps)
    assert warm.energy_j == pytest.approx(cold.energy_j, rel=1e-9)


def test_plans_are_deterministic():
    from paper import multi_scenario

    scenario = multi_scenario(9)
    first, second = (json.dumps(plan_document(scenario, solve(scenario, "fin")), sort_keys=True) for _ in range(2))
    assert first == second


def test_classes_group_identical_users_and_restrict_to_reachable_nodes():
    from paper import multi_scenario

    scenario = multi_scenario(6)
    ctxs = contexts(scenario)
    classes, resources = build_classes(ctxs)
    assert [c.size for c in classes] == [6, 6, 6]  # one class per model
    # edge and cloud utilisation and the edge -> cloud link are shared; devices and their links are not
    assert sorted(r.tag for r in resources) == ["link:edge->cloud", "utilization:cloud", "utilization:edge"]
    sub = restrict(ctxs[0])
    assert sub.network.names == ("alexnet-1", "edge", "cloud")
    # a placement evaluates the same on the sub-network as on the whole network
    full = ctxs[0].evaluate(2, [0, 0, 0, ctxs[0].network.index("cloud"), ctxs[0].network.index("cloud")])
    part = sub.evaluate(2, [0, 0, 0, 2, 2])
    assert (full.energy_j, full.latency_s, full.per_node) == (part.energy_j, part.latency_s, part.per_node)


def test_cli_solver_fin_equals_python_api(tmp_path, capsys):
    from paper import multi_scenario

    from finplan.cli.main import main

    scenario = multi_scenario(3)
    net = tmp_path / "network.json"
    net.write_text(json.dumps(scenario.network.doc))
    root = Path(__file__).resolve().parents[2] / "examples" / "paper"
    for model in ("b-alexnet", "b-resnet", "b-lenet"):
        (tmp_path / f"{model}.json").write_text((root / f"{model}.json").read_text())
    apps = [{"name": a.name, "model": f"{a.card.name}.json", "source": a.source, "max_latency_s": a.max_latency_s,
             "min_accuracy": a.min_accuracy, "rate_hz": a.rate_hz} for a in scenario.applications]
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"schema": "finplan.scenario/1", "network": "network.json", "applications": apps}))
    out = tmp_path / "plan.json"
    assert main(["plan", str(path), "--solver", "fin", "--timings", "-o", str(out)]) in (0, None)
    text = capsys.readouterr().out
    assert "lower bound (Lagrangian relaxation of the shared capacities)" in text
    doc = json.loads(out.read_text())
    api = solve(scenario, "fin")
    assert doc["totals"]["feasible_applications"] == sum(r.feasible for r in api.apps)
    assert doc["totals"]["energy_j"] == pytest.approx(api.energy_j, rel=1e-12)
    assert [a["placement"] for a in doc["applications"]] == [
        [{"block": r.app.card.blocks[b].name, "node": n} for b, n in enumerate(r.evaluation.placement)]
        if r.feasible else [] for r in api.apps]
    assert doc["solver"]["lower_bound"]["gap"] == pytest.approx(api.extra["lower_bound"]["gap"], abs=1e-12)
    assert isinstance(doc["solver"]["solve_time_s"], float)


def test_benchmark_quick_run(tmp_path):
    """benchmarks/multi_app.py --quick writes its three files with every solver's row (no timing checked)."""
    import multi_app

    assert multi_app.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "multi_app_joint.json").read_text())["rows"]
    solvers = {r["solver"] for r in rows}
    assert {"fin", "fin-sequential", "milp", "milp (warm start)", "fin (CLI)"} <= solvers
    for r in rows:
        if r["solver"] != "fin (CLI)" and r["energy_vs_milp"] is not None:
            assert r["energy_vs_milp"] >= -1e-9  # nothing beats the MILP
    assert "## tiered" in (tmp_path / "multi_app_joint.md").read_text()
