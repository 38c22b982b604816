"""Real local multi-node Ray cluster (marker ``ray``): one labelled Ray node per plan node,
serving the 3-node deployment of the tiny model. The cluster starts once per session; the
fault tests come last in this file because they damage it."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from finplan.deploy.executor import LocalExecutor
from finplan.deploy.ray_serve.client import describe, infer_many
from finplan.deploy.ray_serve.graph import LABEL_KEY, build_graph

pytestmark = pytest.mark.ray
TIMEOUT_S = 4.0
MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def served(ray_deployments):
    from finplan.deploy.ray_serve.cluster import ServeSession

    graph = build_graph(ray_deployments["three-dynamic"], replicas={"edge": 2}, timeout_s=TIMEOUT_S,
                        max_request_bytes=MAX_REQUEST_BYTES, threads=1)
    session = ServeSession(graph)
    with session:
        yield session
    # nothing of this session's Ray may outlive it
    assert session.workdir is None and session.local is None


def _pids_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def test_every_replica_runs_on_its_labelled_node(served):
    seen: dict[str, set] = {}
    for name, node in [("ingress", "device"), ("node-device", "device"), ("node-edge", "edge"), ("node-cloud", "cloud")]:
        handle = served.deployment_handle(name)
        for _ in range(12 if node == "edge" else 2):  # edge has 2 replicas: ask often enough to meet both
            where = handle.describe.remote().result(timeout_s=30)
            assert where["labels"].get(LABEL_KEY) == node, (name, where)
            seen.setdefault(name, set()).add((where["pid"], where["ray_node_id"]))
    assert len(seen["node-edge"]) == 2
    node_ids = {name: {nid for _, nid in entries} for name, entries in seen.items()}
    assert len(node_ids["node-device"] | node_ids["node-edge"] | node_ids["node-cloud"]) == 3  # three Ray nodes


def test_http_answers_equal_the_local_executor(served, ray_deployments, tiny_inputs):
    x, y = tiny_inputs
    expected = LocalExecutor(ray_deployments["three-dynamic"]).run(x, y)
    info = describe(served.url)
    assert info["input"]["shape"] == ["batch", 1, 8, 8]
    report = infer_many(served.url, x, y, concurrency=4, timeout_s=30)
    assert report.failed == 0 and report.answered == len(x)
    assert report.exit_names == expected.exit_names
    assert report.predictions == [int(p) for p in expected.predictions]
    np.testing.assert_allclose(report.confidences, expected.confidences, atol=1e-9)
    assert {"exit1", "exit2"} == set(report.exit_names)


def test_200_concurrent_requests_are_all_answered(served, tiny_inputs):
    x, _ = tiny_inputs
    many = np.concatenate([x] * 4)[:200]
    report = infer_many(served.url, many, concurrency=200, timeout_s=60)
    assert report.answered == 200 and report.failed == 0, report.errors
    assert all(name is not None for name in report.exit_names)


def test_bad_requests_get_4xx_naming_the_problem(served, tiny_inputs):
    from finplan.deploy.ray_serve.client import _Connection
    from finplan.deploy.ray_serve.wire import encode_tensor

    x, _ = tiny_inputs
    connection = _Connection(served.url, 30)
    try:
        status, doc = connection.request("POST", encode_tensor(x[:2].astype(np.float64)))
        assert status == 422 and "float64" in doc["error"] and "float32" in doc["error"]
        status, doc = connection.request("POST", encode_tensor(np.zeros((2, 1, 9, 8), np.float32)))
        assert status == 422 and "(2, 1, 9, 8)" in doc["error"]
        status, doc = connection.request("POST", encode_tensor(np.zeros((300, 1, 8, 8), np.float32)))
        assert status == 413 and str(MAX_REQUEST_BYTES) in doc["error"]
        status, doc = connection.request("POST", encode_tensor(x[:1]))
        assert status == 200  # the service still answers after bad requests
    finally:
        connection.close()


def test_run_on_ray_measures_what_the_local_executor_measures(served, ray_deployments, tiny_inputs):
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.ray_serve.runner import engine_overhead_rows, run_on_ray
    from finplan.deploy.report import build_report

    folder = ray_deployments["three-dynamic"]
    x, y = tiny_inputs
    local = LocalExecutor(folder).run(x, y)
    m = run_on_ray(folder, x, y, session=served)
    assert m.engine == "ray" and m.exit_names == local.exit_names
    assert np.array_equal(m.predictions, local.predictions)
    assert m.link_bytes == local.link_bytes and m.block_samples == local.block_samples
    assert m.node_calls == local.node_calls and m.exit_samples == local.exit_samples
    report = build_report(m, load_deployment(folder))
    assert report["engine"] == "ray" and report["exit_counts"] == build_report(local, load_deployment(folder))["exit_counts"]
    hops = {row["hop"]: row for row in engine_overhead_rows(m.engine_overhead_s)}
    assert {"ingress->device", "device->edge", "edge->cloud"} <= set(hops)
    assert all(row["engine_s"] > 0 for row in hops.values())
    assert hops["device->edge"]["link_model_s"] > 0


def test_batched_stages_under_load_answer_as_the_local_executor_and_exits_skip_downstream(served, ray_deployments,
                                                                                           tiny_inputs):
    """16 requests of one sample in flight: each stage runs the requests waiting for it as one
    batch (Serve's default here: up to 32 samples), yet answers and per-node work are the
    local executor's: a sample that exits at device never reaches edge or cloud."""
    from finplan.deploy.ray_serve.runner import run_on_ray

    folder = ray_deployments["three-dynamic"]
    x, y = tiny_inputs
    local = LocalExecutor(folder).run(x, y)
    m = run_on_ray(folder, x, y, session=served, concurrency=16)
    assert m.exit_names == local.exit_names and np.array_equal(m.predictions, local.predictions)
    np.testing.assert_allclose(m.confidences, local.confidences, rtol=0, atol=1e-6)
    assert m.block_samples == local.block_samples and m.exit_samples == local.exit_samples
    assert m.link_samples == local.link_samples and m.link_bytes == local.link_bytes
    assert sum(m.block_samples["edge"].values()) < sum(m.block_samples["device"].values())
    # batches, not requests: fewer runs of the device's parts than there were requests
    assert m.node_calls["device"] < local.node_calls["device"], m.node_calls
    assert "batches of up to 32" in m.engine_mode


# ------------------------------------------------------------------ faults (last: they damage the cluster)

def _send_until(url, x, predicate, attempts: int, pause_s: float):
    report = None
    for _ in range(attempts):
        report = infer_many(url, x, concurrency=1, batch_size=len(x), timeout_s=TIMEOUT_S + 20)
        if predicate(report):
            return report
        time.sleep(pause_s)
    return report


def test_a_killed_replica_gives_errors_then_serve_restarts_it(served, tiny_inputs):
    x, _ = tiny_inputs
    handle = served.deployment_handle("node-cloud")
    pid = handle.describe.remote().result(timeout_s=30)["pid"]
    os.kill(pid, signal.SIGKILL)  # the replica process Ray started for this test's cluster
    report = infer_many(served.url, np.concatenate([x] * 2), concurrency=8, batch_size=8, timeout_s=TIMEOUT_S + 20)
    # every request came back, answered or with a server-side error: none hung until the client gave up
    assert report.answered + report.failed == report.requests
    assert not any(key.startswith("no answer") for key in report.errors), report.errors
    recovered = _send_until(served.url, x[:16], lambda r: r.failed == 0, attempts=60, pause_s=1.0)
    assert recovered.failed == 0, recovered.errors
    assert handle.describe.remote().result(timeout_s=30)["pid"] != pid


def test_a_departed_node_gives_errors_not_hangs_and_a_returning_node_serves_again(served, tiny_inputs):
    x, _ = tiny_inputs
    static_reach = x[:16]  # with about half exiting at exit1, a batch of 16 reaches cloud
    pid = served.deployment_handle("node-cloud").describe.remote().result(timeout_s=30)["pid"]
    served.local.remove("cloud")
    # A machine that leaves takes every process with it; a removed local Ray node's workers
    # notice their raylet is gone only later, so end the replica's process as the machine would.
    if _pids_alive([pid]):
        os.kill(pid, signal.SIGKILL)
    report = infer_many(served.url, np.concatenate([static_reach] * 3), concurrency=3, batch_size=16,
                        timeout_s=TIMEOUT_S + 20)
    assert report.requests == 3 and report.failed == 3 and report.answered == 0
    assert not any(key.startswith("no answer") for key in report.errors), report.errors
    assert all(key.split()[0] in ("503", "504") and "cloud" in key for key in report.errors), report.errors
    served.local.add("cloud")  # the cluster allows it again: Serve places the replica on the new node
    recovered = _send_until(served.url, static_reach, lambda r: r.failed == 0, attempts=90, pause_s=1.0)
    assert recovered.failed == 0, recovered.errors
