"""One validation layer: documents checked against their shipped JSON Schema, scalars checked
against their bounds, and every failure turned into finplan's one line (file, field, what was
expected).

Every document finplan reads or writes has a schema in ``finplan/schemas/<kind>.schema.json``;
``read_document`` parses a file (JSON or YAML, through fileio's bounded readers), and
``validate_document`` checks a parsed one. Hand-written checks remain only for what a schema
cannot say (unique names, links between existing nodes, files that exist, hashes that match);
``check_unique`` is the shared one for names. Library functions take the name to print from
their caller (``check_scalar(x, "--gamma", ...)`` from the CLI, ``field="scenario.gamma"`` from a
file reader), as scikit-learn's ``check_scalar`` does; none writes a command-line flag itself.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

from finplan.errors import InputError
from finplan.fileio import check_schema, parse_text, read_input_text, reject_non_finite

# Every kind with a shipped schema; the schema file's name is "<kind>.schema.json" and the
# document's "schema" field is "finplan.<kind>/<major>".
KINDS = ("network", "scenario", "model", "profile", "plan", "manifest", "deployment")


@cache
def _schema(kind: str) -> dict:
    try:
        text = resources.files("finplan.schemas").joinpath(f"{kind}.schema.json").read_text()
    except FileNotFoundError:
        raise ValueError(f"no shipped schema for document kind {kind!r}") from None
    return json.loads(text)


@cache
def _registry() -> referencing.Registry:
    """Every shipped schema under its file name, so that one schema refers to another's parts
    (a scenario's inline network is ``network.schema.json#/$defs/network``) instead of
    repeating them."""
    return referencing.Registry().with_resources(
        (f"{kind}.schema.json", DRAFT202012.create_resource(_schema(kind))) for kind in KINDS)


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema(kind), registry=_registry())


def schema_of(kind: str) -> dict:
    """The JSON Schema of a document kind, as shipped; a copy, so callers cannot change the cached one."""
    return json.loads(json.dumps(_schema(kind)))


def field_path(parts: Iterable[Any], prefix: str = "") -> str:
    """``blocks[2].flops`` from the parts ``("blocks", 2, "flops")``, after ``prefix`` if given."""
    text = prefix
    for item in parts:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text


_KINDS = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true or false",
          "null": "null", "array": "a list", "object": "a mapping"}


def _expected_type(schema: dict) -> str | None:
    kinds = schema.get("type")
    if kinds is None:
        return None
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return " or ".join(_KINDS.get(k, k) for k in kinds)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_message(error: jsonschema.ValidationError, where: str) -> tuple[str, str]:
    """(field, message) of one schema violation in the user's terms: a missing field is named with
    what it should hold, a wrong type, value or bound says what it is and what was expected, an
    unknown field is named with the fields allowed there."""
    kind, value, schema = error.validator, error.validator_value, error.schema
    if kind == "required" and isinstance(error.instance, dict):
        name = next((n for n in value if n not in error.instance), None)
        if name is not None:
            expected = _expected_type(schema.get("properties", {}).get(name, {}))
            return field_path([name], where), "missing" + (f"; expected {expected}" if expected else "")
    if kind == "type":
        return where, f"is {_shown(error.instance)}; expected {_expected_type(schema)}"
    if kind == "enum":
        return where, f"is {_shown(error.instance)}; expected one of {', '.join(map(repr, value))}"
    if kind == "const":
        return where, f"is {_shown(error.instance)}; expected {value!r}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        what = "an integer" if schema.get("type") in ("integer", ["integer"], ["integer", "null"]) else "a number"
        return where, f"is {_shown(error.instance)}; expected {what} {bounds[kind]} {value}"
    if kind == "minItems":
        return where, f"has {len(error.instance)} entries; expected at least {value}"
    if kind == "maxItems":
        return where, f"has {len(error.instance)} entries; expected at most {value}"
    if kind == "minLength" and value == 1:
        return where, f"is {_shown(error.instance)}; expected a non-empty string"
    if kind == "minLength":
        return where, f"is {_shown(error.instance)}; expected text of at least {value} characters"
    if kind == "pattern":
        return where, f"is {_shown(error.instance)}; expected text matching {value}"
    if kind == "additionalProperties" and isinstance(error.instance, dict) and value is False:
        declared = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = [k for k in error.instance if k not in declared and not any(re.search(p, str(k)) for p in patterns)]
        if extra:
            known = [k for k in declared if k != "description"]
            notes = " (or description, x-... for your own notes)" if "^x-" in patterns else ""
            return (field_path([extra[0]], where),
                    f"unknown field {extra[0]!r}; expected one of {', '.join(known)}{notes}")
    if kind in ("anyOf", "oneOf"):
        alternatives = [s.get("required") for s in value]
        if all(isinstance(names, list) and len(names) == 1 for names in alternatives):
            first, *others = [names[0] for names in alternatives]
            return field_path([first], where), f"missing; expected {first} (or {' or '.join(others)})"
        kinds = [k for sub in error.context if sub.validator == "type" and not sub.relative_path
                 for k in ([sub.validator_value] if isinstance(sub.validator_value, str) else sub.validator_value)]
        if kinds:
            return where, f"is {_shown(error.instance)}; expected {' or '.join(dict.fromkeys(_KINDS.get(k, k) for k in kinds))}"
    return where, error.message


def validate_document(doc: Any, kind: str, *, file: str | os.PathLike | None = None,
                      majors: tuple[int, ...] = (1,), hint: str | None = None, field_prefix: str = "") -> dict:
    """Check a parsed document against the shipped schema of ``kind``; return it unchanged.

    Parameters
    ----------
    doc : object
        The parsed document.
    kind : str
        One of ``KINDS`` (its ``schema`` field must read ``finplan.<kind>/<major>``).
    file : path-like or None
        The file it came from, named in the message.
    majors : tuple of int
        The major versions this finplan reads.
    hint : str or None
        What to do about any violation, appended to the message after "; " (for a file finplan
        wrote: "re-run finplan emit").
    field_prefix : str
        Where the document sits inside ``file`` (``network`` for a scenario's inline network),
        put before the field named in a schema violation.

    Returns
    -------
    dict
        ``doc`` itself.

    Raises
    ------
    InputError
        For the first violation: not a mapping, another kind or version, a NaN or infinity
        anywhere (a "number" schema lets them through), then the schema's best-matching error.

    Notes
    -----
    Complexity: linear in the document's size.
    """
    try:
        check_schema(doc, kind, majors, file)
        reject_non_finite(doc, file, field_prefix)
        error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
        if error is not None:
            field, message = schema_message(error, field_path(error.absolute_path, field_prefix))
            raise InputError(message, file=file, field=field or "(document)")
    except InputError as exc:
        if hint is None:
            raise
        raise InputError(f"{exc.detail}; {hint}", file=exc.file, field=exc.field) from None
    return doc


def read_document(path: str | os.PathLike, kind: str, *, majors: tuple[int, ...] = (1,),
                  hint: str | None = None) -> dict:
    """Read a JSON or YAML file (bounded, one-line parse errors) and validate it as ``kind``.

    Parameters
    ----------
    path : path-like
        The file; ``.yaml``/``.yml`` is read as YAML, anything else as JSON.
    kind, majors, hint
        As for ``validate_document``.

    Returns
    -------
    dict
        The parsed, validated document.

    Raises
    ------
    InputError
        A missing, oversized or unparsable file, or any violation ``validate_document`` reports.

    Notes
    -----
    Complexity: linear in the file's size.
    """
    doc = parse_text(read_input_text(path), path)
    return validate_document(doc, kind, file=path, majors=majors, hint=hint)


def check_scalar(value: Any, name: str, target_type: type | tuple = numbers.Real, *,
                 min_val: float | None = None, max_val: float | None = None,
                 include_boundaries: str = "both", file: str | os.PathLike | None = None):
    """Check one scalar: its type, finiteness and bounds; return it unchanged.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        What to call it in the message, given by the caller (``--gamma`` from the CLI,
        ``scenario.gamma`` from a file reader).
    target_type : type or tuple of types
        ``numbers.Real`` (default), ``numbers.Integral``, ``int``, ``float``, ...; a bool is never
        a number here.
    min_val, max_val : float or None
        Bounds; ``include_boundaries`` ("both", "left", "right", "neither") says which are allowed.
    file : path-like or None
        The file the value came from, if any.

    Returns
    -------
    object
        ``value`` itself.

    Raises
    ------
    InputError
        Naming ``file`` and ``name``, what the value is and what was expected.

    Notes
    -----
    Complexity: constant.
    """
    if include_boundaries not in ("both", "left", "right", "neither"):
        raise ValueError(f"include_boundaries is {include_boundaries!r}; expected both, left, right or neither")
    integral = target_type in (int, numbers.Integral) or (isinstance(target_type, tuple)
                                                         and all(t in (int, numbers.Integral) for t in target_type))
    what = "an integer" if integral else "a number"
    if isinstance(value, bool) or not isinstance(value, target_type):
        raise InputError(f"is {_shown(value)}; expected {what}", file=file, field=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"is {value}; expected a finite number", file=file, field=name)
    low_ok = include_boundaries in ("both", "left")
    high_ok = include_boundaries in ("both", "right")
    too_low = min_val is not None and (value < min_val if low_ok else value <= min_val)
    too_high = max_val is not None and (value > max_val if high_ok else value >= max_val)
    if too_low or too_high:
        parts = []
        if min_val is not None:
            parts.append(f"{'>=' if low_ok else '>'} {min_val:g}")
        if max_val is not None:
            parts.append(f"{'<=' if high_ok else '<'} {max_val:g}")
        raise InputError(f"is {value}; expected {what} {' and '.join(parts)}", file=file, field=name)
    return value


def check_unique(names: Iterable[Any], *, file: str | os.PathLike | None, field: str, key: str = "name") -> None:
    """Refuse a repeated name in a list, naming the second entry (``field[i].key``).

    Raises
    ------
    InputError
        ``<file>: <field>[i].<key>: duplicate name 'x'; names must be unique``.
    """
    seen = set()
    for index, name in enumerate(names):
        if name in seen:
            raise InputError(f"duplicate name {name!r}; names must be unique", file=file,
                             field=f"{field}[{index}].{key}" if key else f"{field}[{index}]")
        seen.add(name)
