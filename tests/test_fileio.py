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


@pytest.mark.parametrize("text, value", [
    ("1e9", 1e9), ("1E-3", 1e-3), (".5e3", 500.0), ("-2e+3", -2000.0), ("+1e9", 1e9), ("-.5", -0.5),
    ("6.7e-8", 6.7e-8), ("1.0e+9", 1e9), ("0.8", 0.8), ("1_000.5", 1000.5), ("12", 12),
])
def test_yaml_reads_yaml_1_2_floats_as_numbers(tmp_path, text, value):
    path = tmp_path / "n.yaml"
    path.write_text(f"schema: finplan.network/1\nx: {text}\n")
    got = load_document(path, "network")["x"]
    assert got == value and not isinstance(got, (str, bool))


@pytest.mark.parametrize("text", ["5ms", "1e", "e9", "1.2.3", "1e9s", "phone-a"])
def test_yaml_strings_stay_strings(tmp_path, text):
    path = tmp_path / "n.yaml"
    path.write_text(f"schema: finplan.network/1\nx: {text}\n")
    assert load_document(path, "network")["x"] == text


def test_a_network_with_1e9_loads(tmp_path):
    from finplan.partition.documents import load_network

    path = tmp_path / "net.yaml"
    path.write_text("schema: finplan.network/1\n"
                    "nodes:\n  - {name: device, compute: {ops_per_s: 1e9, power_w: 5}, memory_bytes: 2E6}\n"
                    "  - {name: cloud, compute: {ops_per_s: 1.5e11, power_w: 200}}\n"
                    "links:\n  - {from: device, to: cloud, bandwidth_bps: 1e8, latency_s: 1e-3, "
                    "energy_j_per_bit: 4e-8}\n")
    network = load_network(path)
    assert network.nodes[0].ops_per_s == 1e9 and network.nodes[0].memory_bytes == 2e6
    assert network.links[0].bandwidth_bps == 1e8 and network.links[0].latency_s == 1e-3


@pytest.mark.parametrize("edit, field, known", [
    (lambda d: d["blocks"][0].update(params=1000), r"blocks\[0\]\.params", "params_bytes"),
    (lambda d: d.update(input_size=4), "input_size", "input_bytes"),
    (lambda d: d["exits"][1].update(acc=0.9), r"exits\[1\]\.acc", "accuracy"),
    (lambda d: d.update(calibration={"score": "max_softmax", "tabel": []}), r"calibration\.tabel", "table"),
    (lambda d: d.update(calibration={"table": [{"thresholds": {}, "exit_rates": {"e2": 1.0}, "accuracy": 0.9,
                                                "rates": {}}]}), r"calibration\.table\[0\]\.rates", "exit_rates"),
])
def test_unknown_card_fields_are_refused(tmp_path, edit, field, known):
    import yaml

    doc = yaml.safe_load(CARD)
    edit(doc)
    with pytest.raises(FinplanInputError, match=rf"c\.yaml: {field}: unknown field .*expected one of .*{known}"):
        validate_card(doc, "c.yaml")


def test_card_notes_are_allowed(tmp_path):
    import yaml

    doc = yaml.safe_load(CARD)
    doc["description"] = "a tiny card"
    doc["x-origin"] = {"by": "hand"}
    doc["blocks"][0]["x-note"] = "the stem"
    doc["exits"][0]["description"] = "early"
    assert validate_card(doc, "c.yaml") is doc


def test_the_shipped_and_profiler_written_cards_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cards = sorted((root / "examples" / "paper").glob("b-*.json")) + [
        root / "examples" / "profiles" / "b-alexnet-digits.card.json"]
    assert len(cards) >= 6
    for path in cards:
        assert load_card(path)["blocks"]
