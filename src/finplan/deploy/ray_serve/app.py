"""Serve deployments for an ``AppGraph`` (imports ray; only the Ray layer imports this module).

Each plan node's deployment receives its node folder's files as bytes (manifest and ONNX
parts, read by the driver), writes them to a private temporary folder on whatever machine
Ray placed it and loads them with ``NodeRuntime``, which checks every part's sha256: the
machines need no copy of the deployment folder, only finplan and onnxruntime installed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from finplan.deploy.manifest import MANIFEST_FILE, TensorSpec, load_manifest
from finplan.deploy.ray_serve.graph import AppGraph

if TYPE_CHECKING:
    from finplan.deploy.node_runtime import NodeRuntime

# Lowered so that deleting the application takes about a second instead of about ten;
# requests still in flight then get an error answer, which the caller counts.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 0.5
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 0.1
# A dead replica is noticed (and replaced) within a few seconds rather than Serve's default.
HEALTH_CHECK_PERIOD_S = 2.0
HEALTH_CHECK_TIMEOUT_S = 10.0


def node_files(folder: Path) -> dict[str, bytes]:
    """The files one node needs: its manifest and the parts it lists."""
    manifest = load_manifest(folder)
    names = [MANIFEST_FILE] + [stage.part for stage in manifest.stages]
    return {name: (folder / name).read_bytes() for name in names}


def runtime_from_files(node: str, files: dict[str, bytes], threads) -> tuple[str, "NodeRuntime"]:
    """Write ``node_files`` to a private temporary folder on this machine and load them (the
    caller removes the folder): ``(folder, runtime)``."""
    from finplan.deploy.node_runtime import NodeRuntime

    tmp = tempfile.mkdtemp(prefix=f"finplan-{node}-")
    for name, data in files.items():
        Path(tmp, name).write_bytes(data)
    runtime = NodeRuntime(Path(tmp), threads=threads)
    if runtime.node != node:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"the files given for node {node!r} are node {runtime.node!r}'s")
    return tmp, runtime


def replica_placement() -> dict:
    """Where this replica runs, as Ray sees it (for tests and ``describe``)."""
    import ray

    context = ray.get_runtime_context()
    return {"ray_node_id": context.get_node_id(), "labels": dict(context.get_node_labels()), "pid": os.getpid()}


def _stage_class():
    from ray import serve

    @serve.deployment(graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
                      graceful_shutdown_wait_loop_s=GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
                      health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S)
    class FinplanStage:
        """One plan node: a NodeRuntime, exit or forward per sample."""

        def __init__(self, node: str, files: dict, routes: dict, app_name: str, links: dict, emulate_links: bool,
                     threads, timeout_s: float, max_batch_size: int = 1, batch_wait_s: float = 0.0):
            from finplan.deploy.ray_serve.core import StageCore

            self._tmp, self.runtime = runtime_from_files(node, files, threads)
            self.node = node
            self.routes = dict(routes)
            self.app_name = app_name
            self._handles: dict = {}
            self.core = StageCore(self.runtime, self._call, links=links, emulate_links=emulate_links,
                                  default_budget_s=timeout_s, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)

        def _handle(self, node: str):
            # Handles are looked up by name, once: a chain may come back to a node it left
            # (device -> edge -> device), which bound handles cannot express.
            if node not in self._handles:
                from ray import serve

                self._handles[node] = serve.get_deployment_handle(self.routes[node], app_name=self.app_name)
            return self._handles[node]

        async def _call(self, node: str, message: dict) -> dict:
            return await self._handle(node).process.remote(message)

        async def process(self, message: dict) -> dict:
            return await self.core.handle(message)

        def describe(self) -> dict:
            return {"node": self.node, "role": "stage", **replica_placement()}

        def __del__(self):
            shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    return FinplanStage


def _ingress_class():
    from ray import serve

    @serve.deployment(graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
                      graceful_shutdown_wait_loop_s=GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
                      health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S)
    class FinplanIngress:
        """HTTP (and handle) entry: validation, per-request timeout, hand-off to the entry node."""

        def __init__(self, settings: dict, info: dict, stages: dict):
            from finplan.deploy.ray_serve.core import IngressCore

            self.stages = stages  # node -> DeploymentHandle (binding them all deploys them all)
            self.core = IngressCore(
                source=settings["source"], entry_node=settings["entry_node"],
                input_specs=tuple(TensorSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in settings["inputs"]),
                call=self._call,
                timeout_s=settings["timeout_s"], max_request_bytes=settings["max_request_bytes"],
                link=None if settings["link"] is None else tuple(settings["link"]),
                emulate_links=settings["emulate_links"], info=info)
            self.node = settings["source"]

        async def _call(self, node: str, message: dict) -> dict:
            return await self.stages[node].process.remote(message)

        async def __call__(self, request):
            from starlette.responses import JSONResponse

            max_bytes = self.core.max_request_bytes
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                # refuse before reading: an oversized body never reaches memory
                return JSONResponse({"error": f"the request holds {declared} bytes; the limit is {max_bytes}"},
                                    status_code=413)
            body = bytearray()
            if request.method == "POST":
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_bytes:
                        return JSONResponse({"error": f"the request holds more than {max_bytes} bytes; "
                                                      f"the limit is {max_bytes}"}, status_code=413)
            want_logits = request.query_params.get("logits", "0") not in ("0", "", "false")
            status, doc = await self.core.handle_http(request.method, bytes(body), request.headers.get("content-type"),
                                                      want_logits=want_logits)
            return JSONResponse(doc, status_code=status)

        async def infer(self, tensor: bytes) -> dict:
            """For callers with a handle (``run_on_ray``): ``.npy`` bytes (``.npz`` for several named
            inputs) in, the full answer out."""
            from finplan.deploy.ray_serve.core import RequestError, error_answer, parse_request

            try:
                x = parse_request(tensor, None, self.core.input_specs, max_request_bytes=self.core.max_request_bytes)
            except RequestError as exc:
                return error_answer(exc.status, exc.message, self.node)
            return await self.core.infer(x)

        def describe(self) -> dict:
            return {"node": self.node, "role": "ingress", **replica_placement()}

    return FinplanIngress


def build_application(graph: AppGraph):
    """The Serve application (``Application``) for ``graph``: bound, not yet running."""
    stage_cls = _stage_class()
    ingress_cls = _ingress_class()
    bound = {}
    for node, spec in graph.stages.items():
        bound[node] = stage_cls.options(
            name=spec.deployment, num_replicas=spec.num_replicas, ray_actor_options=dict(spec.actor_options),
            max_ongoing_requests=graph.stage_max_ongoing(node),
        ).bind(node, node_files(spec.folder), dict(spec.routes), graph.app_name,
               {k: list(v) for k, v in spec.links.items()}, graph.emulate_links, graph.threads, graph.ingress.timeout_s,
               graph.max_batch_size, graph.batch_wait_s)
    ingress = graph.ingress
    # Serve counts a request as queued while it routes it, even with room at the replica, so
    # the queue cannot be tiny (a limit of 1 refused half of a 200-request burst with 503);
    # one limit's worth bounds the wait and the memory, and anything beyond gets 503 at once.
    settings = {"source": ingress.node, "entry_node": ingress.entry_node,
                "inputs": [spec.to_dict() for spec in ingress.input_specs],
                "timeout_s": ingress.timeout_s, "max_request_bytes": ingress.max_request_bytes,
                "link": None if ingress.link is None else list(ingress.link), "emulate_links": graph.emulate_links}
    return ingress_cls.options(
        name=ingress.deployment, num_replicas=ingress.num_replicas, ray_actor_options=dict(ingress.actor_options),
        max_ongoing_requests=ingress.max_concurrent_requests, max_queued_requests=ingress.max_concurrent_requests,
    ).bind(settings, graph.describe(), bound)
