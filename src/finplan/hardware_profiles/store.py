"""Load, validate and save hardware profiles and model cards."""
from __future__ import annotations

import os
from typing import Any

from finplan.errors import FinplanInputError
from finplan.fileio import atomic_write_json, load_document
from finplan.validation import check_unique, schema_of, validate_document


def schema_document(kind: str) -> dict:
    """The JSON schema of a finplan document kind ("profile", "model", "plan"), as shipped in
    finplan/schemas; a copy, so callers cannot change the cached one."""
    return schema_of(kind)


def _check_parts_cost(doc: dict, path) -> None:
    """Every block and exit head takes time and energy: a part of 0 s or 0 J would be placed
    for free (the schema allows 0 for statistics such as stdev, so the part's own are checked here)."""
    for group in ("blocks", "exits"):
        for index, part in enumerate(doc[group]):
            where = f"{group}[{index}]"
            if float(part["latency_s"]["p50"]) <= 0:
                raise FinplanInputError(f"is {part['latency_s']['p50']}; expected the part's median latency in seconds "
                                        "(> 0): every part takes time", file=path, field=f"{where}.latency_s.p50")
            if float(part["energy_j"]["value"]) <= 0:
                raise FinplanInputError(f"is {part['energy_j']['value']}; expected the part's joules per run (> 0): a "
                                        "part that takes time costs energy", file=path, field=f"{where}.energy_j.value")


def validate_profile(doc: Any, path: str | os.PathLike | None = None) -> dict:
    """Check a profile document; return it unchanged. Raises FinplanInputError."""
    validate_document(doc, "profile", file=path)
    check_unique([b["name"] for b in doc["blocks"]], file=path, field="blocks")
    check_unique([e["name"] for e in doc["exits"]], file=path, field="exits")
    _check_parts_cost(doc, path)
    block_names = {b["name"] for b in doc["blocks"]}
    for index, exit_ in enumerate(doc["exits"]):
        if exit_["after"] not in block_names:
            raise FinplanInputError(
                f"names block {exit_['after']!r}, which the profile does not have (blocks: {', '.join(sorted(block_names))})",
                file=path, field=f"exits[{index}].after")
    return doc


def validate_card(doc: Any, path: str | os.PathLike | None = None) -> dict:
    """Check a model card document; return it unchanged. Raises FinplanInputError (also for a
    field finplan does not know: the schema lists every field, description and x-... aside)."""
    validate_document(doc, "model", file=path)
    check_unique([b["name"] for b in doc["blocks"]], file=path, field="blocks")
    check_unique([e["name"] for e in doc["exits"]], file=path, field="exits")
    order = {b["name"]: i for i, b in enumerate(doc["blocks"])}
    last = -1
    for index, exit_ in enumerate(doc["exits"]):
        if exit_["after"] not in order:
            raise FinplanInputError(
                f"names block {exit_['after']!r}, which the card does not have (blocks: {', '.join(order)})",
                file=path, field=f"exits[{index}].after")
        if order[exit_["after"]] < last:
            raise FinplanInputError("exits must be listed in block order", file=path, field=f"exits[{index}].after")
        last = order[exit_["after"]]
    calibration = doc.get("calibration")
    if calibration and "exits" in calibration:
        names = [e["name"] for e in doc["exits"]]
        labels = calibration.get("labels")
        for index, scores in enumerate(calibration["exits"]):
            if scores["name"] not in names:
                raise FinplanInputError(f"names exit {scores['name']!r}, which the card does not have",
                                        file=path, field=f"calibration.exits[{index}].name")
            n = len(scores["confidence"])
            if len(scores["predicted"]) != n or (labels is not None and len(labels) != n):
                raise FinplanInputError("confidence, predicted and labels must have one entry per sample",
                                        file=path, field=f"calibration.exits[{index}]")
    return doc


def validate_plan_schema(doc: Any, path: str | os.PathLike | None = None) -> dict:
    """Check a plan document against the shipped plan schema (finite numbers included); return
    it. For readers outside the planner (the deployment side), which must not import it."""
    validate_document(doc, "plan", file=path)
    return doc


def load_profile(path: str | os.PathLike) -> dict:
    return validate_profile(load_document(path, "profile"), path)


def load_card(path: str | os.PathLike) -> dict:
    return validate_card(load_document(path, "model"), path)


def save_profile(doc: dict, path: str | os.PathLike) -> None:
    validate_profile(doc, path)
    atomic_write_json(path, doc)


def save_card(doc: dict, path: str | os.PathLike) -> None:
    validate_card(doc, path)
    atomic_write_json(path, doc)


def card_from_profile(profile: dict, *, input_bytes: float, accuracies: dict[str, float],
                      calibration: dict | None = None) -> dict:
    """The device-independent part of a profile, as a model card."""
    card = {
        "schema": "finplan.model/1",
        "name": profile["model"]["name"],
        "hash": profile["model"]["hash"],
        "input_bytes": input_bytes,
        "blocks": [
            {"name": b["name"], "flops": b["flops"], "output_bytes": b["output_bytes"], "params_bytes": b["params_bytes"],
             **({"live_set": [{"tensor": t["tensor"], "bytes": t["bytes"]} for t in b["live_set"]]}
                if b.get("live_set") else {})}
            for b in profile["blocks"]
        ],
        "exits": [
            {"name": e["name"], "after": e["after"], "flops": e["flops"], "params_bytes": e["params_bytes"],
             "accuracy": accuracies[e["name"]]}
            for e in profile["exits"]
        ],
    }
    if calibration is not None:
        card["calibration"] = calibration
    return card
