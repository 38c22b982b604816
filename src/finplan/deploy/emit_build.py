"""emit, step 2: build a deployment in memory, from a checked plan (``emit_check``).

Pure: parts as bytes, manifests and the other documents as dicts, nothing read from or
written to disk, so a deployment is testable without a folder. ``emit.write_deployment``
writes what is built (temporary folder, hashes, swap into place).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import onnx

from finplan.contract import Contract
from finplan.deploy.manifest import MANIFEST_FILE, MANIFEST_SCHEMA, sha256_bytes
from finplan.errors import FinplanInputError
from finplan.exit_policy import policy_of
from finplan.onnx_parts import BATCH_DIM, Layout, PartError, extract_part, tensor_dtype, tensor_shape

DEPLOYMENT_SCHEMA = "finplan.deployment/1"
DEPLOYMENT_FILE = "deployment.json"
PLAN_FILE = "plan.json"
NETWORK_FILE = "network.json"
PROFILES_DIR = "profiles"


@dataclass(frozen=True)
class ProfileFile:
    """A profile the plan's network names: the file it resolved to (``key``, absolute), its
    file name and its bytes."""
    key: str
    name: str
    data: bytes


@dataclass
class EmitInputs:
    """One application of a plan, checked against its model (``emit_check.check_documents``)."""
    plan: dict
    plan_bytes: bytes  # what the deployment's plan.json holds
    app: dict
    name: str
    model: onnx.ModelProto
    model_name: str
    model_hash: str
    inferred: onnx.ModelProto
    contract: Contract
    layout: Layout
    live: list
    placement: list[str]  # node of each block
    final: str
    early: dict[str, float]  # active early exit -> threshold
    source: str
    profiles: dict[str, ProfileFile]  # as the network names them
    warnings: list[str]
    model_file: str  # names the model in messages


@dataclass
class DeploymentBuild:
    """A deployment folder in memory: ``files`` (path relative to the root -> bytes: parts,
    profiles, plan.json), ``documents`` (path -> JSON document: network.json, each manifest),
    the index ``deployment`` (deployment.json without its hashes) and ``tied``: the files the
    index hashes."""
    files: dict[str, bytes]
    documents: dict[str, dict]
    deployment: dict
    tied: list[str]
    nodes: list[dict] = field(default_factory=list)  # [{node, stages: [{part, blocks, exits}]}] in chain order


@dataclass
class StagePlan:
    """One part to cut: consecutive blocks on one node, and the exit heads after its last block."""
    node: str
    blocks: list[int]                                        # block indices (0-based), consecutive
    exits: list[tuple[str, float | None]] = field(default_factory=list)  # (exit name, threshold or None = final)
    is_last: bool = False


def plan_stages(placement: list[str], contract: Contract, final: str, early: dict[str, float]) -> list[StagePlan]:
    """Cut the placed blocks into stages: at every change of node and after every block
    followed by an active exit (so that samples can leave between stages)."""
    after = {}  # block index -> [(exit, threshold)] in contract order, final exit last
    for exit_ in contract.exits:
        if exit_.name in early:
            after.setdefault(contract.block_index(exit_.after), []).append((exit_.name, early[exit_.name]))
    final_exit = next(e for e in contract.exits if e.name == final)
    last = len(placement) - 1
    after.setdefault(contract.block_index(final_exit.after), []).append((final, None))
    stages: list[StagePlan] = []
    current: StagePlan | None = None
    for b, node in enumerate(placement):
        if current is None or current.node != node:
            current = StagePlan(node, [])
            stages.append(current)
        current.blocks.append(b)
        if b in after or b == last or placement[b + 1] != node:
            current.exits = after.get(b, [])
            current = None
    stages[-1].is_last = True
    return stages


def _spec(inferred: onnx.ModelProto, name: str) -> dict:
    shape = tensor_shape(inferred, name)
    shape = [BATCH_DIM] + [d if isinstance(d, int) else str(d) for d in shape[1:]]
    return {"name": name, "shape": shape, "dtype": str(tensor_dtype(inferred, name))}


def _stage_tensors(layout: Layout, contract: Contract, stage: StagePlan, received: list[str],
                   sent: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(part outputs, their roles, part inputs) of one stage: blocks first..last and the exit heads after last.

    Outputs: the live tensors handed on that the stage computes (the last block's contract output
    first), then the exit outputs; a tensor of ``sent`` the stage only passes through is not an
    output (the runtime forwards it). Inputs: the tensors of ``received`` that the stage's blocks
    and heads read, in the live set's order."""
    parts = [layout.blocks[b] for b in stage.blocks]
    heads = {name for name, _ in stage.exits}
    parts += [spec for spec in layout.exits if spec.name in heads]
    nodes = layout.index.model.graph.node
    produced = {name for b in stage.blocks for position in layout.blocks[b].positions
                for name in nodes[position].output if name}
    key = contract.blocks[stage.blocks[-1]].output
    outputs = ([key] if sent else []) + [t for t in sent if t in produced and t != key]
    roles = ["block"] * len(outputs)
    for exit_name, _ in stage.exits:
        exit_ = next(e for e in contract.exits if e.name == exit_name)
        if exit_.output not in outputs:
            outputs.append(exit_.output)
            roles.append("exit")
    read = {name for part in parts for name in part.inputs} - produced
    missing = read - set(received)
    if missing:  # the layout's live sets say otherwise: finplan's bug, not the user's
        raise RuntimeError(f"stage {stage.blocks} reads {sorted(missing)}, which its live set {received} lacks")
    return outputs, roles, [t for t in received if t in read]


def _set_part_metadata(part: onnx.ModelProto, contract: Contract, stage: StagePlan, *, node: str, index: int,
                       application: str, parent_name: str, parent_hash: str, inputs: list[str]) -> None:
    blocks = [contract.blocks[b] for b in stage.blocks]
    exit_names = {name for name, _ in stage.exits}
    doc = {
        "inputs": inputs,
        "blocks": [{"name": b.name, "output": b.output} for b in blocks],
        "exits": [{"name": e.name, "after": e.after, "output": e.output} for e in contract.exits if e.name in exit_names],
        "part": {"node": node, "stage": index, "application": application,
                 "parent_model": {"name": parent_name, "hash": parent_hash}},
    }
    entry = part.metadata_props.add()
    entry.key = "finplan"
    entry.value = json.dumps(doc, separators=(",", ":"))


def _predicted_for(app: dict, node: str) -> dict:
    load = (app.get("per_node") or {}).get(node) or {}
    transfers = app.get("transfers") or []
    bytes_in = sum(float(t.get("bytes", 0)) * float(t.get("probability", 1.0)) for t in transfers if t.get("to") == node)
    bytes_out = sum(float(t.get("bytes", 0)) * float(t.get("probability", 1.0)) for t in transfers if t.get("from") == node)
    return {"energy_j": load.get("energy_j"), "busy_s": load.get("busy_s"), "bytes_in": bytes_in, "bytes_out": bytes_out,
            "utilization": load.get("utilization"), "params_bytes": load.get("params_bytes")}


def _network_with_copies(network: dict, profiles: dict[str, ProfileFile]
                         ) -> tuple[dict, dict[str, bytes], dict[str, list[str]]]:
    """network.json with each profile's path rewritten to its copy in profiles/ (relative to the
    deployment root, so the folder can be moved and energy still be derived from it); the
    copies (path -> bytes); each node's profiles."""
    network = json.loads(json.dumps(network))  # deep copy
    network.setdefault("schema", "finplan.network/1")
    copied: dict[str, str] = {}
    copies: dict[str, bytes] = {}
    by_node: dict[str, list[str]] = {}
    for node in network["nodes"]:
        refs = node.get("profile")
        if refs is None:
            continue
        rewritten = []
        for ref in refs if isinstance(refs, list) else [refs]:
            profile = profiles[str(ref)]
            if profile.key not in copied:
                name, counter = profile.name, 1
                while f"{PROFILES_DIR}/{name}" in copies:
                    counter += 1
                    name = f"{counter}-{profile.name}"
                copied[profile.key] = f"{PROFILES_DIR}/{name}"
                copies[copied[profile.key]] = profile.data
            rewritten.append(copied[profile.key])
        node["profile"] = rewritten if isinstance(refs, list) else rewritten[0]
        by_node[str(node.get("name"))] = rewritten
    return network, copies, by_node


def _session_of(profiles: list[str], copies: dict[str, bytes], parent_hash: str) -> dict | None:
    """The onnxruntime settings the node's profile of this model timed its parts with, so the
    runtime runs them the same way (the planner's latencies hold for those settings only)."""
    for rel in profiles:
        try:
            doc = json.loads(copies[rel].decode("utf-8"))
        except ValueError:
            continue  # the planner already read it; a profile that is not JSON names no settings
        if not isinstance(doc, dict):
            continue
        options = doc.get("session_options")
        if (doc.get("model") or {}).get("hash") == parent_hash and isinstance(options, dict) \
                and isinstance(options.get("intra_op_threads"), int):
            return {"intra_op_threads": options["intra_op_threads"],
                    "execution_provider": options.get("execution_provider"), "profile": rel}
    return None


def _borrowed_session(sessions: dict[str, dict | None], source: str, order: list[str]) -> dict | None:
    """For a node without a profile of this model (an analytic node, where this machine stands
    in): the source's profiled settings, else the first profiled node's in chain order. With
    onnxruntime's default threads instead a ViT part ran 1.7x slower than with the profiled one."""
    for node in [source] + order:
        if sessions.get(node) is not None:
            return {**sessions[node], "from_node": node}
    return None


def build_deployment(inputs: EmitInputs) -> DeploymentBuild:
    """The deployment of a checked application, in memory (see the module docstring).

    Raises FinplanInputError when onnx cannot cut a stage's part out of the model."""
    contract, inferred, live, layout = inputs.contract, inputs.inferred, inputs.live, inputs.layout
    stages = plan_stages(inputs.placement, contract, inputs.final, inputs.early)
    files: dict[str, bytes] = {}
    order: list[str] = []
    per_node: dict[str, list[dict]] = {}
    entries: dict[str, list[dict]] = {}
    summary: dict[str, list[dict]] = {}
    previous_node: str | None = None
    for s, stage in enumerate(stages):
        node = stage.node
        if node not in per_node:
            order.append(node)
            per_node[node], entries[node], summary[node] = [], [], []
        first, last = stage.blocks[0], stage.blocks[-1]
        received = [t.name for t in live[first]]           # the live set arriving before the first block
        sent = [] if stage.is_last else [t.name for t in live[last + 1]]  # the live set handed on
        key_in = contract.inputs[0] if first == 0 else contract.blocks[first - 1].output
        outputs, roles, input_names = _stage_tensors(layout, contract, stage, received, sent)
        exit_specs = []
        for exit_name, threshold in stage.exits:
            exit_ = next(e for e in contract.exits if e.name == exit_name)
            exit_specs.append({"name": exit_name, "output": exit_.output, "policy": policy_of(inferred, exit_.output),
                               "threshold": threshold})
        local_index = len(per_node[node])
        part_name = f"part{local_index:02d}_{contract.blocks[first].name}-{contract.blocks[last].name}.onnx"
        try:
            part = extract_part(inferred, input_names, outputs, name=f"{node}_{part_name[:-5]}", index=layout.index)
        except PartError as exc:
            raise FinplanInputError(f"cannot cut blocks {contract.blocks[first].name}..{contract.blocks[last].name}: {exc}",
                                    file=inputs.model_file) from None
        _set_part_metadata(part, contract, stage, node=node, index=local_index, application=inputs.name,
                           parent_name=inputs.model_name, parent_hash=inputs.model_hash, inputs=input_names)
        onnx.checker.check_model(part, full_check=True)
        data = part.SerializeToString(deterministic=True)
        files[f"{node}/{part_name}"] = data
        nxt = None
        if not stage.is_last:
            nxt = {"node": stages[s + 1].node, "tensor": contract.blocks[last].output,
                   "tensors": [_spec(inferred, t) for t in sent]}
        out_specs = [{**_spec(inferred, tensor), "role": role} for tensor, role in zip(outputs, roles)]
        per_node[node].append({
            "part": part_name, "sha256": sha256_bytes(data),
            "inputs": [_spec(inferred, t) for t in input_names], "outputs": out_specs,
            "blocks": [contract.blocks[b].name for b in stage.blocks], "exits": exit_specs, "next": nxt,
        })
        if previous_node != node:
            entries[node].append({"tensor": key_in, "stage": local_index,
                                  "from": previous_node if previous_node is not None
                                  else (inputs.source if inputs.source != node else None),
                                  "tensors": [_spec(inferred, t) for t in received]})
        summary[node].append({"part": part_name, "blocks": per_node[node][-1]["blocks"],
                              "exits": [(e["name"], e["threshold"]) for e in exit_specs]})
        previous_node = node

    network, copies, node_profiles = _network_with_copies(inputs.plan["network"], inputs.profiles)
    files.update(copies)
    sessions = {node: _session_of(node_profiles.get(node, []), copies, inputs.model_hash) for node in order}
    borrowed = _borrowed_session(sessions, inputs.source, order)
    documents: dict[str, dict] = {NETWORK_FILE: network}
    model = {"name": inputs.model_name, "hash": inputs.model_hash}
    for node in order:
        manifest = {
            "schema": MANIFEST_SCHEMA, "node": node, "application": inputs.name, "model": dict(model),
            "is_source": node == stages[0].node,
            "inputs": entries[node][0]["tensors"],
            "entries": entries[node], "stages": per_node[node], "predicted": _predicted_for(inputs.app, node),
        }
        session = sessions[node] or borrowed
        if session is not None:
            manifest["session"] = session
        documents[f"{node}/{MANIFEST_FILE}"] = manifest
    deployment = {
        "schema": DEPLOYMENT_SCHEMA, "application": inputs.name, "model": dict(model),
        "source": inputs.source, "entry_node": stages[0].node,
        "inputs": [_spec(inferred, t) for t in contract.inputs], "nodes": order,
        "mode": (inputs.plan.get("options") or {}).get("mode"), "final_exit": inputs.final,
        "active_exits": [{"name": n, "threshold": t} for n, t in inputs.early.items()]
        + [{"name": inputs.final, "threshold": None}],
    }
    files[PLAN_FILE] = inputs.plan_bytes
    # Every file a runtime reads besides the parts (hashed in their manifest) is tied to the
    # index, so that a hand-edited threshold, model hash or link is refused at load, not run.
    tied = [PLAN_FILE, NETWORK_FILE] + [f"{node}/{MANIFEST_FILE}" for node in order] + sorted(copies)
    return DeploymentBuild(files, documents, deployment, tied,
                           [{"node": node, "stages": summary[node]} for node in order])
