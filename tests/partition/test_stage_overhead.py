"""The runtime's per-stage cost in the cost model: once per runtime stage (a run of blocks on one
node, cut at every active exit and every node change), weighted by the probability the stage
runs; from a node's hand-given ``stage_overhead_s`` or its profile; 0 on analytic nodes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finplan.errors import FinplanInputError
from finplan.partition.context import contexts
from finplan.partition.costs import cost_table, is_close
from finplan.partition.evaluate import evaluate
from finplan.partition.exhaustive import exhaustive
from finplan.partition.fin import fin
from finplan.partition.milp import milp
from finplan.partition.paths import layered_shortest
from finplan.partition.documents import network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from test_dynamic_and_multi import calibrated_card

O_DEVICE, O_EDGE, O_CLOUD = 3e-4, 5e-5, 7e-6  # distinct, so a wrong node's overhead shows


def _network(overheads=(O_DEVICE, O_EDGE, O_CLOUD), **node_extra):
    nodes = []
    for (name, ops, power), o in zip((("device", 1e9, 2.0), ("edge", 1e10, 20.0), ("cloud", 1e11, 200.0)), overheads):
        node = {"name": name, "tier": name, "compute": {"ops_per_s": ops, "power_w": power}, **node_extra.get(name, {})}
        if o is not None:
            node["stage_overhead_s"] = o
        nodes.append(node)
    links = [{"from": a, "to": b, "bandwidth_bps": 1e8, "latency_s": 1e-3, "energy_j_per_bit": 1e-8}
             for a, b in (("device", "edge"), ("edge", "cloud"), ("device", "cloud"))]
    return network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})


def _app(card, max_latency_s=1.0, min_accuracy=0.0, rate_hz=None):
    return Application("a", card, "cal.json", "device", max_latency_s, min_accuracy, rate_hz)


@pytest.fixture(scope="module")
def card():
    return calibrated_card()


def test_analytic_nodes_have_no_stage_cost(card):
    plain = _network(overheads=(None, None, None))
    assert cost_table(card, plain).stage_overhead_s.tolist() == [0.0, 0.0, 0.0]
    zero = _network(overheads=(0.0, 0.0, 0.0))
    for placement in (["device"] * 5, ["device", "edge", "edge", "cloud", "cloud"]):
        a = evaluate(_app(card), plain, Options(), placement, "exit3")
        b = evaluate(_app(card), zero, Options(), placement, "exit3")
        assert (a.latency_s, a.expected_latency_s, a.energy_j) == (b.latency_s, b.expected_latency_s, b.energy_j)


def test_static_plan_pays_one_stage_per_node_visited(card):
    """Static mode, final exit only: a stage per node change plus the final stage."""
    with_o, without = _network(), _network(overheads=(None, None, None))
    placement = ["device", "edge", "edge", "cloud", "cloud"]
    a = evaluate(_app(card), with_o, Options(), placement, "exit3")
    b = evaluate(_app(card), without, Options(), placement, "exit3")
    assert a.latency_s == pytest.approx(b.latency_s + O_DEVICE + O_EDGE + O_CLOUD, rel=1e-12)
    assert a.expected_latency_s == pytest.approx(b.expected_latency_s + O_DEVICE + O_EDGE + O_CLOUD, rel=1e-12)
    assert a.energy_j == b.energy_j  # a time, not an energy
    for node, o in (("device", O_DEVICE), ("edge", O_EDGE), ("cloud", O_CLOUD)):
        assert a.per_node[node]["busy_s"] == pytest.approx(b.per_node[node]["busy_s"] + o, rel=1e-12)
    one = evaluate(_app(card), with_o, Options(), ["device"] * 5, "exit3")
    alone = evaluate(_app(card), without, Options(), ["device"] * 5, "exit3")
    assert one.latency_s == pytest.approx(alone.latency_s + O_DEVICE, rel=1e-12)


def test_dynamic_plan_weights_each_stage_by_the_probability_it_runs(card):
    """exit1 active after block1 on the device; exit2 inactive; node change after block3 (no head
    there): stages [block1+exit1]@device, [block2, block3]@device, [block4, block5+exit3]@edge."""
    thr = float(np.quantile(card.calibration.confidence["exit1"], 0.5, method="lower"))
    placement = ["device", "device", "device", "edge", "edge"]
    opts = Options(mode="dynamic")
    a = evaluate(_app(card), _network(), opts, placement, "exit3", {"exit1": thr})
    b = evaluate(_app(card), _network(overheads=(None, None, None)), opts, placement, "exit3", {"exit1": thr})
    r1 = a.exit_rates["exit1"]
    go_on = 1.0 - r1
    assert 0 < r1 < 1
    # the slowest input runs all three stages
    assert a.latency_s == pytest.approx(b.latency_s + 2 * O_DEVICE + O_EDGE, rel=1e-12)
    # an input leaving at exit1 paid one stage; one leaving at exit3 paid three
    assert a.expected_latency_s == pytest.approx(
        b.expected_latency_s + r1 * O_DEVICE + go_on * (2 * O_DEVICE + O_EDGE), rel=1e-12)
    assert a.per_node["device"]["busy_s"] == pytest.approx(b.per_node["device"]["busy_s"] + O_DEVICE + go_on * O_DEVICE,
                                                           rel=1e-12)
    assert a.per_node["edge"]["busy_s"] == pytest.approx(b.per_node["edge"]["busy_s"] + go_on * O_EDGE, rel=1e-12)
    # a node change right after an active exit starts no extra stage
    c = evaluate(_app(card), _network(), opts, ["device", "edge", "edge", "edge", "edge"], "exit3", {"exit1": thr})
    d = evaluate(_app(card), _network(overheads=(None, None, None)), opts, ["device", "edge", "edge", "edge", "edge"],
                 "exit3", {"exit1": thr})
    assert c.latency_s == pytest.approx(d.latency_s + O_DEVICE + O_EDGE, rel=1e-12)


def test_a_node_given_stage_overhead_changes_the_plan(card):
    """A per-stage cost on the node the plan offloads to pushes the old optimum over the limit:
    the plan changes, and latencies grow by exactly the stage costs."""
    plain = _network(overheads=(None, None, None))
    app = _app(card, max_latency_s=0.06, min_accuracy=0.8)
    base = exhaustive(contexts(Scenario(plain, (app,), Options()))[0]).evaluation
    assert base is not None and base.placement[-1] != "device"
    offload = base.placement[-1]
    o = 1.5 * (app.max_latency_s - base.latency_s)  # more than the old optimum's slack
    heavy = _network(overheads=tuple(o if n == offload else None for n in ("device", "edge", "cloud")))
    again = evaluate(app, heavy, Options(), base.placement, base.final_exit)
    assert again.latency_s == pytest.approx(base.latency_s + o, rel=1e-12) and not again.feasible
    found = fin(contexts(Scenario(heavy, (app,), Options()))[0]).evaluation
    assert found is not None and found.placement != base.placement
    stages_there = 1 if offload in found.placement else 0  # static plan: one stage per node visited
    assert found.latency_s == pytest.approx(
        evaluate(app, plain, Options(), found.placement, found.final_exit).latency_s + o * stages_there, rel=1e-12)
    assert found.latency_s < app.max_latency_s


def test_stage_overhead_from_the_profile_and_by_hand(tmp_path, card):
    profile = {"schema": "finplan.profile/1", "model": {"name": card.name, "hash": "sha256:x"},
               "stage_overhead_s": {"value": 2.5e-5, "method": "runtime-stage-probe", "measured": True}}
    from finplan.partition.profile_costs import node_stage_overhead_s

    net = _network(overheads=(None, None, None))
    node = net.node("device")
    measured = type(node)(**{**node.__dict__, "profiles": (("p.json", profile),)})
    hashless = copy.copy(card)
    object.__setattr__(hashless, "hash", None)
    assert node_stage_overhead_s(measured, hashless) == 2.5e-5
    by_hand = type(node)(**{**node.__dict__, "profiles": (("p.json", profile),), "stage_overhead_s": 1e-3})
    assert node_stage_overhead_s(by_hand, hashless) == 1e-3  # the hand-given value wins
    old = {k: v for k, v in profile.items() if k != "stage_overhead_s"}
    assert node_stage_overhead_s(type(node)(**{**node.__dict__, "profiles": (("p.json", old),)}), hashless) == 0.0


def test_profiled_parts_lose_the_per_call_cost_a_fused_stage_pays_once(card):
    """With a measured stage overhead that names onnxruntime's per-call cost, a part's time is
    its p50 less that cost (floored at 0); a hand-given stage overhead or an older profile keeps
    the p50s as they are."""
    from finplan.partition.profile_costs import node_block_costs

    p50 = {b.name: 1e-5 * (i + 1) for i, b in enumerate(card.blocks)}
    p50.update({e.name: 2e-6 for e in card.exits})

    def part(name):
        return {"name": name, "latency_s": {"p50": p50[name]}, "energy_j": {"value": 1e-3}}

    call_s = 3e-6
    profile = {"schema": "finplan.profile/1", "model": {"name": card.name, "hash": card.hash},
               "blocks": [part(b.name) for b in card.blocks], "exits": [part(e.name) for e in card.exits],
               "stage_overhead_s": {"value": 2.5e-5, "method": "runtime-stage-probe", "measured": True,
                                    "part_call_overhead_s": call_s}}
    node = _network(overheads=(None, None, None)).node("device")
    measured = type(node)(**{**node.__dict__, "profiles": (("p.json", profile),), "ops_per_s": None})
    bt, _be, et, _ee = node_block_costs(measured, card)
    assert bt == [max(p50[b.name] - call_s, 0.0) for b in card.blocks]
    assert et == [0.0] * len(card.exits)  # 2 us parts, 3 us per call: floored at 0
    by_hand = type(node)(**{**measured.__dict__, "stage_overhead_s": 1e-4})
    assert node_block_costs(by_hand, card)[0] == [p50[b.name] for b in card.blocks]
    older = {**profile, "stage_overhead_s": {"value": 2.5e-5, "method": "runtime-stage-probe", "measured": True}}
    assert node_block_costs(type(node)(**{**measured.__dict__, "profiles": (("p.json", older),)}), card)[0] == \
        [p50[b.name] for b in card.blocks]


def test_bad_stage_overhead_is_refused():
    with pytest.raises(FinplanInputError, match=r"stage_overhead_s"):
        _network(overheads=(-1.0, None, None))


def test_fastest_path_includes_stage_costs(card):
    app = _app(card)
    ctx = contexts(Scenario(_network(), (app,), Options()))[0]
    i = next(i for i, p in enumerate(ctx.policies) if p.final_exit == 2)
    latency, _energy, nodes = layered_shortest(ctx, ctx.chain(i), "latency")
    ev = ctx.evaluate(i, nodes)
    assert latency == pytest.approx(ev.latency_s, rel=1e-12)


SOLVERS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@SOLVERS
@given(st.lists(st.sampled_from([0.0, 1e-5, 1e-4, 1e-3, 5e-3]), min_size=3, max_size=3),
       st.sampled_from([0.002, 0.004, 0.008, 0.03]), st.sampled_from([0.5, 0.7, 0.8]),
       st.sampled_from(["static", "dynamic"]), st.sampled_from([None, 50.0, 400.0]))
def test_solvers_agree_with_stage_overheads(overheads, latency, accuracy, mode, rate):
    card = calibrated_card(n=120)
    extra = {"edge": {"max_utilization": 0.5}} if rate else {}
    network = _network(overheads=tuple(overheads), **extra)
    app = _app(card, latency, accuracy, rate)
    ctx = contexts(Scenario(network, (app,), Options(mode=mode)))[0]
    best, exact, found = exhaustive(ctx), milp([ctx])[0], fin(ctx, gamma=4000)
    assert (best.evaluation is None) == (exact.evaluation is None)
    for result in (best, exact, found):
        if result.evaluation is not None:
            assert result.evaluation.feasible
    if best.evaluation is not None:
        assert is_close(exact.evaluation.energy_j, best.evaluation.energy_j, 1e-7)
        if found.evaluation is not None:
            assert found.evaluation.energy_j >= best.evaluation.energy_j * (1 - 1e-9)
        elif best.evaluation.latency_s < latency * (1 - 1e-2):
            pytest.fail("FIN missed a plan well inside the latency limit")
