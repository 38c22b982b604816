"""FIN's two graph representations (sparse Pareto frontiers and dense unit arrays) build
the same graph and give bit-identical answers; prefix sharing between exit policies and
lambda pruning keep their semantics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finplan.errors import FinplanInputError
from finplan.partition import fin as F
from finplan.partition import fin_graph as G
from finplan.partition import hops as H
from finplan.partition.context import contexts
from finplan.partition.problem import Options, Scenario
from test_dynamic_and_multi import calibrated_card
from test_properties import instances

SAME = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
METHODS = ("sparse", "dense", "auto")


def _graph_arrays(graph):
    """Per layer: energies and, on existing vertices, parents; plus the terminals."""
    out = []
    n_nodes = graph.topology.n_nodes
    for b, layer in enumerate(graph.layers):
        energy = graph.energy(b)
        dense = layer if isinstance(layer, G._DenseLayer) else G._to_dense(layer, n_nodes, graph.gamma)
        out.append((energy, np.where(np.isfinite(energy), dense.parent, -2)))
    return out, G.graph_terminals(graph)


def _assert_same_graphs(ctx, gamma, lam, usage=None):
    for i in ctx.accurate():
        chain = ctx.chain(i)
        ref_layers, ref_terms = _graph_arrays(G.build_graph(ctx, chain, gamma, lam, usage, method="dense"))
        for method in ("sparse", "auto"):
            layers, terms = _graph_arrays(G.build_graph(ctx, chain, gamma, lam, usage, method=method))
            assert terms == ref_terms
            for (e1, p1), (e2, p2) in zip(layers, ref_layers):
                assert np.array_equal(e1, e2) and np.array_equal(p1, p2)


def _answer(result):
    ev = result.evaluation
    if ev is None:
        return None, result.reason
    return ev.energy_j, ev.latency_s, ev.placement, ev.final_exit, ev.thresholds, result.notes


@SAME
@given(instances(capacity=True), st.sampled_from([1, 3, 16, 100, 1000]), st.sampled_from([0.0, 0.0, 0.01, 0.3]))
def test_sparse_and_dense_fin_are_bit_identical(ctx, gamma, lam):
    _assert_same_graphs(ctx, gamma, lam)
    answers = {m: _answer(F.fin(ctx, gamma, lam, method=m)) for m in METHODS}
    assert answers["sparse"] == answers["dense"] == answers["auto"]


@SAME
@given(instances(), st.sampled_from([2, 50, 2000]))
def test_sparse_and_dense_agree_without_capacity(ctx, gamma):
    _assert_same_graphs(ctx, gamma, 0.0)
    assert _answer(F.fin(ctx, gamma, method="sparse")) == _answer(F.fin(ctx, gamma, method="dense"))


@SAME
@given(st.lists(st.one_of(st.just(math.inf), st.floats(0.0, 10.0)), min_size=1, max_size=30),
       st.sampled_from([0.0, 0.001, 0.1, 1.0]))
def test_frontier_pruning_is_the_dense_rule(row, lam):
    """(1 + lambda) over the replicas in order of units (lambda = 0: dominated replicas only)."""
    dense = np.array([row])
    G._prune(dense, lam)
    sparse = G._prune_front({q: (q, e, 0, 0) for q, e in enumerate(row) if math.isfinite(e)}, lam)
    assert [(q, e) for q, e, _n, _p in sparse] == [(int(q), float(dense[0, q])) for q in np.flatnonzero(np.isfinite(dense[0]))]


def test_lambda_rule_by_hand():
    # units 0..4; lambda 0.5: keep 10 (first), drop 8 (8 x 1.5 >= 10), keep 6, drop 7 (dominated), keep 3
    best = {q: (q, e, 0, 0) for q, e in enumerate([10.0, 8.0, 6.0, 7.0, 3.0])}
    assert [e for _q, e, _n, _p in G._prune_front(best, 0.5)] == [10.0, 6.0, 3.0]
    assert [e for _q, e, _n, _p in G._prune_front(best, 0.0)] == [10.0, 8.0, 6.0, 3.0]


def test_dynamic_mode_methods_agree(paper_network):
    from finplan.partition.problem import Application

    app = Application("a", calibrated_card(), "cal.json", "device", 0.004, 0.75)
    ctx = contexts(Scenario(paper_network, (app,), Options(mode="dynamic")))[0]
    assert len(ctx.accurate()) > 1
    for gamma in (20, 1000):
        _assert_same_graphs(ctx, gamma, 0.0)
        answers = {m: _answer(F.fin(ctx, gamma, method=m)) for m in METHODS}
        assert answers["sparse"] == answers["dense"] == answers["auto"] and answers["auto"][0] is not None


@SAME
@given(instances(), st.sampled_from([10, 1000]))
def test_prefix_sharing_changes_nothing(ctx, gamma):
    """Policies whose chains share a prefix (static exits) reuse its layers: same graphs as alone."""
    shared: dict = {}
    for i in ctx.accurate():
        chain = ctx.chain(i)
        alone = G.build_graph(ctx, chain, gamma)
        with_prefix = G.build_graph(ctx, chain, gamma, shared=shared)
        for b in range(chain.n_blocks):
            assert np.array_equal(alone.energy(b), with_prefix.energy(b))
        assert G.graph_terminals(alone) == G.graph_terminals(with_prefix)


def test_unknown_method_is_refused(paper_network, paper_cards):
    from partition_helpers import paper_ctx

    ctx = paper_ctx(paper_network, paper_cards["b-alexnet"], 0.005, 0.80)
    with pytest.raises(FinplanInputError):
        F.fin(ctx, method="fast")


@SAME
@given(instances(capacity=True), st.sampled_from([1, 7, 1000]), st.integers(0, 2**32 - 1))
def test_small_hops_are_the_numpy_hops_bit_for_bit(ctx, gamma, seed):
    """The plain-Python hop computation (small instances) and the numpy one give the same
    units and energies, with and without per-stage overhead on cuts."""
    import dataclasses

    rng = np.random.default_rng(seed)
    topo = ctx.table.links
    for i in ctx.accurate():
        chain = ctx.chain(i)
        if chain.n_blocks < 2:
            continue
        with_cuts = dataclasses.replace(chain, cut_time_s=rng.uniform(0, 1e-3, chain.cut_time_s.shape)
                                        * (rng.random(chain.cut_time_s.shape) < 0.5))
        for c in (chain, with_cuts):
            for lo in range(1, c.n_blocks):
                small = H._chain_hops_small(topo, c, gamma, ctx.app.max_latency_s, lo)
                big = H._chain_hops_numpy(topo, c, gamma, ctx.app.max_latency_s, lo)
                assert small.units_list == big.units_list
                assert small.energy_list == big.energy_list
                assert np.array_equal(small.energy, big.energy)
