"""The Ray Serve application of a deployment folder, described as plain data (no ray import).

``build_graph(folder, ...)`` reads ``deployment.json`` and every node's manifest and decides:

* one Serve deployment per plan node (``node-<name>``) holding that node's ``NodeRuntime``,
  pinned to the Ray node that represents the plan node: by label (``finplan-node=<name>``,
  set with ``ray start --labels finplan-node=<name>``) or by custom resource
  (``ray start --resources '{"finplan-node:<name>": 1}'``);
* where each node forwards (``routes``: destination node -> Serve deployment name), from the
  manifests' ``next`` hops;
* an ingress deployment (``ingress``) pinned to the application's source node, which checks
  requests against the deployment's input and hands them to the entry node.

``finplan.deploy.ray_serve.app`` turns this description into Serve deployments; tests check
it without starting Ray.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from finplan.deploy.deployment import Deployment, load_deployment
from finplan.deploy.manifest import TensorSpec, load_manifest
from finplan.deploy.node_runtime import check_parts
from finplan.errors import FinplanInputError

LABEL_KEY = "finplan-node"
RESOURCE_PREFIX = "finplan-node:"
PLACEMENTS = ("label", "resource")
INGRESS_DEPLOYMENT = "ingress"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Ray's label values: up to 63 characters, alphanumerics with - _ . inside
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
# Each replica reserves a tiny share of a CPU: zero would let Ray put every replica anywhere
# regardless of load, but 1 CPU per replica makes serve.run wait forever on a 2-core machine.
REPLICA_NUM_CPUS = 0.0
# Requests the ingress admits at once. Replicas are async (they await the next node), so
# admitting many costs little; a request Serve must hold back instead waits in its router,
# which we measured passing queued requests over for up to 14 s under a 200-request burst
# (the per-request timeout only starts at the ingress). Serve queues at most as many again.
DEFAULT_MAX_CONCURRENT_REQUESTS = 1000
# Each stage runs the requests waiting for it as one batch: at most this many samples, after
# waiting at most this long for more (a lone request at concurrency 1 pays at most the wait).
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.001


def stage_deployment_name(node: str) -> str:
    return f"node-{node}"


def app_name_for(application: str) -> str:
    return f"finplan-{application}"


@dataclass(frozen=True)
class Placement:
    """How a plan node maps to a Ray node: a label or a custom resource."""

    mode: str = "label"

    def __post_init__(self):
        if self.mode not in PLACEMENTS:
            raise FinplanInputError(f"is {self.mode!r}; expected one of {', '.join(PLACEMENTS)}", field="--placement")

    def actor_options(self, node: str) -> dict:
        options: dict = {"num_cpus": REPLICA_NUM_CPUS}
        if self.mode == "label":
            options["label_selector"] = {LABEL_KEY: node}
        else:
            # a sliver of the resource, so any number of replicas fits on the one Ray node that has it
            options["resources"] = {RESOURCE_PREFIX + node: 0.001}
        return options

    def carried_by(self, ray_node: dict, node: str) -> bool:
        """Whether a ``ray.nodes()`` entry represents plan node ``node``."""
        if self.mode == "label":
            return (ray_node.get("Labels") or {}).get(LABEL_KEY) == node
        return (ray_node.get("Resources") or {}).get(RESOURCE_PREFIX + node, 0) > 0

    def how_to_add(self, node: str) -> str:
        if self.mode == "label":
            return f"ray start --address HEAD:PORT --labels {LABEL_KEY}={node}"
        return f"ray start --address HEAD:PORT --resources '{{\"{RESOURCE_PREFIX}{node}\": 1}}'"

    def local_node_args(self, node: str) -> dict:
        """``labels`` / ``resources`` for a Ray node started locally to stand in for ``node``."""
        if self.mode == "label":
            return {"labels": {LABEL_KEY: node}}
        return {"resources": {RESOURCE_PREFIX + node: 1.0}}


@dataclass(frozen=True)
class StageSpec:
    node: str
    deployment: str
    folder: Path
    num_replicas: int
    actor_options: dict
    routes: dict[str, str]                  # destination node -> Serve deployment name
    entries: tuple[str, ...]                # the entries this node accepts (their key tensors)
    links: dict[str, tuple[float, float]]   # destination node -> (bandwidth_bps, latency_s) of the link model


@dataclass(frozen=True)
class IngressSpec:
    node: str                    # the application's source node (where inputs enter)
    deployment: str
    num_replicas: int
    actor_options: dict
    entry_node: str
    entry_deployment: str
    input_specs: tuple[TensorSpec, ...]   # the graph inputs, in graph order
    max_request_bytes: int
    timeout_s: float
    link: tuple[float, float] | None   # source -> entry node link model, when they differ
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS

    @property
    def input_spec(self) -> TensorSpec:
        """The first graph input (the sole one of a single-input model)."""
        return self.input_specs[0]


@dataclass(frozen=True)
class AppGraph:
    folder: Path
    application: str
    app_name: str
    route_prefix: str
    placement: Placement
    stages: dict[str, StageSpec]
    ingress: IngressSpec
    chain: tuple[str, ...]        # nodes in the order inputs visit them (a node may repeat)
    cyclic: bool                  # some node forwards, directly or not, back to an earlier node
    threads: int | None = None
    emulate_links: bool = False
    options: dict = field(default_factory=dict)
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE   # samples a stage runs at once (1: no batching)
    batch_wait_s: float = DEFAULT_BATCH_WAIT_S     # how long a stage waits for a batch to fill
    num_classes: int | None = None  # the exit heads' width, so that `infer` checks labels as `run` does

    def stage_max_ongoing(self, node: str) -> int:
        """How many requests a replica of ``node`` must take at once so that no caller ever
        waits in Serve's router: everything the ingress admitted, once per visit of the node."""
        visits = max(self.chain.count(node), 1)
        return self.ingress.max_concurrent_requests * self.ingress.num_replicas * visits

    @property
    def plan_nodes(self) -> list[str]:
        """Every plan node the application needs a Ray node for (source first)."""
        nodes = [self.ingress.node] + [n for n in self.stages if n != self.ingress.node]
        return list(dict.fromkeys(nodes))

    def describe(self) -> dict:
        """JSON-ready summary, for ``finplan serve --dry-run`` and the ingress's GET answer."""
        return {
            "application": self.application, "app_name": self.app_name, "route_prefix": self.route_prefix,
            "placement": self.placement.mode, "chain": list(self.chain),
            "inputs": [spec.to_dict() for spec in self.ingress.input_specs],
            # the one input of a single-input model, as clients before several inputs read it
            **({"input": self.ingress.input_spec.to_dict()} if len(self.ingress.input_specs) == 1 else {}),
            "num_classes": self.num_classes,
            "max_request_bytes": self.ingress.max_request_bytes,
            "timeout_s": self.ingress.timeout_s, "max_concurrent_requests": self.ingress.max_concurrent_requests,
            "max_batch_size": self.max_batch_size, "batch_wait_s": self.batch_wait_s,
            "deployments": [{"name": self.ingress.deployment, "node": self.ingress.node, "replicas": self.ingress.num_replicas,
                             "routes": {self.ingress.entry_node: self.ingress.entry_deployment},
                             "ray_actor_options": self.ingress.actor_options}] +
                           [{"name": s.deployment, "node": s.node, "replicas": s.num_replicas, "routes": dict(s.routes),
                             "ray_actor_options": s.actor_options} for s in self.stages.values()],
        }


def parse_replicas(items: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``["edge=2", ...]`` -> ``{"edge": 2}``; one clear line for anything else."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.strip().isdigit() or int(count) < 1:
            raise FinplanInputError(f"is {item!r}; expected NODE=N with N >= 1, e.g. edge=2", field="--replicas")
        out[name.strip()] = int(count)
    return out


def _check_label_value(node: str, file) -> None:
    if not _LABEL_VALUE.match(node):
        raise FinplanInputError(f"node name {node!r} cannot be a Ray label value (letters, digits, '-', '_', '.', "
                                "at most 63 characters); rename the node in the plan's network", file=file, field="nodes")


def build_graph(folder: str | os.PathLike, *, replicas: dict[str, int] | None = None, placement: str = "label",
                timeout_s: float = DEFAULT_TIMEOUT_S, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                threads: int | None = None, emulate_links: bool = False,
                max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
                max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
                deployment: Deployment | None = None) -> AppGraph:
    """Describe the Serve application for ``folder`` (reads manifests, loads no ONNX part)."""
    folder = Path(folder)
    deployment = deployment or load_deployment(folder)
    place = Placement(placement)
    if not timeout_s > 0:
        raise FinplanInputError(f"is {timeout_s}; expected a number of seconds > 0", field="--timeout-s")
    if max_request_bytes < 1:
        raise FinplanInputError(f"is {max_request_bytes}; expected a number of bytes >= 1", field="--max-request-bytes")
    if max_concurrent_requests < 1:
        raise FinplanInputError(f"is {max_concurrent_requests}; expected an integer >= 1",
                                field="--max-concurrent-requests")
    if max_batch_size < 1:
        raise FinplanInputError(f"is {max_batch_size}; expected an integer >= 1", field="--max-batch-size")
    if not (batch_wait_s >= 0 and math.isfinite(batch_wait_s)):
        raise FinplanInputError(f"is {batch_wait_s}; expected a finite number of seconds >= 0", field="--batch-wait-s")
    replicas = dict(replicas or {})
    index_file = folder / "deployment.json"
    known = set(deployment.nodes) | {deployment.source}
    for name in replicas:
        if name not in known:
            raise FinplanInputError(f"names node {name!r}, which the deployment does not have "
                                    f"(nodes: {', '.join(deployment.nodes)})", field="--replicas")
    manifests = {node: load_manifest(deployment.node_folder(node)) for node in deployment.nodes}
    for node, manifest in manifests.items():
        check_parts(manifest, deployment.node_folder(node))  # here, before Ray starts, as a local run does
    for node in known:
        if place.mode == "label":
            _check_label_value(node, index_file)

    stages: dict[str, StageSpec] = {}
    for node, manifest in manifests.items():
        routes, links = {}, {}
        for i, stage in enumerate(manifest.stages):
            if stage.next is None or stage.next.node == node:
                continue
            if stage.next.node not in manifests:
                raise FinplanInputError(f"sends to node {stage.next.node!r}, which the deployment does not have",
                                        file=manifest.path, field=f"stages[{i}].next.node")
            routes[stage.next.node] = stage_deployment_name(stage.next.node)
            link = deployment.links.get((node, stage.next.node))
            if link is not None:
                links[stage.next.node] = (link.bandwidth_bps, link.latency_s)
            elif emulate_links:
                deployment.link(node, stage.next.node)  # raises, naming the missing link
        stages[node] = StageSpec(
            node=node, deployment=stage_deployment_name(node), folder=deployment.node_folder(node),
            num_replicas=replicas.get(node, 1), actor_options=place.actor_options(node), routes=routes,
            entries=tuple(e.tensor for e in manifest.entries), links=links)

    entry = deployment.entry_node
    if entry not in stages:
        raise FinplanInputError(f"entry node {entry!r} has no node folder", file=index_file, field="entry_node")
    source = deployment.source
    source_link = None
    if source != entry:
        link = deployment.links.get((source, entry))
        if link is not None:
            source_link = (link.bandwidth_bps, link.latency_s)
        elif emulate_links:
            deployment.link(source, entry)
    ingress = IngressSpec(
        node=source, deployment=INGRESS_DEPLOYMENT, num_replicas=replicas.get(source, 1) if source not in stages else 1,
        actor_options=place.actor_options(source), entry_node=entry, entry_deployment=stages[entry].deployment,
        input_specs=manifests[entry].inputs, max_request_bytes=int(max_request_bytes), timeout_s=float(timeout_s),
        link=source_link, max_concurrent_requests=int(max_concurrent_requests))

    chain = _chain(manifests, entry)
    cyclic = len(set(chain)) != len(chain)
    return AppGraph(folder=folder, application=deployment.name, app_name=app_name_for(deployment.name),
                    route_prefix=f"/{deployment.name}", placement=place, stages=stages, ingress=ingress,
                    chain=tuple(chain), cyclic=cyclic, threads=threads, emulate_links=emulate_links,
                    max_batch_size=int(max_batch_size), batch_wait_s=float(batch_wait_s),
                    num_classes=deployment.num_classes())


def _chain(manifests: dict, entry: str) -> list[str]:
    """Nodes in visiting order, following the hops from the entry node's first stage."""
    chain = [entry]
    node, stage_index = entry, manifests[entry].entries[0].stage
    for _ in range(10_000):  # a manifest cycle would otherwise loop forever; parse guarantees progress
        stage = manifests[node].stages[stage_index]
        if stage.next is None:
            return chain
        if stage.next.node == node:
            stage_index += 1  # a hop that stays on the node feeds its next stage (checked by the manifest)
        else:
            stage_index = next((e.stage for e in manifests[stage.next.node].entries if e.tensor == stage.next.tensor), None)
            if stage_index is None:
                raise FinplanInputError(f"sends {stage.next.tensor!r} to node {stage.next.node!r}, which has no such entry; "
                                        "re-run finplan emit", file=manifests[node].path, field="stages")
        if stage.next.node != node:
            chain.append(stage.next.node)
        node = stage.next.node
    raise FinplanInputError("the hops between nodes never reach a final exit", file=manifests[entry].path, field="stages")
