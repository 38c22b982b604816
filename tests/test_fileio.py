"""Documents on disk: schema versions, NaN, atomic writes."""
from __future__ import annotations

import os

import pytest

from finplan.errors import FinplanInputError
from finplan.fileio import atomic_write_json, finite_number, load_document, require_writable
from finplan.hardware_profiles import load_card, validate_card


def test_unknown_major_is_refused(tmp_path):
    path = tmp_path / "card.json"
    path.write_text('{"schema": "finplan.model/7"}')
    with pytest.raises(FinplanInputError, match=r"card.json: schema: 'finplan.model/7' is an unknown version"):
        load_document(path, "model")


def test_wrong_kind_and_missing_schema(tmp_path):
    path = tmp_path / "n.yaml"
    path.write_text("schema: finplan.plan/1\n")
    with pytest.raises(FinplanInputError, match="expected a 'finplan.network/<major>' document"):
        load_document(path, "network")
    path.write_text("nodes: []\n")
    with pytest.raises(FinplanInputError, match="schema: missing"):
        load_document(path, "network")


def test_unparsable(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(FinplanInputError, match="not valid JSON"):
        load_document(path, "model")


CARD = """
schema: finplan.model/1
name: tiny
input_bytes: 64
blocks: [{name: b1, flops: 10, output_bytes: 8}, {name: b2, flops: 20, output_bytes: 4}]
exits: [{name: e1, after: b1, accuracy: 0.5}, {name: e2, after: b2, accuracy: 0.9}]
"""


def test_card_yaml_loads_and_nan_is_refused(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD)
    assert load_card(path)["blocks"][1]["flops"] == 20
    path.write_text(CARD.replace("flops: 20", "flops: .nan"))
    with pytest.raises(FinplanInputError, match=r"blocks\[1\]\.flops: is nan; expected a finite number"):
        load_card(path)


def test_card_semantic_errors(tmp_path):
    import yaml

    doc = yaml.safe_load(CARD)
    doc["exits"][0]["after"] = "b9"
    with pytest.raises(FinplanInputError, match=r"exits\[0\]\.after: names block 'b9'"):
        validate_card(doc, "c.yaml")
    doc = yaml.safe_load(CARD)
    doc["blocks"][1]["name"] = "b1"
    with pytest.raises(FinplanInputError, match="duplicate"):
        validate_card(doc, "c.yaml")
    doc = yaml.safe_load(CARD)
    doc["blocks"][0]["flops"] = -1
    with pytest.raises(FinplanInputError, match=r"blocks\[0\]\.flops"):
        validate_card(doc, "c.yaml")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert os.listdir(tmp_path) == []
    atomic_write_json(target, {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n'
    with pytest.raises(FinplanInputError, match="folder does not exist"):
        atomic_write_json(tmp_path / "no" / "out.json", {})
    with pytest.raises(FinplanInputError, match="folder does not exist"):
        require_writable(tmp_path / "no" / "out.json")


def test_finite_number():
    assert finite_number(3, file="f", field="x", positive=True) == 3.0
    for bad, kw in ((0, {"positive": True}), (-1, {"nonnegative": True}), (float("nan"), {}), ("1", {}), (True, {})):
        with pytest.raises(FinplanInputError):
            finite_number(bad, file="f", field="x", **kw)
