"""The reference for benchmarks/ray_serve.py: the Ray Serve chain a Ray user writes by hand over
the same parts as a finplan deployment folder (not part of finplan).

It follows Ray Serve's model-composition pattern: one deployment per plan node holding that
node's ONNX parts (through finplan's ``NodeRuntime``, so the parts, the exit rule and the work
per sample are exactly finplan's), the next stage's ``DeploymentHandle`` passed in through
``.bind()``, ``max_ongoing_requests=100``, each request awaited through the chain one at a time
(no batching), numpy arrays passed as they are (Serve pickles them). Each replica is pinned to
the Ray node labelled with its plan node, as finplan pins its own, so both run on the same
Ray nodes. A sample that exits at a stage is answered there; only the rest go on.
"""
from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle

MAX_ONGOING_REQUESTS = 100


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS)
class Stage:
    def __init__(self, folder: str, threads: int | None, next_stage: DeploymentHandle | None = None):
        from finplan.deploy.node_runtime import NodeRuntime

        self.runtime = NodeRuntime(Path(folder), threads=threads)
        self.next_stage = next_stage

    async def __call__(self, tensors: dict, entry: str) -> dict:
        result = self.runtime.process(tensors, entry=entry)
        exit_names = list(result.exit_names)
        predictions = [int(p) for p in result.predictions]
        forward = result.forward
        if forward is not None:
            rest = await self.next_stage.remote(forward.tensors, forward.tensor_name)
            for local, position in enumerate(forward.indices):
                exit_names[int(position)] = rest["exit_names"][local]
                predictions[int(position)] = rest["predictions"][local]
        return {"exit_names": exit_names, "predictions": predictions}


def chain_application(folder: str | Path, *, threads: int | None = 1):
    """The bound application: the entry node's stage, holding the next one's handle, and so on."""
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.ray_serve.graph import build_graph

    deployment = load_deployment(folder)
    graph = build_graph(folder, deployment=deployment)
    if graph.cyclic:
        raise ValueError("the hand-written chain covers chains that visit each node once")
    bound = None
    for node in reversed(graph.chain):
        bound = Stage.options(name=f"stage-{node}", ray_actor_options=dict(graph.stages[node].actor_options)).bind(
            str(deployment.node_folder(node)), threads, bound)
    return bound
