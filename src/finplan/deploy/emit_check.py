"""emit, step 1: check a plan against the model before anything is built or written.

Every refusal of ``finplan emit`` is here: the plan's application (feasible, for this model:
hash, or block and exit names and bytes), its placement and exits, the links it hops over, the
output folder, the profiles it names. ``check_emit`` reads the inputs (plan, model, profiles)
and hands ``check_documents`` what it read; ``check_documents`` reads nothing more, except the
model card a plan without a model hash names (to compare the card's bytes with the model's).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from finplan.contract import Contract, load_branchy_model, model_hash
from finplan.deploy.emit_build import DEPLOYMENT_FILE, DEPLOYMENT_SCHEMA, EmitInputs, ProfileFile
from finplan.errors import FinplanInputError
from finplan.fileio import load_document, parse_text, to_json_text
from finplan.hardware_profiles import validate_plan_schema
from finplan.onnx_parts import CutError, compute_layout, infer_shapes, layout_boundaries


@dataclass
class Target:
    """Where the deployment goes: ``path`` absolute (so "." and "deploy/" have a name and a
    parent), ``shown`` as the user wrote it (for messages)."""
    path: Path
    shown: Path
    force: bool


def check_emit(plan_path: str | os.PathLike, model_path: str | os.PathLike, out: str | os.PathLike, *,
               application: str | None = None, force: bool = False) -> tuple[EmitInputs, Target]:
    """Read and check everything ``emit`` needs; raises FinplanInputError (nothing written) for
    an infeasible plan, a plan for another model, an unknown application, a missing profile,
    or an existing ``out`` without ``force``."""
    plan_path, model_path = Path(plan_path), Path(model_path)
    target = Target(Path(os.path.normpath(os.path.abspath(out))), Path(out), force)
    plan_bytes = plan_path.read_bytes() if plan_path.is_file() else None
    plan = validate_plan_schema(load_document(plan_path, "plan"), plan_path)
    index, app = select_application(plan, application, plan_path)
    name = str(app.get("name", f"app{index + 1}"))
    if app.get("feasible") is not True:
        reason = app.get("reason") or "no reason given"
        raise FinplanInputError(f"application {name!r} is infeasible ({reason}); nothing to deploy",
                                file=plan_path, field=f"applications[{index}].feasible")
    check_target(target)
    model, contract = load_branchy_model(model_path)
    # plan.json byte for byte (what was planned is what is deployed); a YAML plan is stored as JSON
    if plan_path.suffix.lower() in (".yaml", ".yml") or plan_bytes is None:
        plan_bytes = to_json_text(parse_text(plan_path.read_text(encoding="utf-8"), plan_path)).encode("utf-8")
    profiles = read_profiles(plan.get("network"), plan_path)
    return check_documents(plan, index, model, contract, profiles, plan_bytes=plan_bytes, plan_file=plan_path,
                           model_file=model_path), target


def check_target(target: Target) -> None:
    """``out`` is new, or replaceable with ``force``, and its parent folder exists."""
    out, shown = target.path, target.shown
    if out.exists() and not target.force:
        raise FinplanInputError("already exists; choose another folder or pass --force to replace it", file=shown)
    if out.exists():
        check_replaceable(out, file=shown)
    if not out.parent.is_dir():
        raise FinplanInputError("cannot write: the parent folder does not exist", file=shown)


def check_documents(plan: dict, index: int, model: onnx.ModelProto, contract: Contract,
                    profiles: dict[str, ProfileFile], *, plan_bytes: bytes, plan_file, model_file) -> EmitInputs:
    """Check application ``index`` of ``plan`` (a schema-valid plan document) against ``model``
    and its contract: what ``build_deployment`` needs, checked. ``plan_file`` and ``model_file``
    name the documents in messages; nothing is read but the card of a plan without a model hash."""
    app = plan["applications"][index]
    field = f"applications[{index}]"
    name = str(app.get("name", f"app{index + 1}"))
    inferred = infer_shapes(model)
    try:
        layout = compute_layout(inferred, contract)
        live = layout_boundaries(layout, contract)
    except CutError as exc:
        raise FinplanInputError(str(exc), file=model_file) from None
    warnings = check_model_matches(app, model, contract, file=plan_file, field=field, model_path=model_file,
                                   inferred=inferred, live_bytes=_live_bytes(live, contract))
    placement = placement_of(app, contract, file=plan_file, field=field)
    final, early = active_exits_of(app, contract, file=plan_file, field=field)
    final_after = contract.block_index(next(e for e in contract.exits if e.name == final).after)
    if final_after != len(placement) - 1:
        raise FinplanInputError(f"places {len(placement)} blocks but the final exit {final} follows block "
                                f"{contract.blocks[final_after].name}", file=plan_file, field=f"{field}.placement")
    for exit_name in early:
        exit_ = next(e for e in contract.exits if e.name == exit_name)
        if contract.block_index(exit_.after) > final_after:
            raise FinplanInputError(f"exit {exit_name} follows a block after the final exit {final}",
                                    file=plan_file, field=f"{field}.active_exits")
    source = app.get("source") or placement[0]
    check_links(app, placement, source, plan.get("network"), file=plan_file, field=field, name=name)
    plan_model = app.get("model") or {}
    model_name = str(plan_model.get("name") or model.graph.name or Path(str(model_file)).stem)
    return EmitInputs(plan=plan, plan_bytes=plan_bytes, app=app, name=name, model=model, model_name=model_name,
                      model_hash=model_hash(model), inferred=inferred, contract=contract, layout=layout, live=live,
                      placement=placement, final=final, early=early, source=source, profiles=profiles,
                      warnings=warnings, model_file=str(model_file))


def read_profiles(network, plan_path: Path) -> dict[str, ProfileFile]:
    """Each profile the plan's network names (as written) -> the file it resolves to and its
    bytes: the deployment copies them (derived energy, the profiled session settings)."""
    if not isinstance(network, dict) or not isinstance(network.get("nodes"), list):
        return {}  # check_links refuses a plan without its network
    found: dict[str, ProfileFile] = {}
    for i, node in enumerate(network["nodes"]):
        refs = node.get("profile") if isinstance(node, dict) else None
        if refs is None:
            continue
        listed = refs if isinstance(refs, list) else [refs]
        for j, ref in enumerate(listed):
            if str(ref) in found:
                continue
            where = f"network.nodes[{i}].profile" + (f"[{j}]" if isinstance(refs, list) else "")
            source = _resolve_profile(str(ref), plan_path)
            if source is None:
                raise FinplanInputError(f"profile {ref!r} not found (relative paths are read from the plan's folder "
                                        "or the current folder); the deployment copies it for derived energy",
                                        file=plan_path, field=where)
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise FinplanInputError(f"cannot read ({exc.strerror})", file=source) from None
            found[str(ref)] = ProfileFile(str(source.resolve()), source.name, data)
    return found


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


def _resolve_profile(ref: str, plan_path: Path) -> Path | None:
    candidate = Path(ref)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for base in (plan_path.parent, Path.cwd()):
        if (base / candidate).is_file():
            return base / candidate
    return None


