"""FIN's default, the exact label DP (partition/pareto.py): never infeasible under the exact
evaluator, never below the optimum, never above the bound its plan states (exact: equal to the
optimum); against the exhaustive search on small instances and the MILP on medium ones; the
frozen instance where the old fixed gamma 1000 loses energy; deterministic plans."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finplan.errors import FinplanInputError
from finplan.partition import pareto
from finplan.partition.context import contexts
from finplan.partition.costs import is_close
from finplan.partition.evaluate import evaluate
from finplan.partition.exhaustive import exhaustive
from finplan.partition.fin import DEFAULT_EPSILON, fin
from finplan.partition.fin_graph import GRAPH_GAMMA
from finplan.partition.milp import milp
from finplan.partition.plan import plan_document, validate_plan
from finplan.partition.documents import card_from_dict, network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import solve
from partition_helpers import DATA, PAPER, bad, paper_ctx, run, shortcut
from test_dynamic_and_multi import calibrated_card
from test_properties import instances

FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
FEW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _check_against(found, best, ctx):
    """The promises of a FIN plan against the exact optimum ``best`` (an AppResult)."""
    if found.evaluation is None:
        assert found.reason
        return
    ev = found.evaluation
    assert ev.feasible and not ev.violations
    again = evaluate(ctx.app, ctx.network, ctx.options, ev.placement, ev.final_exit, ev.thresholds)
    assert again.feasible and again.energy_j == ev.energy_j  # the exact evaluator, called afresh
    assert best.evaluation is not None, "FIN found a plan the exact search says does not exist"
    opt = best.evaluation.energy_j
    assert ev.energy_j >= opt * (1 - 1e-9)
    g = found.guarantee
    assert g is not None and set(g) == {"exact", "epsilon", "basis"}
    if g["exact"]:
        assert g["epsilon"] == 0.0
        assert is_close(ev.energy_j, opt, 1e-9), (ev.energy_j, opt)
    elif g["epsilon"] is not None:
        assert ev.energy_j <= (1 + g["epsilon"]) * opt * (1 + 1e-9)


def _near_limit(best, ctx) -> bool:
    """The optimum sits within floating-point rounding of the latency limit (the only place where
    the DP's hop-by-hop sum and the evaluator's may disagree)."""
    return best.evaluation is not None and best.evaluation.latency_s >= ctx.app.max_latency_s * (1 - 1e-9)


@FAST
@given(instances())
def test_default_fin_is_the_exhaustive_optimum(ctx):
    best, found = exhaustive(ctx), fin(ctx)
    _check_against(found, best, ctx)
    if best.evaluation is not None and not _near_limit(best, ctx):
        assert found.evaluation is not None and found.guarantee["exact"]
    if best.evaluation is None:
        assert found.evaluation is None


@FEW
@given(instances(capacity=True))
def test_with_capacity_fin_keeps_its_promises(ctx):
    """Capacity: FIN may repair (then it states no bound), never claims more than it has."""
    best, found = exhaustive(ctx), fin(ctx)
    _check_against(found, best, ctx)
    if found.evaluation is not None and found.notes:  # the capacity repair ruled options out
        assert found.guarantee["epsilon"] is None and not found.guarantee["exact"]


@FEW
@given(instances(), st.sampled_from([0.01, 0.2, 1.0]), st.sampled_from([1, 2]))
def test_trimmed_frontiers_stay_within_epsilon(ctx, epsilon, cap):
    """With a frontier cap of one or two labels nearly every frontier is trimmed: the plan then
    states a bound <= epsilon and keeps it; trimming never loses feasibility."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pareto, "FRONT_CAP", cap)
        found = fin(ctx, epsilon=epsilon)
    best = exhaustive(ctx)
    _check_against(found, best, ctx)
    if best.evaluation is not None and not _near_limit(best, ctx):
        assert found.evaluation is not None
        assert found.guarantee["exact"] or 0 < found.guarantee["epsilon"] <= epsilon


def test_trimming_states_its_bound_and_zero_epsilon_never_trims(monkeypatch):
    """A frozen instance whose frontiers outgrow a cap of 2: the bound is stated and kept; with
    epsilon 0 the same run is exact. Without the incumbent pruning, which keeps this instance's
    frontiers under the cap (and the plan exact) on its own."""
    ctx = _frozen_ctx()
    opt = milp([ctx])[0].evaluation.energy_j
    monkeypatch.setattr(pareto, "FRONT_CAP", 2)
    monkeypatch.setattr(pareto, "incumbent_placements", lambda *args, **kw: [])
    trimmed = fin(ctx, epsilon=0.05)
    assert not trimmed.guarantee["exact"] and 0 < trimmed.guarantee["epsilon"] <= 0.05
    assert "trimmed" in trimmed.guarantee["basis"]
    assert opt * (1 - 1e-9) <= trimmed.evaluation.energy_j <= opt * (1 + trimmed.guarantee["epsilon"]) * (1 + 1e-12)
    exact = fin(ctx, epsilon=0.0)
    assert exact.guarantee["exact"] and is_close(exact.evaluation.energy_j, opt, 1e-9)


def test_lambda_pruning_states_its_bound(paper_network, paper_cards):
    ctx = paper_ctx(paper_network, paper_cards["b-alexnet"], 0.005, 0.80)
    opt = exhaustive(ctx).evaluation.energy_j
    for lam in (0.01, 0.5, 3.0):
        found = fin(ctx, lam=lam)
        g = found.guarantee
        assert g["exact"] or (g["epsilon"] is not None and found.evaluation.energy_j <= (1 + g["epsilon"]) * opt * (1 + 1e-12))


# ---------------------------------------------------------------- medium instances against the MILP

def _medium(seed: int, n_nodes: int = 7, n_blocks: int = 14, stage: bool = False, rate: bool = False):
    """A seeded random tiered network (source slow and frugal) and a 3-exit chain model."""
    rng = np.random.default_rng(seed)
    tiers = ["mobile"] * 3 + ["edge"] * 2 + ["cloud"] * (n_nodes - 5)
    nodes = []
    for j, tier in enumerate(tiers):
        ops = {"mobile": 5e9, "edge": 8e10, "cloud": 3e11}[tier] * rng.uniform(0.5, 2)
        power = {"mobile": 5.0, "edge": 120.0, "cloud": 350.0}[tier] * rng.uniform(0.5, 2)
        node = {"name": f"{tier}-{j}", "tier": tier, "compute": {"ops_per_s": float(ops), "power_w": float(power)}}
        if stage and rng.random() < 0.6:
            node["stage_overhead_s"] = float(rng.uniform(0, 2e-4))
        if rate and rng.random() < 0.5:
            node["max_utilization"] = float(rng.uniform(0.3, 1.0))
        nodes.append(node)
    rank = {"mobile": 0, "edge": 1, "cloud": 2}
    links = [{"from": a["name"], "to": b["name"], "bandwidth_bps": float(rng.uniform(1e8, 1e10)),
              "latency_s": float(rng.uniform(0, 5e-4)), "energy_j_per_bit": float(rng.uniform(1e-8, 7e-8))}
             for a in nodes for b in nodes if a is not b and rank[b["tier"]] >= rank[a["tier"]] and rng.random() < 0.6]
    flops = rng.uniform(1e6, 5e7, n_blocks)
    card = card_from_dict({
        "schema": "finplan.model/1", "name": "medium", "input_bytes": 3072,
        "blocks": [{"name": f"b{i}", "flops": float(flops[i]), "output_bytes": float(rng.uniform(1e3, 2e5)),
                    "params_bytes": 0} for i in range(n_blocks)],
        "exits": [{"name": f"x{k}", "after": f"b{a}", "flops": 0, "accuracy": acc}
                  for k, (a, acc) in enumerate(((n_blocks // 3, 0.6), (2 * n_blocks // 3, 0.75), (n_blocks - 1, 0.9)))]},
        "medium.json")
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    limit = float(rng.uniform(0.3, 0.7)) * float(flops.sum()) / nodes[0]["compute"]["ops_per_s"]
    app = Application("a", card, "medium.json", nodes[0]["name"], limit, 0.7, 50.0 if rate else None)
    return contexts(Scenario(network, (app,), Options()))[0]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["plain", "stage", "rate"])
def test_medium_instances_against_the_milp(seed, kind):
    ctx = _medium(seed, stage=kind == "stage", rate=kind == "rate")
    best, found = milp([ctx])[0], fin(ctx)
    _check_against(found, best, ctx)
    if best.evaluation is not None and not found.notes:
        assert found.evaluation is not None and found.guarantee["exact"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["plain", "stage", "rate"])
def test_incumbent_pruning_never_changes_the_answer(seed, kind, monkeypatch):
    """The scalarised incumbents (pareto.incumbent_placements) only let the label DP drop labels
    that cannot win: the same plan, energy, latency and guarantee as without them; each incumbent
    keeps the latency bound and is never cheaper than the optimum."""
    ctx = _medium(seed, n_nodes=10, n_blocks=24, stage=kind == "stage", rate=kind == "rate")
    chain = ctx.chain(ctx.accurate()[-1])
    assert (chain.n_blocks - 1) * len(ctx.table.links.tails) > pareto.SMALL_HOPS  # the pruned path is taken
    with_incumbent = fin(ctx)
    best = milp([ctx])[0]
    for i in ctx.accurate():
        ok = ctx.allowed(ctx.chain(i), None)
        for energy, nodes in pareto.incumbent_placements(ctx, ctx.chain(i), None, ok):
            ev = ctx.evaluate(i, nodes, None)
            assert ev.latency_s <= ctx.app.max_latency_s and is_close(ev.energy_j, energy, 1e-9)
            if best.evaluation is not None and ev.feasible:
                assert energy >= best.evaluation.energy_j * (1 - 1e-9)
    monkeypatch.setattr(pareto, "incumbent_placements", lambda *args, **kw: [])
    without = fin(ctx)
    assert (with_incumbent.evaluation is None) == (without.evaluation is None)
    if without.evaluation is not None:
        a, b = with_incumbent.evaluation, without.evaluation
        assert (a.placement, a.final_exit, a.energy_j, a.latency_s) == (b.placement, b.final_exit, b.energy_j, b.latency_s)
        assert with_incumbent.guarantee == without.guarantee


# ---------------------------------------------------------------- dynamic mode and stage overhead

@pytest.mark.parametrize("max_latency_s", [0.0025, 0.003, 0.004, 0.006, 0.012])
@pytest.mark.parametrize("min_accuracy", [0.6, 0.75, 0.82])
def test_dynamic_mode_with_stage_overhead_is_exact(paper_network, max_latency_s, min_accuracy):
    doc = json.loads(json.dumps(paper_network.doc))
    for node, overhead in zip(doc["nodes"], (3e-4, 5e-5, 7e-6)):
        node["stage_overhead_s"] = overhead
    network = network_from_dict(doc)
    app = Application("a", calibrated_card(), "cal.json", "device", max_latency_s, min_accuracy)
    ctx = contexts(Scenario(network, (app,), Options(mode="dynamic")))[0]
    assert len(ctx.accurate()) > 1 or min_accuracy > 0.8
    best, found = exhaustive(ctx), fin(ctx)
    _check_against(found, best, ctx)
    assert (found.evaluation is None) == (best.evaluation is None)
    if best.evaluation is not None:
        assert found.guarantee["exact"]
        assert (found.evaluation.placement, found.evaluation.thresholds) == \
            (best.evaluation.placement, best.evaluation.thresholds) or is_close(found.evaluation.energy_j,
                                                                                 best.evaluation.energy_j)


# ---------------------------------------------------------------- the old default gamma

def _frozen_ctx():
    doc = json.loads((DATA / "fin_gamma_loss.json").read_text())
    app = Application("app", card_from_dict(doc["card"], "random.json"), "random.json", doc["source"],
                      doc["max_latency_s"], doc["min_accuracy"])
    return contexts(Scenario(network_from_dict(doc["network"]), (app,), Options()))[0]


def test_old_gamma_1000_loses_energy_and_the_default_does_not():
    """benchmarks/speed.py's random_instance(6, 25, seed=21), frozen in tests/partition/data: the
    discretised graph at gamma 1000 (the old default) plans 1.65% above the MILP optimum and says
    it has no bound; the default is the optimum and says it is exact."""
    ctx = _frozen_ctx()
    opt = milp([ctx])[0].evaluation
    old, new = fin(ctx, gamma=GRAPH_GAMMA), fin(ctx)
    assert old.evaluation.feasible and old.evaluation.energy_j / opt.energy_j == pytest.approx(1.0165, abs=1e-3)
    assert old.guarantee["exact"] is False and old.guarantee["epsilon"] is None
    assert new.evaluation.feasible and is_close(new.evaluation.energy_j, opt.energy_j, 1e-9)
    assert new.guarantee["exact"] is True
    # the optimum uses the budget tightly: gamma 1000 rounds its 25 hops up and cannot afford it
    assert new.evaluation.latency_s > ctx.app.max_latency_s * (1 - 25 / GRAPH_GAMMA)


# ---------------------------------------------------------------- determinism, plan field, CLI

def test_plans_are_deterministic():
    ctx = _frozen_ctx()
    answers = {json.dumps([r.evaluation.placement, r.evaluation.energy_j, r.evaluation.final_exit, r.guarantee])
               for r in (fin(ctx) for _ in range(3))}
    assert len(answers) == 1
    scenario = Scenario(ctx.network, (ctx.app,), ctx.options)
    docs = {json.dumps(plan_document(scenario, solve(scenario, "fin")), sort_keys=True) for _ in range(2)}
    assert len(docs) == 1


def test_plan_records_the_guarantee_and_epsilon():
    ctx = _frozen_ctx()
    scenario = Scenario(ctx.network, (ctx.app,), ctx.options)
    doc = validate_plan(plan_document(scenario, solve(scenario, "fin", epsilon=0.01)))
    assert doc["solver"]["parameters"] == {"latency": "exact", "epsilon": 0.01, "lambda": 0.0}
    assert doc["applications"][0]["guarantee"]["exact"] is True
    doc = validate_plan(plan_document(scenario, solve(scenario, "fin", gamma=1000)))
    assert doc["solver"]["parameters"] == {"gamma": 1000, "lambda": 0.0}
    assert doc["applications"][0]["guarantee"]["epsilon"] is None
    assert "guarantee" not in validate_plan(plan_document(scenario, solve(scenario, "mcp")))["applications"][0]
    broken = plan_document(scenario, solve(scenario, "fin"))
    broken["applications"][0]["guarantee"]["exact"] = "yes"
    with pytest.raises(FinplanInputError):
        validate_plan(broken)


@pytest.mark.parametrize("value", [-0.1, float("nan"), True, "0.1"])
def test_library_refuses_a_bad_epsilon_by_its_parameter_name(value):
    ctx = _frozen_ctx()
    with pytest.raises(FinplanInputError) as err:
        fin(ctx, epsilon=value)
    assert err.value.field == "epsilon"


def test_cli_summary_and_epsilon(capsys, tmp_path):
    card, net = PAPER / "b-alexnet.json", PAPER / "network.yaml"
    code, out, _err = run(capsys, *shortcut(card, net))
    assert code == 0 and "optimality: exact" in out
    code, out, _err = run(capsys, *shortcut(card, net, "--gamma", "1000"))
    assert code == 0 and "optimality: no bound (latencies rounded up" in out
    target = tmp_path / "plan.json"
    code, _out, _err = run(capsys, *shortcut(card, net, "--epsilon", "0", "-o", target, "-q"))
    plan = json.loads(target.read_text())
    assert code == 0 and plan["solver"]["parameters"]["epsilon"] == 0.0 and plan["applications"][0]["guarantee"]["exact"]
    for value in ("-1", "x", "inf", "nan"):
        line = bad(capsys, *shortcut(card, net, "--epsilon", value, "-o", tmp_path / "p.json"), expect=("--epsilon",))
        assert "expected a number >= 0" in line


def test_default_epsilon_is_the_issue_target():
    assert DEFAULT_EPSILON == 1e-3
