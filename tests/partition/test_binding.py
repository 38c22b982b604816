"""Which constraints bind: the definition (relax one constraint alone, with the other
applications' placements kept; it binds when a cheaper feasible plan appears), checked
against brute force, and the baselines' "at a limit" reading."""
from __future__ import annotations

import itertools

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from finplan.partition.costs import is_close
from finplan.partition.evaluate import CAPACITY_TAGS
from finplan.partition.exhaustive import exhaustive
from finplan.partition.binding import add_binding, binding_constraints
from finplan.partition.context import contexts
from finplan.partition.documents import card_from_dict, load_scenario, network_from_dict, scenario_from_dict
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import solve
from partition_helpers import MULTI, PAPER

SOME = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def instances(draw):
    """Small instances (<= 4 nodes, <= 4 blocks) whose limits are drawn around what the
    placements need, so that each constraint binds in some examples and not in others."""
    n_nodes = draw(st.integers(2, 4))
    nodes = []
    for j in range(n_nodes):
        node = {"name": f"n{j}", "compute": {"ops_per_s": draw(st.floats(1e8, 2e9)) if j == 0 else
                                             draw(st.floats(1e9, 2e11)),
                                             "power_w": draw(st.floats(0.1, 2)) if j == 0 else draw(st.floats(5, 300))}}
        if draw(st.booleans()):
            node["max_utilization"] = draw(st.floats(0.05, 1.0))
        if draw(st.integers(0, 3)) == 0:
            node["memory_bytes"] = draw(st.floats(1e3, 6e4))
        nodes.append(node)
    links = [{"from": f"n{a}", "to": f"n{b}", "bandwidth_bps": draw(st.floats(1e7, 1e10)), "latency_s": 0.0,
              "energy_j_per_bit": draw(st.floats(1e-10, 1e-7)), "max_utilization": draw(st.floats(0.01, 1.0))}
             for a in range(n_nodes) for b in range(n_nodes) if a != b and draw(st.integers(0, 3)) > 0]
    n_blocks = draw(st.integers(1, 4))
    blocks = [{"name": f"b{i}", "flops": draw(st.floats(1e5, 2e7)), "output_bytes": draw(st.floats(0, 1e5)),
               "params_bytes": draw(st.floats(0, 3e4))} for i in range(n_blocks)]
    afters = sorted(set(draw(st.lists(st.integers(0, n_blocks - 1), min_size=1, max_size=3))))
    accuracies = sorted(draw(st.lists(st.floats(0.3, 0.95), min_size=len(afters), max_size=len(afters))))
    exits = [{"name": f"e{i}", "after": f"b{a}", "flops": 0, "accuracy": acc}
             for i, (a, acc) in enumerate(zip(afters, accuracies))]
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    card = card_from_dict({"schema": "finplan.model/1", "name": "m", "input_bytes": draw(st.floats(1, 1e5)),
                           "blocks": blocks, "exits": exits})
    at_source = sum(b["flops"] for b in blocks) / nodes[0]["compute"]["ops_per_s"]
    app = Application("a", card, "m.json", "n0", at_source * draw(st.floats(0.3, 3.0)),
                      draw(st.sampled_from([0.0] + accuracies)) * draw(st.sampled_from([0.99, 1.0])),
                      draw(st.floats(0.1, 3.0)) / at_source if draw(st.booleans()) else None)
    options = Options(first_block_at_source=draw(st.booleans()), strict=draw(st.booleans()))
    return contexts(Scenario(network, (app,), options))[0]


def _brute_force_binding(ctx):
    """Minimum energy with every constraint kept and with each one relaxed, by scoring every
    node sequence of every exit policy with the exact evaluation (independent of the solvers)."""
    n_nodes = len(ctx.network.names)
    best = {"kept": None, "latency": None, "accuracy": None, "capacity": None}
    for i, policy in enumerate(ctx.policies):
        k = ctx.chain(i).n_blocks
        for nodes in itertools.product(range(n_nodes), repeat=k):
            ev = ctx.evaluate(i, list(nodes))
            broken = set(ev.violated)
            if broken & {"route", "first_block_at_source"}:
                continue
            groups = {"latency": {"latency"}, "accuracy": {"accuracy"}}
            for kind in best:
                if kind == "kept":
                    ok = not broken
                elif kind == "capacity":
                    ok = all(tag.startswith(CAPACITY_TAGS) for tag in broken)
                else:
                    ok = broken <= groups[kind]
                if ok and (best[kind] is None or ev.energy_j < best[kind]):
                    best[kind] = ev.energy_j
    return best


@SOME
@given(instances())
def test_binding_is_exactly_the_constraints_whose_relaxation_pays(ctx):
    """Exact below the enumeration limit; above it FIN finds the plans compared, which may miss a
    binding constraint but never lists one that does not bind."""
    plan = exhaustive(ctx).evaluation
    assume(plan is not None)
    truth = _brute_force_binding(ctx)
    assert is_close(truth["kept"], plan.energy_j, 1e-9)
    tags = binding_constraints(ctx, plan, None, gamma=1000)
    for kind in ("latency", "accuracy"):
        binds = truth[kind] is not None and truth[kind] < truth["kept"] and not is_close(truth[kind], truth["kept"])
        assert (kind in tags) == binds, (kind, tags, truth)
    capacity_binds = (truth["capacity"] is not None and truth["capacity"] < truth["kept"]
                      and not is_close(truth["capacity"], truth["kept"]))
    assert any(t.startswith(CAPACITY_TAGS) for t in tags) == capacity_binds, (tags, truth)
    for tag in binding_constraints(ctx, plan, None, gamma=1000, exact_limit=0):
        kind = "capacity" if tag.startswith(CAPACITY_TAGS) else tag
        assert truth[kind] is not None and truth[kind] < truth["kept"], (tag, truth)


def test_a_baseline_far_from_its_limits_lists_none(paper_network, paper_cards):
    """mcp at 2.24 ms against 100 ms used to say "binding: latency, accuracy"."""
    app = Application("a", paper_cards["b-alexnet"], "b-alexnet.json", "device", 0.1, 0.8)
    scenario = Scenario(paper_network, (app,), Options())
    result = solve(scenario, "mcp")
    add_binding(scenario, result, 1000)
    ev = result.apps[0].evaluation
    assert ev.latency_s < 0.003 and ev.binding == [] and result.apps[0].binding_basis == "at_limit"
    # the optimum of the same problem: latency is not binding at 100 ms, accuracy is (exit2 is cheaper)
    best = solve(scenario, "fin")
    add_binding(scenario, best, 1000)
    assert best.apps[0].evaluation.binding == ["accuracy"] and best.apps[0].binding_basis == "relaxation"


def test_a_baseline_at_its_latency_limit_says_so(paper_network, paper_cards):
    app = Application("a", paper_cards["b-alexnet"], "b-alexnet.json", "device", 0.00225, 0.8)
    scenario = Scenario(paper_network, (app,), Options())
    result = solve(scenario, "mcp")  # 2.24 ms of 2.25
    add_binding(scenario, result, 1000)
    assert result.apps[0].evaluation.binding == ["latency"]


def test_capacity_not_latency_binds_when_the_bound_is_loose():
    """examples/multi with photos allowed 100 ms: its plan is unchanged and what holds it is
    phone-a's max_utilization (with the other applications' load), not the latency bound."""
    doc = __import__("yaml").safe_load((MULTI / "scenario.yaml").read_text())
    doc["applications"][0]["max_latency_s"] = "100ms"
    scenario = scenario_from_dict(doc, MULTI / "scenario.yaml")
    result = solve(scenario, "fin")
    reference = solve(load_scenario(MULTI / "scenario.yaml"), "fin")
    assert result.apps[0].evaluation.placement == reference.apps[0].evaluation.placement
    add_binding(scenario, result, 1000)
    tags = result.apps[0].evaluation.binding
    assert "latency" not in tags and "utilization:phone-a" in tags


def test_paper_point_binds_latency_and_accuracy(paper_network, paper_cards):
    scenario = load_scenario(PAPER / "scenario.yaml")
    result = solve(scenario, "exhaustive")
    add_binding(scenario, result, 1000)
    assert result.apps[0].evaluation.binding == ["latency", "accuracy"]
