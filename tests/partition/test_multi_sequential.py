"""Sequential planning's fallback: solo checks are made once per application and reused."""
from __future__ import annotations

from finplan.partition.context import contexts
from finplan.partition.evaluate import Usage
from finplan.partition.fin import fin
from finplan.partition.multi import plan_sequentially
from test_milp_time_limit import crowded


def test_solo_checks_once_per_application(paper_network, paper_cards):
    ctxs = contexts(crowded(paper_network, paper_cards, 20))
    calls = {"solo": [], "all": 0}

    def one(ctx, usage):
        calls["all"] += 1
        if usage == Usage():
            calls["solo"].append(ctx.app.name)
        return fin(ctx, 1000, 0.0, usage)

    results, info = plan_sequentially(ctxs, one)
    unserved = [r for r in results if not r.feasible]
    assert unserved and info["orders_tried"] > 1  # the fallback ran
    assert len(calls["solo"]) == len(set(calls["solo"]))  # never the same solo check twice
    # one pass per order tried, less the reused solo answers of the re-planned first applications
    assert calls["all"] <= len(ctxs) * info["orders_tried"] + len(unserved)
    for r in unserved:
        assert r.reason.endswith("alone it would fit, but not next to the other applications")
    usage = Usage()
    for r in results:
        if r.feasible:
            usage = usage.plus(r.evaluation)
    for name in ("edge", "cloud"):
        assert usage.node_utilization.get(name, 0.0) <= 0.2 * (1 + 1e-9)
