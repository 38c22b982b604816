"""Default suite (no Ray started): the application graph, the tensor encoding, request
validation, and the exit-or-forward core chained in-process against the local executor."""
from __future__ import annotations

import asyncio
import io
import json
import pickle

import numpy as np
import pytest

from finplan.deploy.executor import LocalExecutor
from finplan.deploy.manifest import TensorSpec
from finplan.deploy.node_runtime import NodeRuntime
from finplan.deploy.ray_serve.core import IngressCore, RequestError, StageCore, parse_request
from finplan.deploy.ray_serve.graph import LABEL_KEY, build_graph, parse_replicas
from finplan.deploy.ray_serve.runner import RunCollector, engine_overhead_rows
from finplan.deploy.ray_serve.wire import (WireError, decode_tensor, decode_tensors, encode_inputs, encode_tensor,
                                         encode_tensors)
from finplan.errors import EnvironmentFault, FinplanInputError

SPEC = TensorSpec("x", ("batch", 1, 8, 8), "float32")


# ------------------------------------------------------------------ graph

def test_graph_has_one_deployment_per_node_pinned_by_label_with_routes(ray_deployments):
    graph = build_graph(ray_deployments["three-dynamic"], replicas={"edge": 3})
    assert set(graph.stages) == {"device", "edge", "cloud"}
    assert graph.chain == ("device", "edge", "cloud") and not graph.cyclic
    for node, stage in graph.stages.items():
        assert stage.actor_options["label_selector"] == {LABEL_KEY: node}
        assert stage.actor_options["num_cpus"] < 1  # a whole CPU per replica stalls serve.run on small machines
    assert graph.stages["device"].routes == {"edge": "node-edge"}
    assert graph.stages["edge"].routes == {"cloud": "node-cloud"}
    assert graph.stages["cloud"].routes == {}
    assert graph.stages["edge"].num_replicas == 3 and graph.stages["cloud"].num_replicas == 1
    assert graph.ingress.node == "device" and graph.ingress.entry_deployment == "node-device"
    assert graph.ingress.actor_options["label_selector"] == {LABEL_KEY: "device"}
    assert graph.ingress.input_spec.shape == ("batch", 1, 8, 8)
    json.dumps(graph.describe())  # the GET answer must be JSON


def test_graph_by_resource_and_revisiting_chain(ray_deployments):
    graph = build_graph(ray_deployments["revisit-dynamic"], placement="resource")
    assert graph.chain == ("device", "edge", "device") and graph.cyclic
    assert graph.stages["edge"].routes == {"device": "node-device"}
    assert graph.stages["device"].routes == {"edge": "node-edge"}
    assert graph.stages["edge"].actor_options["resources"] == {"finplan-node:edge": pytest.approx(0.001)}
    assert "label_selector" not in graph.stages["edge"].actor_options
    one = build_graph(ray_deployments["one-static"])
    assert list(one.stages) == ["device"] and one.stages["device"].routes == {}


def test_every_hop_takes_all_the_requests_the_ingress_admits(ray_deployments):
    # A request Serve holds back waits in its router, where a 200-request burst saw waits of
    # up to 14 s: no stage may have less room than the ingress lets in, once per visit.
    graph = build_graph(ray_deployments["three-dynamic"], max_concurrent_requests=300)
    assert graph.ingress.max_concurrent_requests == 300 and graph.describe()["max_concurrent_requests"] == 300
    assert {node: graph.stage_max_ongoing(node) for node in graph.stages} == {"device": 300, "edge": 300, "cloud": 300}
    revisit = build_graph(ray_deployments["revisit-dynamic"])
    assert revisit.ingress.max_concurrent_requests == 1000
    assert revisit.stage_max_ongoing("device") == 2000 and revisit.stage_max_ongoing("edge") == 1000
    with pytest.raises(FinplanInputError, match="--max-concurrent-requests"):
        build_graph(ray_deployments["three-dynamic"], max_concurrent_requests=0)


@pytest.mark.parametrize("items,message", [(["edge"], "NODE=N"), (["edge=0"], "N >= 1"), (["moon=2"], "moon")])
def test_bad_replicas_are_one_clear_line(ray_deployments, items, message):
    with pytest.raises(FinplanInputError, match=message):
        build_graph(ray_deployments["three-dynamic"], replicas=parse_replicas(items))


def test_missing_node_names_the_label_to_add(ray_deployments):
    from finplan.deploy.ray_serve.cluster import missing_nodes_error, missing_plan_nodes

    graph = build_graph(ray_deployments["three-dynamic"])
    ray_nodes = [{"Alive": True, "Labels": {LABEL_KEY: "device"}}, {"Alive": False, "Labels": {LABEL_KEY: "edge"}},
                 {"Alive": True, "Labels": {LABEL_KEY: "cloud"}}]
    missing = missing_plan_nodes(graph, ray_nodes)
    assert missing == ["edge"]
    assert "--labels finplan-node=edge" in str(missing_nodes_error(graph, missing))


def test_unreachable_address_is_one_line():
    from finplan.deploy.ray_serve.cluster import check_reachable, free_port

    with pytest.raises(EnvironmentFault, match="no Ray head answers"):
        check_reachable(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    with pytest.raises(FinplanInputError, match="HOST:PORT"):
        check_reachable("nonsense")


# ------------------------------------------------------------------ wire

@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8", "float16"])
def test_tensor_round_trip_keeps_values_dtype_shape(dtype):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) * 3 % 7).astype(dtype)
    back = decode_tensor(encode_tensor(array))
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)
    assert back.flags.writeable and back.flags.c_contiguous
    fortran = np.asfortranarray(array)
    assert np.array_equal(decode_tensor(encode_tensor(fortran)), array)
    np.save(buffer := io.BytesIO(), fortran)  # numpy's own Fortran-ordered .npy is read right too
    assert np.array_equal(decode_tensor(buffer.getvalue()), array)


def test_decoding_refuses_pickles_truncation_and_oversize():
    objects = np.array([{"a": 1}], dtype=object)
    buffer = io.BytesIO()
    np.save(buffer, objects, allow_pickle=True)
    with pytest.raises(WireError, match="objects"):
        decode_tensor(buffer.getvalue())
    with pytest.raises(WireError):
        encode_tensor(objects)
    with pytest.raises(WireError, match="not a .npy"):
        decode_tensor(pickle.dumps(np.zeros(3)))
    data = encode_tensor(np.zeros((4, 4), np.float32))
    with pytest.raises(WireError, match="carries"):
        decode_tensor(data[:-5])
    with pytest.raises(WireError, match="limit"):
        decode_tensor(data, max_bytes=32)


# ------------------------------------------------------------------ validation

def test_request_validation_names_the_problem():
    good = np.zeros((2, 1, 8, 8), np.float32)
    assert parse_request(encode_tensor(good), "application/x-npy", SPEC, max_request_bytes=10_000)["x"].shape == (2, 1, 8, 8)
    assert parse_request(encode_tensor(good[0]), None, SPEC, max_request_bytes=10_000)["x"].shape == (1, 1, 8, 8)
    cases = [
        (encode_tensor(good.astype(np.float64)), None, 422, "dtype float64; expected float32"),
        (encode_tensor(np.zeros((2, 1, 7, 8), np.float32)), None, 422, r"shape \(2, 1, 7, 8\)"),
        (encode_tensor(np.zeros((0, 1, 8, 8), np.float32)), None, 422, "no sample"),
        (encode_tensor(good), "application/json", 415, "content type"),
        (b"", None, 400, "empty"),
        (b"not an array", None, 400, "not a .npy"),
        (encode_tensor(np.zeros((64, 1, 8, 8), np.float32)), None, 413, "limit is 10000"),
    ]
    for body, content_type, status, message in cases:
        with pytest.raises(RequestError, match=message) as info:
            parse_request(body, content_type, SPEC, max_request_bytes=10_000)
        assert info.value.status == status


IDS = TensorSpec("input_ids", ("batch", 6), "int64")
MASK = TensorSpec("attention_mask", ("batch", 6), "int64")


def test_several_named_inputs_travel_as_a_npz_checked_input_by_input():
    ids, mask = np.arange(12, dtype=np.int64).reshape(2, 6), np.ones((2, 6), np.int64)
    got = parse_request(encode_inputs({"attention_mask": mask, "input_ids": ids}), "application/x-npz", (IDS, MASK),
                        max_request_bytes=10_000)
    assert list(got) == ["input_ids", "attention_mask"] and np.array_equal(got["input_ids"], ids)
    one = parse_request(encode_inputs({"input_ids": ids[0], "attention_mask": mask[0]}), None, (IDS, MASK),
                        max_request_bytes=10_000)
    assert one["attention_mask"].shape == (1, 6)
    # a single-input model takes x in a .npz too, as in finplan's data files
    assert parse_request(encode_inputs({"x": np.zeros((2, 1, 8, 8), np.float32)}), None, SPEC,
                         max_request_bytes=10_000)["x"].shape == (2, 1, 8, 8)
    cases = [
        (encode_inputs({"input_ids": ids}), 422, "input 'attention_mask' is missing"),
        (encode_inputs({"input_ids": ids, "attention_mask": mask, "token_type_ids": mask}), 422,
         "array 'token_type_ids' is not a graph input; expected input_ids, attention_mask"),
        (encode_inputs({"input_ids": ids.astype(np.int32), "attention_mask": mask}), 422,
         "input 'input_ids' has dtype int32; expected int64"),
        (encode_inputs({"input_ids": ids, "attention_mask": np.ones((3, 6), np.int64)}), 422,
         "different numbers of samples \\(input_ids 2, attention_mask 3\\)"),
        (encode_tensor(ids), 422, "one .npy array for a model with 2 inputs"),
        (b"PK\x03\x04 broken", 400, "not a .npz"),
        (encode_inputs({"input_ids": np.zeros((2000, 6), np.int64), "attention_mask": mask}), 413, "limit is 10000"),
    ]
    for body, status, message in cases:
        with pytest.raises(RequestError, match=message) as info:
            parse_request(body, None, (IDS, MASK), max_request_bytes=10_000)
        assert info.value.status == status, info.value.message


def test_stage_messages_carry_named_tensors_without_pickle():
    tensors = {"attention_mask": np.ones((2, 6), np.int64), "layer1": np.zeros((2, 6, 8), np.float32)}
    back = decode_tensors(encode_tensors(tensors))
    assert list(back) == list(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors)
    with pytest.raises(WireError, match="tensor 'layer1'"):
        decode_tensors({"layer1": b"not an array"})
    with pytest.raises(WireError, match="Python objects"):
        encode_tensors({"bad": np.array([object()])})
    with pytest.raises(WireError, match="mapping"):
        decode_tensors([b"x"])


# ------------------------------------------------------------------ core chained in-process

def _in_process_ingress(folder, *, timeout_s=5.0, fail=None, hang=None):
    """Stages and ingress chained by plain awaits: what Serve does, minus Ray."""
    from finplan.deploy.deployment import load_deployment

    deployment = load_deployment(folder)
    stages = {}

    async def call(node, message):
        if node == fail:
            raise RuntimeError("ActorDiedError: the actor died unexpectedly")
        if node == hang:
            await asyncio.sleep(3600)
        return await stages[node].handle(message)

    for node in deployment.nodes:
        stages[node] = StageCore(NodeRuntime(deployment.node_folder(node)), call)
    graph = build_graph(folder, timeout_s=timeout_s)
    return IngressCore(source=graph.ingress.node, entry_node=graph.ingress.entry_node, input_specs=graph.ingress.input_specs,
                       call=call, timeout_s=timeout_s, max_request_bytes=graph.ingress.max_request_bytes,
                       info=graph.describe())


@pytest.mark.parametrize("layout", ["three-dynamic", "revisit-dynamic", "one-static"])
def test_chained_core_answers_equal_the_local_executor(ray_deployments, tiny_inputs, layout):
    x, _ = tiny_inputs
    folder = ray_deployments[layout]
    expected = LocalExecutor(folder).run_batch(x)
    ingress = _in_process_ingress(folder)
    answer = asyncio.run(ingress.infer(x))
    assert "error" not in answer
    assert answer["exit_names"] == expected.exit_names
    assert answer["predictions"] == [int(p) for p in expected.predictions]
    np.testing.assert_allclose(answer["confidences"], expected.confidences, rtol=0, atol=1e-12)
    if layout == "three-dynamic":
        assert {"exit1", "exit2"} == set(answer["exit_names"])  # both paths exercised
    # every process() call is one hop record, and the collector turns them into the executor's counts
    executor = LocalExecutor(folder)
    m = executor.run(x, batch_size=len(x))
    collector = RunCollector(executor.deployment, len(x))
    collector.add(np.arange(len(x)), answer, 0.01)
    assert collector.link_bytes == m.link_bytes and collector.link_samples == m.link_samples
    assert collector.block_samples == m.block_samples and collector.exit_samples == m.exit_samples
    assert collector.node_calls == m.node_calls
    rows = engine_overhead_rows(collector.engine_overhead_s())
    hops = {row["hop"] for row in rows}
    assert "ingress->device" in hops
    if layout == "three-dynamic":
        assert {"device->edge", "edge->cloud"} <= hops
        assert all(row["link_model_s"] is not None for row in rows if not row["hop"].startswith("ingress"))


@pytest.mark.parametrize("name", ["text", "skip"])
def test_chained_core_carries_live_sets_as_the_local_executor_does(live_set_deployments, name):
    case = live_set_deployments[name]
    folder, x = case["folder"], case["x"]
    executor = LocalExecutor(folder)
    expected = executor.run_batch(x)
    ingress = _in_process_ingress(folder)
    answer = asyncio.run(ingress.infer(x))
    assert "error" not in answer, answer
    assert answer["exit_names"] == expected.exit_names
    assert answer["predictions"] == [int(p) for p in expected.predictions]
    m = executor.run(x, batch_size=len(next(iter(x.values()))))
    collector = RunCollector(executor.deployment, len(answer["exit_names"]))
    collector.add(np.arange(len(answer["exit_names"])), answer, 0.01)
    # every hop carried the live set: bytes and per-tensor bytes as the local engine measured them
    assert collector.link_bytes == m.link_bytes and collector.link_tensor_bytes == m.link_tensor_bytes
    assert any(len(per_tensor) > 1 for per_tensor in collector.link_tensor_bytes.values())
    # the HTTP path: several named inputs as one .npz per request
    rows = {k: v[:5] for k, v in x.items()}
    body = encode_inputs(rows) if len(rows) > 1 else encode_tensor(rows["x"])
    status, doc = asyncio.run(ingress.handle_http("POST", body, "application/x-npz" if len(rows) > 1 else None))
    assert status == 200, doc
    assert [o["exit"] for o in doc["outputs"]] == LocalExecutor(folder).run_batch(rows).exit_names
    status, doc = asyncio.run(ingress.handle_http("GET", b"", None))
    assert [t["name"] for t in doc["inputs"]] == list(case["contract"].inputs)


def test_emulated_links_wait_at_least_the_link_model_and_record_what_they_took(ray_deployments, tiny_inputs):
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.ray_serve.core import emulate_delay, link_delay_s

    # 20 us: asyncio.sleep alone rounds this up to the event loop's millisecond timer
    assert asyncio.run(emulate_delay(20e-6)) >= 20e-6 and asyncio.run(emulate_delay(0.0)) == 0.0
    x, _ = tiny_inputs
    folder = ray_deployments["three-dynamic"]
    deployment = load_deployment(folder)
    stages = {}

    async def call(node, message):
        return await stages[node].handle(message)

    graph = build_graph(folder, emulate_links=True)
    for node, spec in graph.stages.items():
        stages[node] = StageCore(NodeRuntime(spec.folder), call, links=spec.links, emulate_links=True)
    answer = asyncio.run(stages[graph.ingress.entry_node].handle(
        {"tensor": encode_tensor(x), "entry": graph.ingress.input_spec.name, "budget_s": 30.0}))
    forwards = [hop for hop in answer["hops"] if hop["forward_to"] is not None]
    assert forwards
    for hop in forwards:
        link = deployment.links[(hop["node"], hop["forward_to"])]
        assert hop["emulated_delay_s"] == pytest.approx(link_delay_s((link.bandwidth_bps, link.latency_s), hop["bytes_out"]))
        assert hop["emulated_delay_actual_s"] >= hop["emulated_delay_s"] > 0
    collector = RunCollector(deployment, len(x))
    collector.add(np.arange(len(x)), answer, 0.01)
    assert set(collector.link_delay_actual_s) == set(collector.link_delay_s)
    assert all(collector.link_delay_actual_s[k] >= v for k, v in collector.link_delay_s.items())


def test_http_path_statuses(ray_deployments, tiny_inputs):
    x, _ = tiny_inputs
    ingress = _in_process_ingress(ray_deployments["three-dynamic"])
    status, doc = asyncio.run(ingress.handle_http("POST", encode_tensor(x[:3]), "application/x-npy", want_logits=True))
    assert status == 200 and len(doc["outputs"]) == 3 and len(doc["outputs"][0]["logits"]) == 3
    json.dumps(doc, allow_nan=False)
    status, doc = asyncio.run(ingress.handle_http("POST", encode_tensor(x[:3].astype(np.float64)), None))
    assert status == 422 and "float64" in doc["error"]
    status, doc = asyncio.run(ingress.handle_http("GET", b"", None))
    assert status == 200 and doc["input"]["shape"] == ["batch", 1, 8, 8]
    assert asyncio.run(ingress.handle_http("DELETE", b"", None))[0] == 405


def test_dead_or_silent_node_gives_an_error_naming_it_within_the_timeout(ray_deployments, tiny_inputs):
    x, _ = tiny_inputs
    folder = ray_deployments["three-static"]  # every input reaches cloud
    status, doc = asyncio.run(_in_process_ingress(folder, fail="cloud").handle_http("POST", encode_tensor(x[:2]), None))
    assert status == 503 and doc["node"] == "cloud" and "ActorDiedError" in doc["error"]
    status, doc = asyncio.run(_in_process_ingress(folder, hang="edge", timeout_s=0.3)
                              .handle_http("POST", encode_tensor(x[:2]), None))
    assert status == 504 and doc["node"] == "edge"


def test_finplan_infer_sends_several_named_inputs(live_set_deployments, capsys):
    """``finplan infer`` against the in-process ingress of the two-input text model, behind a plain
    HTTP server (what Serve's proxy does, minus Ray): .npz requests, answers as the local engine's."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from finplan.cli.main import main

    case = live_set_deployments["text"]
    ingress = _in_process_ingress(case["folder"])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:  # one event loop at a time over the shared runtimes
                status, doc = asyncio.run(ingress.handle_http(method, body, self.headers.get("content-type")))
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/text"
        assert main(["infer", url, "--data", str(case["data"]), "--batch-size", "4", "--concurrency", "2", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        expected = LocalExecutor(case["folder"]).run(case["x"], batch_size=4)
        assert report["failed"] == 0 and [p["exit"] for p in report["predictions"]] == expected.exit_names
        bad = case["data"].parent / "ids-only.npz"
        np.savez(bad, input_ids=case["x"]["input_ids"])
        assert main(["infer", url, "--data", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "ids-only.npz: attention_mask: " in err
    finally:
        server.shutdown()
        server.server_close()
