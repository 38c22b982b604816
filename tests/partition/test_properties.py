"""Property tests on random small instances (<= 5 nodes, <= 8 blocks): FIN is never
infeasible under the exact model, never below the exhaustive optimum, finds a plan
whenever gamma is generous enough to matter, and never gets worse when gamma doubles."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finplan.partition.context import contexts
from finplan.partition.costs import is_close
from finplan.partition.exhaustive import exhaustive
from finplan.partition.fin import fin
from finplan.partition.milp import milp
from finplan.partition.documents import card_from_dict, network_from_dict
from finplan.partition.problem import Application, Options, Scenario

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
MILP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def instances(draw, capacity=False):
    n_nodes = draw(st.integers(1, 5))
    nodes = []
    for j in range(n_nodes):
        # the source (n0) is slow and frugal, the others fast and hungry: offloading is a real trade-off
        ops = draw(st.floats(1e8, 5e9)) if j == 0 else draw(st.floats(1e9, 2e11))
        power = draw(st.floats(0.5, 10)) if j == 0 else draw(st.floats(5, 400))
        node = {"name": f"n{j}", "tier": ["mobile", "edge", "cloud"][min(j, 2)],
                "compute": {"ops_per_s": ops, "power_w": power}}
        if capacity and draw(st.booleans()):
            node["max_utilization"] = draw(st.floats(0.05, 1.0))
        if capacity and draw(st.booleans()):
            node["memory_bytes"] = draw(st.floats(1e3, 1e5))
        nodes.append(node)
    links = []
    for a in range(n_nodes):
        for b in range(n_nodes):
            if a != b and draw(st.integers(0, 9)) < 7:
                link = {"from": f"n{a}", "to": f"n{b}", "bandwidth_bps": draw(st.floats(1e6, 1e10)),
                        "latency_s": draw(st.sampled_from([0.0, 1e-4, 1e-3])),
                        "energy_j_per_bit": draw(st.floats(1e-10, 1e-7))}
                if capacity and draw(st.booleans()):
                    link["max_utilization"] = draw(st.floats(0.05, 1.0))
                links.append(link)
    n_blocks = draw(st.integers(1, 8))
    blocks = [{"name": f"b{i}", "flops": draw(st.floats(1e5, 5e7)), "output_bytes": draw(st.floats(0, 2e5)),
               "params_bytes": draw(st.floats(0, 4e4))} for i in range(n_blocks)]
    afters = sorted(set(draw(st.lists(st.integers(0, n_blocks - 1), min_size=1, max_size=3))))
    exits = [{"name": f"e{i}", "after": f"b{a}", "flops": draw(st.floats(0, 1e6)), "accuracy": draw(st.floats(0.1, 0.99))}
             for i, a in enumerate(afters)]
    network = network_from_dict({"schema": "finplan.network/1", "nodes": nodes, "links": links})
    card = card_from_dict({"schema": "finplan.model/1", "name": "m", "input_bytes": draw(st.floats(1, 1e5)),
                           "blocks": blocks, "exits": exits})
    at_source = sum(b["flops"] for b in blocks) / nodes[0]["compute"]["ops_per_s"]
    max_latency = at_source * draw(st.floats(0.05, 1.5))
    options = Options(first_block_at_source=draw(st.booleans()), strict=draw(st.booleans()))
    rate = draw(st.floats(1, 2000)) if capacity else None
    app = Application("a", card, "m.json", "n0", max_latency, draw(st.floats(0.0, 0.9)), rate)
    return contexts(Scenario(network, (app,), options))[0]


def _energy(result):
    return None if result.evaluation is None else result.evaluation.energy_j


@FAST
@given(instances(), st.sampled_from([1, 4, 16, 100, 1000]))
def test_fin_is_feasible_and_never_below_the_optimum(ctx, gamma):
    best = exhaustive(ctx)
    found = fin(ctx, gamma=gamma)
    if found.evaluation is not None:
        assert found.evaluation.feasible
        assert best.evaluation is not None
        assert found.evaluation.energy_j >= best.evaluation.energy_j * (1 - 1e-9)
    else:
        assert found.reason
        if best.evaluation is not None:
            # FIN may miss a solution only through the discretisation, and must say so
            assert "--gamma" in found.reason


@FAST
@given(instances(), st.sampled_from([1, 3, 10, 50, 250]))
def test_energy_never_rises_when_gamma_doubles(ctx, gamma):
    coarse, fine = _energy(fin(ctx, gamma=gamma)), _energy(fin(ctx, gamma=2 * gamma))
    if coarse is not None:
        assert fine is not None and fine <= coarse * (1 + 1e-9)


@FAST
@given(instances())
def test_fin_converges_to_the_optimum(ctx):
    """With a very fine grid FIN misses nothing unless the optimum sits within a hair of the limit."""
    best = exhaustive(ctx)
    found = fin(ctx, gamma=20000)
    if best.evaluation is None:
        assert found.evaluation is None
    elif best.evaluation.latency_s < ctx.app.max_latency_s * (1 - 1e-3):
        assert found.evaluation is not None
        assert is_close(found.evaluation.energy_j, best.evaluation.energy_j, 1e-9)


@MILP
@given(instances())
def test_milp_equals_exhaustive(ctx):
    best, exact = exhaustive(ctx), milp([ctx])[0]
    assert (best.evaluation is None) == (exact.evaluation is None)
    if best.evaluation is not None:
        assert exact.evaluation.feasible
        assert is_close(exact.evaluation.energy_j, best.evaluation.energy_j, 1e-7)


@MILP
@given(instances(capacity=True))
def test_capacity_respected_and_exact_solvers_agree(ctx):
    best, exact, found = exhaustive(ctx), milp([ctx])[0], fin(ctx)
    assert (best.evaluation is None) == (exact.evaluation is None)
    for result in (best, exact, found):
        if result.evaluation is not None:
            assert result.evaluation.feasible and not result.evaluation.violations
    if best.evaluation is not None:
        assert is_close(exact.evaluation.energy_j, best.evaluation.energy_j, 1e-7)
        if found.evaluation is not None:
            assert found.evaluation.energy_j >= best.evaluation.energy_j * (1 - 1e-9)


@MILP
@given(instances(), st.sampled_from([0.01, 0.1, 1.0]))
def test_lambda_pruning_stays_feasible_and_above_the_optimum(ctx, lam):
    best, found = exhaustive(ctx), fin(ctx, gamma=200, lam=lam)
    if found.evaluation is not None:
        assert found.evaluation.feasible and best.evaluation is not None
        assert found.evaluation.energy_j >= best.evaluation.energy_j * (1 - 1e-9)


EXPLAIN = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@EXPLAIN
@given(instances(capacity=True), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.sampled_from([2, 50, 1000]))
def test_explanations_never_claim_what_is_not_so(ctx, source_taken, link_taken, gamma):
    """With other applications' load on the source and a link: an explanation that proves no
    plan exists is right (the exhaustive optimum has none), a placement it offers is feasible,
    and FIN's gamma advice and "no plan" verdicts agree with the exhaustive optimum."""
    from finplan.partition.evaluate import Usage
    from finplan.partition.explain import explain

    # shares of the limits (other applications never take more than a limit)
    usage = Usage(node_utilization={"n0": source_taken * ctx.network.node("n0").max_utilization})
    if ctx.network.links:
        first = ctx.network.links[0]
        usage.link_utilization[(first.src, first.dst)] = link_taken * first.max_utilization
    best = exhaustive(ctx, usage)
    why = explain(ctx, usage)
    if why.proven:
        assert best.evaluation is None, why.sentence
    if why.witness is not None:
        assert why.witness.feasible and best.evaluation is not None
    found = fin(ctx, gamma=gamma, usage=usage)
    if found.evaluation is None:
        if "--gamma" in found.reason or "within every limit exists" in found.reason:
            assert best.evaluation is not None, found.reason
        if best.evaluation is not None:  # FIN missed it: it must not say that none exists
            assert "--gamma" in found.reason or "--solver milp" in found.reason, found.reason
