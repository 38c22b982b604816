"""Exit-aware batching per stage, in-process (no Ray): concurrent requests run as one batch per
stage, each gets the local executor's answer, and samples that exit at a stage never reach the
next one (counted per node)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from finplan.deploy.deployment import load_deployment
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.node_runtime import NodeRuntime
from finplan.deploy.ray_serve.core import IngressCore, StageCore
from finplan.deploy.ray_serve.graph import build_graph
from finplan.deploy.ray_serve.runner import RunCollector


def _batched_ingress(folder, *, max_batch_size, batch_wait_s):
    deployment = load_deployment(folder)
    stages = {}

    async def call(node, message):
        await asyncio.sleep(0)  # a remote call suspends the caller, as a DeploymentHandle call does
        return await stages[node].handle(message)

    for node in deployment.nodes:
        stages[node] = StageCore(NodeRuntime(deployment.node_folder(node)), call, max_batch_size=max_batch_size,
                                 batch_wait_s=batch_wait_s)
    graph = build_graph(folder)
    return IngressCore(source=graph.ingress.node, entry_node=graph.ingress.entry_node,
                       input_specs=graph.ingress.input_specs, call=call, timeout_s=10.0,
                       max_request_bytes=graph.ingress.max_request_bytes)


@pytest.mark.parametrize("layout", ["three-dynamic", "revisit-dynamic"])
def test_batched_stages_answer_as_the_local_executor_and_exits_skip_downstream(ray_deployments, tiny_inputs, layout):
    x, _ = tiny_inputs
    folder = ray_deployments[layout]
    executor = LocalExecutor(folder)
    expected = executor.run(x, batch_size=1)
    ingress = _batched_ingress(folder, max_batch_size=8, batch_wait_s=0.02)

    async def all_at_once():
        # one sample per request, all in flight together: the stages see them queued
        return await asyncio.gather(*(ingress.infer(x[i:i + 1]) for i in range(len(x))))

    answers = asyncio.run(all_at_once())
    assert all("error" not in a for a in answers)
    assert [a["exit_names"][0] for a in answers] == expected.exit_names
    assert [a["predictions"][0] for a in answers] == [int(p) for p in expected.predictions]
    np.testing.assert_allclose([a["confidences"][0] for a in answers], expected.confidences, rtol=0, atol=1e-6)
    collector = RunCollector(executor.deployment, len(x))
    for i, answer in enumerate(answers):
        collector.add(np.array([i]), answer, 0.01)
    # every block ran on exactly the samples it runs on unbatched: an exit skips the rest
    assert collector.block_samples == expected.block_samples
    assert collector.exit_samples == expected.exit_samples
    assert collector.link_samples == expected.link_samples
    exited_first = sum(name == "exit1" for name in expected.exit_names)
    assert 0 < exited_first < len(x)
    downstream = executor.deployment.nodes[1]
    assert sum(collector.block_samples[downstream].values()) < sum(expected.block_samples[executor.deployment.nodes[0]].values())
    # batches, not requests: each stage ran far fewer times than there were requests
    for node, calls in collector.node_calls.items():
        assert calls <= len(x) // 2, (node, calls)


def test_batch_size_one_is_the_unbatched_path(ray_deployments, tiny_inputs):
    x, _ = tiny_inputs
    folder = ray_deployments["three-dynamic"]
    expected = LocalExecutor(folder).run_batch(x[:4])
    ingress = _batched_ingress(folder, max_batch_size=1, batch_wait_s=0.0)
    answer = asyncio.run(ingress.infer(x[:4]))
    assert answer["exit_names"] == expected.exit_names


def test_bad_batch_options_are_one_line(ray_deployments):
    from finplan.errors import FinplanInputError

    with pytest.raises(FinplanInputError, match="--max-batch-size"):
        build_graph(ray_deployments["three-dynamic"], max_batch_size=0)
    with pytest.raises(FinplanInputError, match="--batch-wait-s"):
        build_graph(ray_deployments["three-dynamic"], batch_wait_s=float("nan"))
