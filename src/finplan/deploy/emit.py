"""Turn one application of a plan into a deployment folder: per-node ONNX parts and manifests.

See docs/deployment-format.md for the folder layout and the manifest format. ``emit`` checks
the plan against the model (hash, block and exit names) before writing anything, builds the
folder in a temporary sibling and renames it into place at the end, so a failure never
leaves a half-written deployment behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from finplan.contract import Contract, load_branchy_model, model_hash
from finplan.deploy.manifest import MANIFEST_FILE, MANIFEST_SCHEMA, sha256_bytes, sha256_file
from finplan.errors import FinplanInputError
from finplan.exit_policy import policy_of
from finplan.fileio import atomic_write_json, load_document, parse_text, replace_folder
from finplan.hardware_profiles import validate_plan_schema
from finplan.onnx_parts import (BATCH_DIM, CutError, Layout, PartError, compute_layout, extract_part, infer_shapes,
                                 layout_boundaries, tensor_dtype, tensor_shape)

DEPLOYMENT_SCHEMA = "finplan.deployment/1"
DEPLOYMENT_FILE = "deployment.json"
PLAN_FILE = "plan.json"
NETWORK_FILE = "network.json"
PROFILES_DIR = "profiles"


@dataclass
class StagePlan:
    """One part to cut: consecutive blocks on one node, and the exit heads after its last block."""
    node: str
    blocks: list[int]                                        # block indices (0-based), consecutive
    exits: list[tuple[str, float | None]] = field(default_factory=list)  # (exit name, threshold or None = final)
    is_last: bool = False


@dataclass
class EmitResult:
    folder: Path
    application: str
    model_name: str
    model_hash: str
    nodes: list[dict]          # [{node, stages: [{part, blocks, exits}]}] in chain order
    warnings: list[str]


# ---------------------------------------------------------------- reading the plan

def select_application(plan: dict, name: str | None, plan_path) -> tuple[int, dict]:
    apps = plan.get("applications")
    if not isinstance(apps, list) or not apps:
        raise FinplanInputError("missing or empty; expected a list of applications", file=plan_path, field="applications")
    names = [a.get("name") if isinstance(a, dict) else None for a in apps]
    if name is None:
        if len(apps) > 1:
            raise FinplanInputError(f"the plan has {len(apps)} applications ({', '.join(map(str, names))}); "
                                    "choose one with --application NAME", file=plan_path, field="applications")
        return 0, apps[0]
    if name not in names:
        raise FinplanInputError(f"no application named {name!r} (applications: {', '.join(map(str, names))})",
                                file=plan_path, field="applications")
    index = names.index(name)
    return index, apps[index]


def active_exits_of(app: dict, contract: Contract, *, file, field: str) -> tuple[str, dict[str, float]]:
    """(final exit name, {early exit name: threshold}) as the plan states them."""
    final = app.get("final_exit")
    exit_names = [e.name for e in contract.exits]
    if not isinstance(final, str) or final not in exit_names:
        raise FinplanInputError(f"is {final!r}; the model's exits are {', '.join(exit_names)} (a plan for another model?)",
                                file=file, field=f"{field}.final_exit")
    early: dict[str, float] = {}
    listed = app.get("active_exits")
    if listed:
        for i, item in enumerate(listed):
            name, threshold = item.get("name"), item.get("threshold")
            if name == final:
                continue
            early[name] = threshold
            where = f"{field}.active_exits[{i}]"
            _check_threshold(name, threshold, exit_names, file=file, field=where)
    thresholds = app.get("thresholds") or {}
    if isinstance(thresholds, list):  # tolerate [{name, threshold}]
        thresholds = {t.get("name"): t.get("threshold") for t in thresholds}
    for name, threshold in thresholds.items():
        if name == final or name in early:
            continue
        _check_threshold(name, threshold, exit_names, file=file, field=f"{field}.thresholds.{name}")
        early[name] = threshold
    return final, {k: float(v) for k, v in early.items()}


def _check_threshold(name, threshold, exit_names, *, file, field):
    if name not in exit_names:
        raise FinplanInputError(f"names exit {name!r}, which the model does not have (exits: {', '.join(exit_names)})",
                                file=file, field=field)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise FinplanInputError(f"threshold of {name} is {threshold!r}; expected a number in [0, 1]", file=file, field=field)


def check_model_matches(app: dict, model: onnx.ModelProto, contract: Contract, *, file, field: str, model_path,
                        inferred: onnx.ModelProto | None = None, live_bytes: dict[str, int | None] | None = None
                        ) -> list[str]:
    """Refuse a plan made for another model; returns warnings when the plan cannot tell.

    With the model hash in the plan, the hash decides. Without it (a hand-written card), the
    plan's numbers are checked against the model instead: the card's input and per-block output
    bytes (when the card the plan names can be found) and the bytes of the plan's transfers. A
    card for another model gives link times and energies that are off by its size ratio, so a
    disagreement is refused, not warned about."""
    warnings = []
    plan_model = app.get("model") or {}
    if not isinstance(plan_model, dict):
        raise FinplanInputError(f"is {plan_model!r}; expected a mapping {{name, hash, card}}", file=file,
                                field=f"{field}.model")
    want = plan_model.get("hash")
    have = model_hash(model)
    if want is not None and want != have:
        raise FinplanInputError(
            f"the plan is for model {plan_model.get('name')!r} with hash {want[:19]}..., but {model_path} has hash "
            f"{have[:19]}... (a plan for another model; plan again with this model's card)",
            file=file, field=f"{field}.model.hash")
    if want is None:
        model_bytes = live_bytes if live_bytes is not None else _model_bytes(
            inferred if inferred is not None else infer_shapes(model), contract, model_path)
        card_path = _resolve_card(plan_model.get("card"), Path(file))
        card_is_the_models = False
        if card_path is not None:
            card_is_the_models = _check_card_bytes(card_path, model_bytes, have, model_path)
            checked = f"block and exit names and the bytes of card {card_path}"
        else:
            checked = "block and exit names and the bytes of the plan's transfers" + (
                f" (its card {plan_model['card']!r} was not found)" if plan_model.get("card") else "")
        _check_transfer_bytes(app, model_bytes, file=file, field=field, model_path=model_path)
        if not card_is_the_models:  # a card carrying the model's hash vouches for the plan
            warnings.append(f"the plan's model card has no hash; only {checked} were checked against the model "
                            "(profile the model for a card with its hash)")
    return warnings


def _chmod_like_mkdir(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def _model_bytes(inferred: onnx.ModelProto, contract: Contract, model_path) -> dict[str, int | None]:
    """Bytes per sample that cross each cut: the graph inputs (key ``"input"``, as the plan's
    transfers name it) and each block's live set, summed over its tensors (what a card's
    ``output_bytes`` and a plan's transfer price)."""
    try:
        live = layout_boundaries(compute_layout(inferred, contract), contract)
    except CutError as exc:
        raise FinplanInputError(str(exc), file=model_path) from None
    return _live_bytes(live, contract)


def _live_bytes(live, contract: Contract) -> dict[str, int | None]:
    sizes = {"input": sum(t.bytes_per_sample for t in live[0])}
    for k, block in enumerate(contract.blocks, start=1):
        # the last block's live set is empty: only its own output would cross (it never does)
        sizes[block.name] = sum(t.bytes_per_sample for t in live[k]) if k < len(contract.blocks) else None
    return sizes


def _resolve_card(ref, plan_path: Path) -> Path | None:
    """The card a plan names (``model.card``: the path as written in the scenario, or on the
    command line): absolute, or relative to the plan's folder or the current folder."""
    if not isinstance(ref, str) or not ref:
        return None
    return _resolve_profile(ref, plan_path)


def _check_card_bytes(card_path: Path, model_bytes: dict[str, int | None], have: str, model_path) -> bool:
    """Refuse a card whose sizes are not the model's. A card whose hash is the model's is the
    model's card (nothing to compare): returns True then, False when only sizes were compared."""
    from finplan.hardware_profiles import validate_card

    doc = validate_card(load_document(card_path, "model"), card_path)
    if doc.get("hash") is not None:
        if doc["hash"] != have:
            raise FinplanInputError(f"has hash {doc['hash'][:19]}..., but {model_path} has hash {have[:19]}... "
                                    "(a card for another model; profile this model for its card, then plan again)",
                                    file=card_path, field="hash")
        return True
    # the last block's output never crosses a link (only the final exit follows it), and hand-written
    # cards give it 0 bytes: it is not compared
    compared = [("input_bytes", "the input", "input", doc["input_bytes"])]
    compared += [(f"blocks[{i}].output_bytes", f"the output of {b['name']}", b["name"], b["output_bytes"])
                 for i, b in enumerate(doc["blocks"][:-1])]
    for card_field, what, key, card_value in compared:
        model_value = model_bytes.get(key)
        if model_value is not None and abs(float(card_value) - model_value) >= 0.5:
            raise FinplanInputError(
                f"gives {what} as {card_value:g} bytes per sample, but {model_path} has {model_value} bytes: the card "
                "describes another model; profile this model (finplan profile MODEL.onnx --card CARD.json) and plan "
                "again with that card", file=card_path, field=card_field)


def _check_transfer_bytes(app: dict, model_bytes: dict[str, int | None], *, file, field: str, model_path) -> None:
    """The bytes per sample the plan priced each transfer at are the model's."""
    transfers = app.get("transfers") or []
    if not isinstance(transfers, list):
        return  # the plan's schema is the planner's business; only numbers that are there are compared
    for j, transfer in enumerate(transfers):
        if not isinstance(transfer, dict):
            continue
        key, planned = transfer.get("after_block"), transfer.get("bytes")
        model_value = model_bytes.get(key) if isinstance(key, str) else None
        if model_value is None or isinstance(planned, bool) or not isinstance(planned, (int, float)):
            continue
        if abs(float(planned) - model_value) >= 0.5:
            what = "the input" if key == "input" else f"the output of {key}"
            raise FinplanInputError(
                f"prices {what} at {planned:g} bytes per sample, but {model_path} has {model_value} bytes: the plan was "
                "made with a card for another model; profile this model (finplan profile MODEL.onnx --card CARD.json) "
                "and plan again with that card", file=file, field=f"{field}.transfers[{j}].bytes")


def check_links(app: dict, placement: list[str], source: str, network: dict, *, file, field: str, name: str) -> None:
    """Every node the application runs on is in the plan's network, and every hop it makes
    (source -> first node when they differ, then each change of node) has a link; otherwise
    runtimes would refuse the deployment only when it runs."""
    if not isinstance(network, dict) or not isinstance(network.get("nodes"), list):
        raise FinplanInputError("missing; expected the network document inline (nodes, links)", file=file, field="network")
    links = network.get("links")
    known = {n.get("name") for n in network["nodes"] if isinstance(n, dict)}
    for i, node in enumerate(placement):
        if node not in known:
            raise FinplanInputError(f"application {name!r} places a block on node {node!r}, which the plan's network does "
                                    f"not have (nodes: {', '.join(sorted(map(str, known)))})",
                                    file=file, field=f"{field}.placement[{i}].node")
    have = {(l.get("from"), l.get("to")) for l in links if isinstance(l, dict)} if isinstance(links, list) else set()
    hops = [] if source == placement[0] else [(source, placement[0], f"{field}.source", "the input")]
    hops += [(placement[i - 1], placement[i], f"{field}.placement[{i}]", f"the output of {app['placement'][i - 1]['block']}")
             for i in range(1, len(placement)) if placement[i] != placement[i - 1]]
    for src, dst, where, what in hops:
        if (src, dst) not in have:
            raise FinplanInputError(f"application {name!r} sends {what} from {src} to {dst}, but the plan's network has "
                                    f"no link {src} -> {dst} (network.links); plan again on this network",
                                    file=file, field=where)


def placement_of(app: dict, contract: Contract, *, file, field: str) -> list[str]:
    placement = app.get("placement")
    if not isinstance(placement, list) or not placement:
        raise FinplanInputError("missing or empty; expected [{block, node}]", file=file, field=f"{field}.placement")
    nodes = []
    for i, item in enumerate(placement):
        where = f"{field}.placement[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("node"), str):
            raise FinplanInputError("expected {block, node}", file=file, field=where)
        if i >= len(contract.blocks) or item.get("block") != contract.blocks[i].name:
            expected = contract.blocks[i].name if i < len(contract.blocks) else "(no more blocks)"
            raise FinplanInputError(f"names block {item.get('block')!r} where the model has {expected!r} "
                                    "(a plan for another model?)", file=file, field=f"{where}.block")
        nodes.append(item["node"])
    return nodes


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


# ---------------------------------------------------------------- writing

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


def _resolve_profile(ref: str, plan_path: Path) -> Path | None:
    candidate = Path(ref)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for base in (plan_path.parent, Path.cwd()):
        if (base / candidate).is_file():
            return base / candidate
    return None


def _write_network(plan: dict, plan_path: Path, tmp: Path) -> dict[str, list[str]]:
    """network.json with each profile copied into profiles/ and its path rewritten relative to
    the deployment root, so the folder can be moved and energy still be derived from it.
    Returns each node's profiles (paths relative to the deployment root)."""
    network = plan.get("network")
    if not isinstance(network, dict) or not isinstance(network.get("nodes"), list):
        raise FinplanInputError("missing; expected the network document inline (nodes, links)", file=plan_path, field="network")
    network = json.loads(json.dumps(network))  # deep copy
    network.setdefault("schema", "finplan.network/1")
    (tmp / PROFILES_DIR).mkdir()
    copied: dict[str, str] = {}
    by_node: dict[str, list[str]] = {}
    for i, node in enumerate(network["nodes"]):
        refs = node.get("profile")
        if refs is None:
            continue
        listed = refs if isinstance(refs, list) else [refs]
        rewritten = []
        for j, ref in enumerate(listed):
            where = f"network.nodes[{i}].profile" + (f"[{j}]" if isinstance(refs, list) else "")
            source = _resolve_profile(str(ref), plan_path)
            if source is None:
                raise FinplanInputError(f"profile {ref!r} not found (relative paths are read from the plan's folder "
                                        "or the current folder); the deployment copies it for derived energy",
                                        file=plan_path, field=where)
            key = str(source.resolve())
            if key not in copied:
                name = source.name
                stem, counter = name, 1
                while (tmp / PROFILES_DIR / name).exists():
                    counter += 1
                    name = f"{counter}-{stem}"
                shutil.copyfile(source, tmp / PROFILES_DIR / name)
                copied[key] = f"{PROFILES_DIR}/{name}"
            rewritten.append(copied[key])
        node["profile"] = rewritten if isinstance(refs, list) else rewritten[0]
        by_node[str(node.get("name"))] = rewritten
    atomic_write_json(tmp / NETWORK_FILE, network)
    return by_node


def _session_of(profiles: list[str], root: Path, parent_hash: str) -> dict | None:
    """The onnxruntime settings the node's profile of this model timed its parts with, so the
    runtime runs them the same way (the planner's latencies hold for those settings only)."""
    for rel in profiles:
        try:
            doc = json.loads((root / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # the planner already read it; a profile that is not JSON names no settings
        options = doc.get("session_options") if isinstance(doc, dict) else None
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


def emit(plan_path: str | os.PathLike, model_path: str | os.PathLike, out: str | os.PathLike, *,
         application: str | None = None, force: bool = False) -> EmitResult:
    """Write the deployment folder ``out`` for one application of the plan at ``plan_path``.

    Raises FinplanInputError (nothing written) for an infeasible plan, a plan for another
    model, an unknown application, or an existing ``out`` without ``force``.
    """
    plan_path, model_path, shown_out = Path(plan_path), Path(model_path), Path(out)
    out = Path(os.path.normpath(os.path.abspath(out)))  # "." and "deploy/" have a name and a parent
    plan_bytes = plan_path.read_bytes() if plan_path.is_file() else None
    plan = validate_plan_schema(load_document(plan_path, "plan"), plan_path)
    index, app = select_application(plan, application, plan_path)
    field = f"applications[{index}]"
    name = str(app.get("name", f"app{index + 1}"))
    if app.get("feasible") is not True:
        reason = app.get("reason") or "no reason given"
        raise FinplanInputError(f"application {name!r} is infeasible ({reason}); nothing to deploy",
                                file=plan_path, field=f"{field}.feasible")
    if out.exists() and not force:
        raise FinplanInputError("already exists; choose another folder or pass --force to replace it", file=shown_out)
    if out.exists():
        check_replaceable(out, file=shown_out)
    if not out.parent.is_dir():
        raise FinplanInputError("cannot write: the parent folder does not exist", file=shown_out)

    model, contract = load_branchy_model(model_path)
    inferred = infer_shapes(model)
    try:
        layout = compute_layout(inferred, contract)
        live = layout_boundaries(layout, contract)
    except CutError as exc:
        raise FinplanInputError(str(exc), file=model_path) from None
    warnings = check_model_matches(app, model, contract, file=plan_path, field=field, model_path=model_path,
                                   inferred=inferred, live_bytes=_live_bytes(live, contract))
    placement = placement_of(app, contract, file=plan_path, field=field)
    final, early = active_exits_of(app, contract, file=plan_path, field=field)
    final_after = contract.block_index(next(e for e in contract.exits if e.name == final).after)
    if final_after != len(placement) - 1:
        raise FinplanInputError(f"places {len(placement)} blocks but the final exit {final} follows block "
                                f"{contract.blocks[final_after].name}", file=plan_path, field=f"{field}.placement")
    for exit_name in early:
        exit_ = next(e for e in contract.exits if e.name == exit_name)
        if contract.block_index(exit_.after) > final_after:
            raise FinplanInputError(f"exit {exit_name} follows a block after the final exit {final}",
                                    file=plan_path, field=f"{field}.active_exits")
    stages = plan_stages(placement, contract, final, early)
    parent_hash = model_hash(model)
    plan_model = app.get("model") or {}
    parent_name = str(plan_model.get("name") or model.graph.name or model_path.stem)
    graph_index = layout.index

    source = app.get("source") or placement[0]
    check_links(app, placement, source, plan.get("network"), file=plan_path, field=field, name=name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    _chmod_like_mkdir(tmp)  # mkdtemp makes it 0700; the renamed folder should look like any other
    try:
        order: list[str] = []
        per_node: dict[str, list[dict]] = {}
        entries: dict[str, list[dict]] = {}
        summary: dict[str, list[dict]] = {}
        previous_node: str | None = None
        for s, stage in enumerate(stages):
            node = stage.node
            if node not in per_node:
                order.append(node)
                per_node[node] = []
                entries[node] = []
                summary[node] = []
                (tmp / node).mkdir()
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
                part = extract_part(inferred, input_names, outputs, name=f"{node}_{part_name[:-5]}", index=graph_index)
            except PartError as exc:
                raise FinplanInputError(f"cannot cut blocks {contract.blocks[first].name}..{contract.blocks[last].name}: {exc}",
                                        file=model_path) from None
            _set_part_metadata(part, contract, stage, node=node, index=local_index, application=name,
                               parent_name=parent_name, parent_hash=parent_hash, inputs=input_names)
            onnx.checker.check_model(part, full_check=True)
            data = part.SerializeToString(deterministic=True)
            (tmp / node / part_name).write_bytes(data)
            nxt = None
            if not stage.is_last:
                nxt = {"node": stages[s + 1].node, "tensor": contract.blocks[last].output,
                       "tensors": [_spec(inferred, t) for t in sent]}
            out_specs = []
            for tensor, role in zip(outputs, roles):
                spec = _spec(inferred, tensor)
                spec["role"] = role
                out_specs.append(spec)
            per_node[node].append({
                "part": part_name, "sha256": sha256_bytes(data),
                "inputs": [_spec(inferred, t) for t in input_names], "outputs": out_specs,
                "blocks": [contract.blocks[b].name for b in stage.blocks], "exits": exit_specs, "next": nxt,
            })
            if previous_node != node:
                entries[node].append({"tensor": key_in, "stage": local_index,
                                      "from": previous_node if previous_node is not None else (source if source != node else None),
                                      "tensors": [_spec(inferred, t) for t in received]})
            summary[node].append({"part": part_name, "blocks": per_node[node][-1]["blocks"],
                                  "exits": [(e["name"], e["threshold"]) for e in exit_specs]})
            previous_node = node

        entry_node = stages[0].node
        node_profiles = _write_network(plan, plan_path, tmp)
        sessions = {node: _session_of(node_profiles.get(node, []), tmp, parent_hash) for node in order}
        borrowed = _borrowed_session(sessions, source, order)
        for node in order:
            manifest = {
                "schema": MANIFEST_SCHEMA, "node": node, "application": name,
                "model": {"name": parent_name, "hash": parent_hash},
                "is_source": node == entry_node,
                "inputs": entries[node][0]["tensors"],
                "entries": entries[node], "stages": per_node[node], "predicted": _predicted_for(app, node),
            }
            session = sessions[node] or borrowed
            if session is not None:
                manifest["session"] = session
            atomic_write_json(tmp / node / MANIFEST_FILE, manifest)
        deployment = {
            "schema": DEPLOYMENT_SCHEMA, "application": name, "model": {"name": parent_name, "hash": parent_hash},
            "source": source, "entry_node": entry_node, "inputs": [_spec(inferred, t) for t in contract.inputs],
            "nodes": order,
            "mode": (plan.get("options") or {}).get("mode"), "final_exit": final,
            "active_exits": [{"name": n, "threshold": t} for n, t in early.items()] + [{"name": final, "threshold": None}],
        }
        # plan.json byte for byte (what was planned is what is deployed); a YAML plan is stored as JSON
        if plan_path.suffix.lower() in (".yaml", ".yml") or plan_bytes is None:
            atomic_write_json(tmp / PLAN_FILE, parse_text(plan_path.read_text(encoding="utf-8"), plan_path))
        else:
            (tmp / PLAN_FILE).write_bytes(plan_bytes)
        # Every file a runtime reads besides the parts (hashed in their manifest) is tied to this
        # index, so that a hand-edited threshold, model hash or link is refused at load, not run.
        tied = [PLAN_FILE, NETWORK_FILE] + [f"{node}/{MANIFEST_FILE}" for node in order] + sorted(
            f"{PROFILES_DIR}/{p.name}" for p in (tmp / PROFILES_DIR).iterdir() if p.is_file())
        deployment["sha256"] = {rel: sha256_file(tmp / rel) for rel in tied}
        atomic_write_json(tmp / DEPLOYMENT_FILE, deployment)
        _swap_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    nodes = [{"node": node, "stages": summary[node]} for node in order]
    return EmitResult(shown_out, name, parent_name, parent_hash, nodes, warnings)


def check_replaceable(out: Path, *, file) -> None:
    """``--force`` replaces only what finplan wrote: a deployment folder (its deployment.json
    names finplan.deployment/1) or an empty folder; anything else is refused."""
    if not out.is_dir():
        raise FinplanInputError("is a file, not a deployment folder; nothing is replaced", file=file)
    if not any(out.iterdir()):
        return
    index = out / DEPLOYMENT_FILE
    try:
        doc = json.loads(index.read_text(encoding="utf-8")) if index.is_file() else None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != DEPLOYMENT_SCHEMA:
        raise FinplanInputError(f"is not a deployment folder finplan wrote (no {DEPLOYMENT_FILE} of schema "
                                f"{DEPLOYMENT_SCHEMA}); --force replaces only those: choose another folder", file=file)


def _swap_into_place(tmp: Path, out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise FinplanInputError("already exists; choose another folder or pass --force to replace it", file=out)
    replace_folder(tmp, out)  # never a moment without a deployment at ``out``


__all__ = ["emit", "EmitResult", "plan_stages", "DEPLOYMENT_FILE", "PLAN_FILE", "NETWORK_FILE"]
