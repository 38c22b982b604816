"""``finplan run --engine ray-compiled`` (marker ``ray``): the deployment as a Ray Compiled Graph on
a local multi-node Ray instance, one actor per plan node. Each test starts its own instance (the
engine owns it for the run), so there are few of them."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from finplan.deploy.executor import LocalExecutor
from finplan.deploy.ray_serve.graph import LABEL_KEY

pytestmark = pytest.mark.ray


def _same_as_local(m, local) -> None:
    assert m.exit_names == local.exit_names
    assert np.array_equal(m.predictions, local.predictions)
    np.testing.assert_allclose(m.confidences, local.confidences, rtol=0, atol=1e-6)
    # the same work, node by node: an exit at a node skips every stage after it
    assert m.node_calls == local.node_calls
    assert m.block_samples == local.block_samples and m.exit_samples == local.exit_samples
    assert m.link_bytes == local.link_bytes and m.link_samples == local.link_samples


def test_compiled_graph_answers_as_the_local_executor_on_a_revisiting_chain(ray_deployments, tiny_inputs):
    """device -> edge -> device: one actor appears twice in the graph; exits leave the batch."""
    from finplan.deploy.ray_serve.compiled import run_compiled
    from finplan.deploy.ray_serve.runner import engine_overhead_rows

    folder = ray_deployments["revisit-dynamic"]
    x, y = tiny_inputs
    local = LocalExecutor(folder).run(x, y, batch_size=4)
    placed = {}

    def where(chain):
        import ray

        if not placed:
            placed.update({node: ray.get(actor.describe.remote(), timeout=30) for node, actor in chain.actors.items()})

    m = run_compiled(folder, x, y, batch_size=4, threads=1, inflight=2, on_chain=where)
    assert m.engine == "ray-compiled" and not m.engine_events
    _same_as_local(m, local)
    assert 0 < sum(name == "exit1" for name in m.exit_names) < len(x)
    # each actor on the Ray node labelled with its plan node, and a Ray node of its own
    assert {node: info["labels"].get(LABEL_KEY) for node, info in placed.items()} == {n: n for n in placed}
    assert len({info["ray_node_id"] for info in placed.values()}) == len(placed)
    hops = {row["hop"]: row for row in engine_overhead_rows(m.engine_overhead_s)}
    assert {"ingress->device", "device->edge", "edge->device"} <= set(hops)
    assert all(row["engine_s"] > 0 for row in hops.values())
    assert hops["device->edge"]["link_model_s"] > 0


def test_a_killed_actor_is_named_the_graph_rebuilt_and_no_input_lost(ray_deployments, tiny_inputs):
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.ray_serve.compiled import run_compiled
    from finplan.deploy.report import build_report

    folder = ray_deployments["three-dynamic"]
    x, y = tiny_inputs
    local = LocalExecutor(folder).run(x, y)
    seen = {"answers": 0, "killed": None}

    def kill_edge_midway(chain):
        import ray

        seen["answers"] += 1
        if seen["answers"] == 10:  # after 9 answers: the rest of the run needs the graph rebuilt
            pid = ray.get(chain.actors["edge"].describe.remote(), timeout=30)["pid"]
            os.kill(pid, signal.SIGKILL)  # a process of the Ray instance this run started
            seen["killed"] = pid

    m = run_compiled(folder, x, y, threads=1, on_chain=kill_edge_midway)
    assert seen["killed"] is not None
    assert len(m.engine_events) == 1 and "plan node 'edge'" in m.engine_events[0], m.engine_events
    assert "rebuilt" in m.engine_events[0]
    # every input answered, each exactly once (the batches lost with the actor were sent again)
    assert all(name is not None for name in m.exit_names)
    _same_as_local(m, local)
    report = build_report(m, load_deployment(folder))
    assert report["engine"] == "ray-compiled" and report["engine_events"] == m.engine_events
