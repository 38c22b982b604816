"""The baselines' definitions, pinned on a small hand-made instance.

device: slow and frugal, the source; edge: fast, max_utilization 0.05 (one block at 10 Hz
fits, two do not); cloud: fastest. Links device -> edge and device -> cloud only.
Times at 10 Hz: b1 20 / 2 / 0.4 ms, b2 30 / 3 / 0.6 ms, b3 40 / 4 / 0.8 ms (device / edge / cloud).
"""
from __future__ import annotations

import itertools

import pytest

from finplan.partition.baselines import cloud_only, device_only, min_latency, single_cut
from finplan.partition.context import contexts
from finplan.partition.costs import is_close
from finplan.partition.evaluate import CAPACITY_TAGS
from finplan.partition.documents import card_from_dict, network_from_dict
from finplan.partition.problem import Application, Options, Scenario

NETWORK = {"schema": "finplan.network/1",
           "nodes": [{"name": "device", "tier": "mobile", "compute": {"ops_per_s": 1e9, "power_w": 2}},
                     {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 1e10, "power_w": 50},
                      "max_utilization": 0.05},
                     {"name": "cloud", "tier": "cloud", "compute": {"ops_per_s": 5e10, "power_w": 200}}],
           "links": [{"from": "device", "to": "edge", "bandwidth_bps": 1e8, "latency_s": 0.001, "energy_j_per_bit": 1e-8},
                     {"from": "device", "to": "cloud", "bandwidth_bps": 5e7, "latency_s": 0.005,
                      "energy_j_per_bit": 5e-9}]}
CARD = {"schema": "finplan.model/1", "name": "m", "input_bytes": 10000,
        "blocks": [{"name": "b1", "flops": 2e7, "output_bytes": 40000}, {"name": "b2", "flops": 3e7, "output_bytes": 20000},
                   {"name": "b3", "flops": 4e7, "output_bytes": 0}],
        "exits": [{"name": "e1", "after": "b2", "accuracy": 0.7}, {"name": "e2", "after": "b3", "accuracy": 0.9}]}


def make(max_latency_s=0.2, min_accuracy=0.8, rate_hz=10.0, **options):
    app = Application("a", card_from_dict(CARD), "m.json", "device", max_latency_s, min_accuracy, rate_hz)
    return contexts(Scenario(network_from_dict(NETWORK), (app,), Options(**options)))[0]


def every_placement(ctx):
    """(policy index, nodes, evaluation) of every node sequence of every exit policy."""
    for i in range(len(ctx.policies)):
        for nodes in itertools.product(range(len(ctx.network.names)), repeat=ctx.chain(i).n_blocks):
            yield i, list(nodes), ctx.evaluate(i, list(nodes))


def test_device_only_runs_every_block_at_the_source():
    ctx = make()
    ev = device_only(ctx).evaluation
    assert ev.placement == ["device"] * 3 and ev.final_exit == "e2" and ev.feasible and ev.transfers == []
    # the cheapest accuracy-meeting exit: with a lower target, the earlier exit (fewer blocks)
    assert device_only(make(min_accuracy=0.5)).evaluation.placement == ["device"] * 2


def test_cloud_only_sends_the_raw_input_to_the_fastest_linked_node():
    ctx = make()
    result = cloud_only(ctx)
    ev = result.evaluation
    assert ev.placement == ["cloud"] * 3 and ev.feasible
    assert [(t["from"], t["to"], t["after_block"]) for t in ev.transfers] == [("device", "cloud", "input")]
    # that is its definition even when first_block_at_source is true, and it says so
    assert any("first_block_at_source" in note for note in result.notes)
    assert not any("first_block_at_source" in note for note in cloud_only(make(first_block_at_source=False)).notes)


def test_single_cut_is_the_cheapest_single_cut():
    ctx = make()
    ev = single_cut(ctx).evaluation
    names = ctx.network.names
    cuts = []
    for i in ctx.accurate():
        k = ctx.chain(i).n_blocks
        for m in (1, 2):  # the nodes linked from the source
            for cut in range(1, k + 1):  # block 1 stays at the source (first_block_at_source)
                cand = ctx.evaluate(i, [0] * cut + [m] * (k - cut))
                if cand.feasible:
                    cuts.append(cand.energy_j)
    assert ev.feasible and is_close(ev.energy_j, min(cuts), 1e-12)
    nodes = [names.index(n) for n in ev.placement]
    assert nodes[0] == 0 and len(set(nodes)) <= 2 and nodes == sorted(nodes, key=lambda n: n != 0)


def test_min_latency_is_the_fastest_placement_within_capacity():
    """The overall fastest (device, edge, edge: 31.2 ms) loads edge to 0.07 of its 0.05; each
    block alone fits, so only the sum shows it. min-latency must return the fastest placement
    that fits (it used to return the overloaded one, marked infeasible)."""
    ctx = make()
    fastest_any = min((ev.latency_s, ev.placement) for i, nodes, ev in every_placement(ctx)
                      if not set(ev.violated) & {"route", "first_block_at_source", "accuracy"})
    assert fastest_any[1] == ["device", "edge", "edge"]
    fits = [ev for _i, _nodes, ev in every_placement(ctx)
            if not set(ev.violated) & {"route", "first_block_at_source", "accuracy"}
            and not any(tag.startswith(CAPACITY_TAGS) for tag in ev.violated)]
    exact = min(fits, key=lambda ev: (ev.latency_s, ev.energy_j))
    ev = min_latency(ctx).evaluation
    assert ev.feasible and ev.placement == exact.placement == ["device", "cloud", "cloud"]
    assert ev.latency_s == pytest.approx(exact.latency_s, rel=1e-12)
    # above the enumeration limit a repair heuristic: within capacity, never faster than the exact
    heuristic = min_latency(ctx, limit=0).evaluation
    assert not any(tag.startswith(CAPACITY_TAGS) for tag in heuristic.violated)
    assert heuristic.latency_s >= exact.latency_s * (1 - 1e-12)


def test_min_latency_over_the_bound_is_reported_infeasible():
    ctx = make(max_latency_s=0.030)  # the fastest placement within capacity takes 32.8 ms
    result = min_latency(ctx)
    assert result.evaluation.placement == ["device", "cloud", "cloud"]
    assert not result.feasible and "over the 30 ms limit" in result.reason
