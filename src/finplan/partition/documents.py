"""The planner's input documents read and checked: model cards, networks, scenarios.

Everything a person writes is validated here, once, at the boundary: first against its shipped
schema (finplan/schemas/{model,network,scenario}.schema.json, through finplan.validation), then
for what a schema cannot say (unique names, links between existing nodes, files that exist, a
source that can run block 1). Every error is a FinplanInputError naming the file and the field.
Library functions take the names to print from their caller (``single_application(source_field=...)``:
the CLI passes ``--source``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from finplan.errors import FinplanInputError
from finplan.fileio import finite_number, load_document
from finplan.hardware_profiles import load_profile, validate_card
from finplan.links import Link
from finplan.partition.problem import (
    Application,
    Block,
    Calibration,
    Exit,
    ModelCard,
    Network,
    Node,
    Options,
    Scenario,
)
from finplan.partition.profile_costs import node_block_costs
from finplan.validation import check_unique, field_path, validate_document

# ---------------------------------------------------------------- model cards

def card_from_dict(doc: Any, path: str | os.PathLike | None = None) -> ModelCard:
    """Validate a ``finplan.model/1`` document and turn it into a ModelCard.

    Parameters
    ----------
    doc : object
        The parsed document.
    path : path-like or None, optional
        The file it came from, named in messages and recorded on the card.

    Returns
    -------
    ModelCard

    Raises
    ------
    FinplanInputError
        Naming the file, the field and what was expected (schema, non-finite or negative
        numbers, a live set that does not add up, calibration rows naming unknown exits).

    Notes
    -----
    Complexity: linear in the document's size.
    """
    validate_card(doc, path)  # the schema (types, bounds, finite numbers, known fields) and the names
    path = None if path is None else str(path)
    blocks = []
    for i, b in enumerate(doc["blocks"]):
        output_bytes = float(b["output_bytes"])
        blocks.append(Block(b["name"], float(b["flops"]), output_bytes, float(b.get("params_bytes", 0)),
                            _live_set(b, output_bytes, path, i)))
    order = {b.name: i for i, b in enumerate(blocks)}
    exits = [Exit(e["name"], order[e["after"]], float(e.get("flops", 0)), float(e.get("params_bytes", 0)),
                  float(e["accuracy"])) for e in doc["exits"]]
    calibration = None
    cal = doc.get("calibration")
    if cal:
        labels = np.asarray(cal["labels"], dtype=np.int64) if cal.get("labels") is not None else None
        confidence, predicted = {}, {}
        for scores in cal.get("exits", []):
            if labels is None:
                raise FinplanInputError("per-sample exit scores need 'labels'", file=path, field="calibration.labels")
            confidence[scores["name"]] = np.asarray(scores["confidence"], dtype=float)
            predicted[scores["name"]] = np.asarray(scores["predicted"], dtype=np.int64)
        exit_names = {e.name for e in exits}
        for i, row in enumerate(cal.get("table", [])):
            for key in list(row["thresholds"]) + list(row["exit_rates"]):
                if key not in exit_names:
                    raise FinplanInputError(f"names exit {key!r}, which the card does not have",
                                            file=path, field=f"calibration.table[{i}]")
        calibration = Calibration(labels, confidence, predicted, tuple(cal.get("table", [])))
    return ModelCard(doc["name"], doc.get("hash"), float(doc["input_bytes"]), tuple(blocks), tuple(exits), calibration, path)


def _live_set(block: dict, output_bytes: float, path, index: int) -> tuple[tuple[str, float], ...]:
    """A block's optional per-tensor ``live_set`` (schema-checked); its bytes must add up to
    ``output_bytes`` (what is charged), which a schema cannot say."""
    entries = block.get("live_set")
    if entries is None:
        return ()
    result = tuple((entry["tensor"], float(entry["bytes"])) for entry in entries)
    total = sum(size for _, size in result)
    if abs(total - output_bytes) > 1e-9 * max(1.0, output_bytes):
        raise FinplanInputError(f"adds up to {total:g} bytes, but output_bytes is {output_bytes:g}; output_bytes is the "
                                "live set's sum (what a transfer after the block carries)", file=path,
                                field=f"blocks[{index}].live_set")
    return result


def load_card_file(path: str | os.PathLike) -> ModelCard:
    """Read and validate a model card file (JSON or YAML).

    Parameters
    ----------
    path : path-like
        The card file.

    Returns
    -------
    ModelCard

    Raises
    ------
    FinplanInputError
        For a file that cannot be read or parsed, or a card ``card_from_dict`` refuses.

    Notes
    -----
    Complexity: linear in the file's size.
    """
    return card_from_dict(load_document(path, "model"), path)


# ---------------------------------------------------------------- network

def _max_utilization(doc: dict, *, file, where: str) -> float:
    """``max_utilization``, or ``capacity`` (the design notes' name for the same share of time;
    the schema bounds both to (0, 1]); default 1."""
    if "capacity" in doc and "max_utilization" in doc and doc["capacity"] != doc["max_utilization"]:
        raise FinplanInputError(f"is {doc['capacity']!r} but max_utilization is {doc['max_utilization']!r}; they "
                                "are the same limit (capacity is its other name): give one", file=file,
                                field=f"{where}.capacity")
    return float(doc.get("capacity", doc.get("max_utilization", 1.0)))


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _node_profiles(nd: dict, base: Path, *, file, where: str) -> list[tuple[str, dict]]:
    """A node's profile files (one path or a list), relative to ``base``, each read and checked."""
    raw = nd.get("profile")
    if raw is None:
        return []
    profiles = []
    for j, ref in enumerate(raw if isinstance(raw, list) else [raw]):
        pfield = f"{where}.profile" + (f"[{j}]" if isinstance(raw, list) else "")
        ppath = Path(ref) if Path(ref).is_absolute() else base / ref
        if not ppath.is_file():
            what = "is a folder; expected a profile file" if ppath.is_dir() else "not found"
            raise FinplanInputError(f"profile file {str(ppath)!r} {what}", file=file, field=pfield)
        profiles.append((str(ppath), load_profile(ppath)))
    return profiles


def network_from_dict(doc: Any, path: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None, *,
                      field_prefix: str = "") -> Network:
    """Validate a ``finplan.network/1`` document and turn it into a Network.

    Parameters
    ----------
    doc : object
        The parsed document.
    path : path-like or None, optional
        The file it came from, named in messages.
    base_dir : path-like or None, optional
        The folder profile paths are relative to (default: the network file's folder, else the
        current folder).
    field_prefix : str, optional
        Where the network sits in ``path`` (``network`` for a scenario's inline network), put
        before every field named in messages.

    Returns
    -------
    Network
        Nodes (with their profiles read) and directed links.

    Raises
    ------
    FinplanInputError
        Naming the file, the field and what was expected: whatever the shipped schema
        (finplan/schemas/network.schema.json) refuses (unknown fields, wrong types, bounds,
        non-finite numbers), then what it cannot say: duplicate names, links between unknown
        nodes, a node with neither profile nor compute, missing or mismatched profiles.

    Notes
    -----
    Complexity: linear in the document's size plus the profiles read.
    """
    validate_document(doc, "network", file=path, field_prefix=field_prefix)
    file = None if path is None else str(path)
    base = Path(base_dir) if base_dir is not None else (Path(path).parent if path is not None else Path("."))
    check_unique([nd["name"] for nd in doc["nodes"]], file=file, field=field_path(["nodes"], field_prefix))
    nodes, resolved_nodes = [], []
    for i, nd in enumerate(doc["nodes"]):
        where = field_path(["nodes", i], field_prefix)
        compute = nd.get("compute")
        profiles = _node_profiles(nd, base, file=file, where=where)
        if compute is None and not profiles:
            raise FinplanInputError("a node needs 'profile' (path) or 'compute' {ops_per_s, power_w}", file=file, field=where)
        ops, power = (None, None) if compute is None else (float(compute["ops_per_s"]), float(compute["power_w"]))
        util = _max_utilization(nd, file=file, where=where)
        resolved = dict(nd)
        if profiles:
            resolved["profile"] = [p for p, _ in profiles] if isinstance(nd["profile"], list) else profiles[0][0]
        resolved_nodes.append(resolved)
        nodes.append(Node(nd["name"], nd.get("tier", "unknown"), ops, power, tuple(profiles),
                          _optional_float(nd.get("memory_bytes")), util, resolved,
                          _optional_float(nd.get("stage_overhead_s"))))
    names = [n.name for n in nodes]
    links, pairs = [], set()
    for i, ld in enumerate(doc.get("links", [])):
        where = field_path(["links", i], field_prefix)
        src, dst = ld["from"], ld["to"]
        for key, value in (("from", src), ("to", dst)):
            if value not in names:
                raise FinplanInputError(f"unknown node {value!r} (nodes: {', '.join(names)})", file=file, field=f"{where}.{key}")
        if src == dst:
            raise FinplanInputError(f"links node {src!r} to itself; a link joins two different nodes", file=file, field=f"{where}.to")
        if (src, dst) in pairs:
            raise FinplanInputError(f"duplicate link {src} -> {dst}", file=file, field=where)
        pairs.add((src, dst))
        links.append(Link(src, dst, float(ld["bandwidth_bps"]), float(ld.get("latency_s", 0.0)),
                          float(ld["energy_j_per_bit"]), _max_utilization(ld, file=file, where=where)))
    resolved_doc = dict(doc)
    resolved_doc["nodes"] = resolved_nodes
    return Network(tuple(nodes), tuple(links), file, resolved_doc)


def load_network(path: str | os.PathLike) -> Network:
    """Read and validate a network file (JSON or YAML).

    Parameters
    ----------
    path : path-like
        The network file; profile paths in it are relative to its folder.

    Returns
    -------
    Network

    Raises
    ------
    FinplanInputError
        For a file that cannot be read or parsed, or a network ``network_from_dict`` refuses.

    Notes
    -----
    Complexity: linear in the file's size plus the profiles read.
    """
    return network_from_dict(load_document(path, "network"), path)  # validated there


# ---------------------------------------------------------------- scenario

def options_from_dict(doc: Any) -> Options:
    """A scenario's ``options`` mapping as Options.

    Parameters
    ----------
    doc : mapping or None
        {mode, first_block_at_source, strict}, already checked against the scenario schema
        (``scenario_from_dict`` does); None gives the defaults.

    Returns
    -------
    Options

    Notes
    -----
    Complexity: O(1).
    """
    if doc is None:
        return Options()
    return Options(doc.get("mode", "static"), doc.get("first_block_at_source", True), doc.get("strict", True))


def check_application(app: Application, network: Network, options: Options, *, file=None, field="applications[0]",
                      source_field: str | None = None) -> None:
    """Cross-checks between an application, its card and the network.

    Parameters
    ----------
    app : Application
        The application.
    network : Network
        The network it runs on.
    options : Options
        The scenario's options.
    file : str or None, optional
        The file named in messages.
    field : str, optional
        Prefix of the field names in messages (e.g. ``applications[2]``).
    source_field : str or None, optional
        The name of the source where it is not ``field.source`` (the CLI's shortcut passes
        ``--source``).

    Raises
    ------
    FinplanInputError
        For a source that is not a node, a profile of another model on a node without compute,
        a profile missing a block, a source that cannot run block 1 (with
        first_block_at_source, or without links), or dynamic mode without a calibration.

    Notes
    -----
    Complexity: O(N (B + H)) (every node's costs of the card are read once).
    """
    card = app.card
    source_field = f"{field}.source" if source_field is None else source_field
    if app.source not in network.names:
        raise FinplanInputError(f"source {app.source!r} is not a node of the network (nodes: {', '.join(network.names)})",
                                file=file, field=source_field)
    for node in network.nodes:
        node_block_costs(node, card, network.path)  # raises on a mismatched profile
    first = card.blocks[0]
    src = network.node(app.source)
    fits_source = src.memory_bytes is None or first.params_bytes <= src.memory_bytes
    if options.first_block_at_source and not fits_source:
        raise FinplanInputError(
            f"source {app.source!r} cannot hold {first.name} ({first.params_bytes:.0f} bytes > memory_bytes "
            f"{src.memory_bytes:.0f}) and options.first_block_at_source is true", file=file, field=source_field)
    if not fits_source and not network.successors(app.source):
        raise FinplanInputError(f"source {app.source!r} cannot run {first.name} and has no link to any other node",
                                file=file, field=source_field)
    if options.mode == "dynamic" and card.calibration is None:
        raise FinplanInputError("options.mode is dynamic but the card has no 'calibration' (exit scores or table)",
                                file=card.path, field="calibration")


def parse_duration_s(value: Any, *, file=None, field: str = "max_latency") -> float:
    """Seconds from a number or a duration text.

    Parameters
    ----------
    value : float or str
        0.005, '5ms', '500us', '5 ms', '2s', '1e-3'.
    file : str or None, optional
        The file named in messages.
    field : str, optional
        The field (or option) named in messages.

    Returns
    -------
    float
        Seconds, finite and > 0.

    Raises
    ------
    FinplanInputError
        For text that is no duration, or a duration that is not finite and > 0.

    Notes
    -----
    Complexity: O(len(value)).
    """
    if isinstance(value, bool):
        raise FinplanInputError(f"is {value!r}; expected a duration such as 5ms or 0.005", file=file, field=field)
    if isinstance(value, (int, float)):
        return finite_number(value, file=file, field=field, positive=True)
    text = str(value).strip().lower().replace(" ", "")
    scale = 1.0
    for suffix, factor in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        number = float(text)
    except ValueError:
        raise FinplanInputError(f"is {value!r}; expected a duration such as 5ms, 500us or 0.005 (seconds)",
                                file=file, field=field) from None
    if not math.isfinite(number) or number <= 0:
        raise FinplanInputError(f"is {value!r}; expected a duration > 0", file=file, field=field)
    return number * scale


def parse_fraction(value: Any, *, file=None, field: str = "min_accuracy") -> float:
    """A fraction from 0.8 or '80%'.

    Parameters
    ----------
    value : float or str
        The fraction, or a percentage text.
    file : str or None, optional
        The file named in messages.
    field : str, optional
        The field (or option) named in messages.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    FinplanInputError
        For anything else.

    Notes
    -----
    Complexity: O(len(value)).
    """
    text = str(value).strip()
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1], 0.01
    try:
        number = float(text) * scale if not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise FinplanInputError(f"is {value!r}; expected a fraction in [0, 1] such as 0.8 or 80%", file=file, field=field)
    return number


def scenario_from_dict(doc: Any, path: str | os.PathLike | None = None) -> Scenario:
    """Validate a ``finplan.scenario/1`` document and turn it into a Scenario.

    Parameters
    ----------
    doc : object
        The parsed document.
    path : path-like or None, optional
        The file it came from; network and card paths in it are relative to its folder.

    Returns
    -------
    Scenario
        The network (a path or inline), the applications (each card read once) and the options.

    Raises
    ------
    FinplanInputError
        Naming the file, the field and what was expected: missing files, duplicate application
        names, unknown fields, bad durations or fractions, and ``check_application``'s checks.

    Notes
    -----
    Complexity: linear in the documents read.
    """
    validate_document(doc, "scenario", file=path)
    file = None if path is None else str(path)
    base = Path(path).parent if path is not None else Path(".")
    net_ref = doc["network"]
    if isinstance(net_ref, str):
        npath = Path(net_ref) if Path(net_ref).is_absolute() else base / net_ref
        if not npath.is_file():
            raise FinplanInputError(f"network file {str(npath)!r} not found", file=file, field="network")
        network = load_network(npath)
    else:
        network = network_from_dict({"schema": "finplan.network/1", **net_ref}, file, base, field_prefix="network")
    options = options_from_dict(doc.get("options"))
    apps_doc = doc["applications"]
    names = [ad.get("name", f"app{i + 1}") for i, ad in enumerate(apps_doc)]
    check_unique(names, file=file, field="applications")
    cards: dict[str, ModelCard] = {}
    apps = []
    for i, (name, ad) in enumerate(zip(names, apps_doc)):
        where = f"applications[{i}]"
        model_ref = ad["model"]
        mpath = Path(model_ref) if Path(model_ref).is_absolute() else base / model_ref
        if not mpath.is_file():
            raise FinplanInputError(f"model card {str(mpath)!r} not found", file=file, field=f"{where}.model")
        key = str(mpath.resolve())
        if key not in cards:
            cards[key] = load_card_file(mpath)
        max_latency = parse_duration_s(ad["max_latency_s"], file=file, field=f"{where}.max_latency_s")
        min_acc = parse_fraction(ad["min_accuracy"], file=file, field=f"{where}.min_accuracy")
        rate = _optional_float(ad.get("rate_hz"))
        app = Application(name, cards[key], model_ref, ad["source"], max_latency, min_acc, rate)
        check_application(app, network, options, file=file, field=where)
        apps.append(app)
    return Scenario(network, tuple(apps), options, file)


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate a ``finplan.scenario/1`` file (JSON or YAML).

    Parameters
    ----------
    path : path-like
        The scenario file.

    Returns
    -------
    Scenario

    Raises
    ------
    FinplanInputError
        For a file that cannot be read or parsed, or a scenario ``scenario_from_dict`` refuses.

    Notes
    -----
    Complexity: linear in the documents read.
    """
    return scenario_from_dict(load_document(path, "scenario"), path)  # validated there


def single_application(card_path: str | os.PathLike, network_path: str | os.PathLike, source: str,
                       max_latency_s: float, min_accuracy: float, *, rate_hz: float | None = None,
                       options: Options | None = None, name: str | None = None,
                       source_field: str = "source") -> Scenario:
    """The scenario of one application given by its parts.

    What ``finplan plan --model CARD --network NET --source NODE ...`` plans.

    Parameters
    ----------
    card_path, network_path : path-like
        The model card and the network files.
    source : str
        The node where the input arrives.
    max_latency_s : float
        The latency bound.
    min_accuracy : float
        The accuracy target.
    rate_hz : float or None, optional
        Requests per second (enables utilisation limits).
    options : Options or None, optional
        Default: ``Options()``.
    name : str or None, optional
        The application's name (default: the card's).
    source_field : str, optional
        The name of the source in messages (the CLI passes ``--source``).

    Returns
    -------
    Scenario

    Raises
    ------
    FinplanInputError
        For files ``load_card_file``/``load_network`` refuse or ``check_application``'s checks.

    Notes
    -----
    Complexity: linear in the documents read.
    """
    options = options or Options()
    network = load_network(network_path)
    card = load_card_file(card_path)
    app = Application(name or card.name, card, str(card_path), source, max_latency_s, min_accuracy, rate_hz)
    check_application(app, network, options, file=None, source_field=source_field)
    return Scenario(network, (app,), options, None)
