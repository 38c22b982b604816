"""Every document finplan reads or writes has a shipped JSON Schema, and every reader goes through it.

For every schema in finplan/schemas: its own ``examples`` validate, and broken variants of them (a
field of the wrong type, a required field missing, a NaN) are refused by finplan's reader of that
document with one line naming the file and the field. Documents finplan writes (a plan, an emitted
deployment folder, the demo's network and scenario) validate against their schemas.
"""
from __future__ import annotations

import copy
import json
import math
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import tomllib

from finplan.deploy.deployment import load_deployment
from finplan.deploy.manifest import load_manifest
from finplan.errors import InputError
from finplan.exit_policy import SCORERS
from finplan.fileio import load_document
from finplan.hardware_profiles import load_profile
from finplan.partition.documents import load_card_file, load_network, load_scenario
from finplan.partition.plan import validate_plan
from finplan.validation import KINDS, schema_of, validate_document

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name[: -len(".schema.json")] for p in resources.files("finplan.schemas").iterdir()
                 if p.name.endswith(".schema.json"))


def _read_plan(path: Path) -> dict:
    """What ``finplan show`` and ``emit`` do with a plan file."""
    return validate_plan(load_document(path, "plan"), path)


def _write(tmp_path: Path, kind: str, doc) -> tuple[Path, Path]:
    """(file to name in messages, what the reader takes: the file, or the folder holding it)."""
    if kind == "manifest":
        path = tmp_path / "node" / "manifest.json"
    elif kind == "deployment":
        path = tmp_path / "deploy" / "deployment.json"
    else:
        path = tmp_path / f"{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))  # NaN is written as NaN, which a JSON reader must refuse
    return path, (path.parent if kind in ("manifest", "deployment") else path)


# finplan's reader of each kind of document, from the file (or folder) a user hands it
READERS = {
    "network": load_network, "scenario": load_scenario, "model": load_card_file, "profile": load_profile,
    "plan": _read_plan, "manifest": load_manifest, "deployment": load_deployment,
}


def _examples(kind: str) -> list[dict]:
    return schema_of(kind).get("examples", [])


def test_every_document_kind_has_a_shipped_schema_with_examples_and_a_reader():
    assert SHIPPED == sorted(KINDS) == sorted(READERS)
    assert {"network", "scenario", "model", "profile", "plan", "manifest", "deployment"} == set(KINDS)
    for kind in KINDS:
        schema = schema_of(kind)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", kind
        jsonschema.Draft202012Validator.check_schema(schema)  # a valid schema of its draft
        assert schema["title"].startswith(f"finplan.{kind}/1: "), kind
        assert _examples(kind), f"{kind}.schema.json has no examples"
    # shipped in the wheel, not only in the source tree
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.json" in package_data["finplan"]


def test_the_readme_links_every_schema():
    readme = (ROOT / "README.md").read_text()
    for kind in KINDS:
        assert f"(src/finplan/schemas/{kind}.schema.json)" in readme, kind


@pytest.mark.parametrize("kind", KINDS)
def test_each_example_validates(kind):
    for example in _examples(kind):
        assert validate_document(copy.deepcopy(example), kind, file=f"{kind}.json") == example


def _model_example_files(folder: Path) -> None:
    """The files the network and scenario examples name, made of the other schemas' examples."""
    (folder / "profiles").mkdir(exist_ok=True)
    (folder / "profiles" / "edge.profile.json").write_text(json.dumps(_examples("profile")[0]))


def test_examples_of_self_contained_documents_pass_their_readers(tmp_path):
    """Beyond the schema, the readers' own checks (unique names, links, files that exist, one
    truth between a manifest's inputs and its entries) accept the examples too."""
    _model_example_files(tmp_path)
    for kind in ("network", "model", "profile", "plan", "manifest"):
        for i, example in enumerate(_examples(kind)):
            folder = tmp_path / f"{kind}{i}"
            folder.mkdir()
            _model_example_files(folder)
            _, target = _write(folder, kind, example)
            READERS[kind](target)
    network = load_network(tmp_path / "network0" / "network.json")
    assert [n.name for n in network.nodes] == ["device", "edge"] and network.nodes[1].max_utilization == 0.8
    manifest = load_manifest(tmp_path / "manifest0" / "node")
    assert manifest.stages[0].next.node == "cloud" and manifest.stages[0].exits[0].threshold == 0.8


def _first_number(value, path=()):
    """The path to the first number (not a bool) in a document, depth first."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if key == "schema":
            continue
        found = _first_number(item, path + (key,))
        if found is not None:
            return found
    return None


def _dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _wrong_type(value):
    """A value of another JSON type than ``value``."""
    if isinstance(value, str):
        return 3
    if isinstance(value, (list, dict, bool)):
        return "x"
    return [value]


def _variants(kind: str):
    """(label, broken document, the field the message must name, a fragment of what it says)."""
    example = _examples(kind)[0]
    schema = schema_of(kind)
    # a schema whose body is one of its $defs (the network: a scenario refers to it inline)
    body = schema["$defs"][kind] if schema.get("$ref") == f"#/$defs/{kind}" else schema
    required = [name for name in schema.get("required", []) + body.get("required", []) if name != "schema"]
    name = required[0]
    wrong = copy.deepcopy(example)
    wrong[name] = _wrong_type(example[name])
    yield "wrong type", wrong, name, "expected"
    missing = copy.deepcopy(example)
    del missing[name]
    yield "missing", missing, name, "missing"
    path = _first_number(example)
    assert path is not None, f"{kind}'s first example has no number to break"
    nan = copy.deepcopy(example)
    holder = nan
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = math.nan
    yield "NaN", nan, _dotted(path), "expected a finite number"


@pytest.mark.parametrize("kind", KINDS)
def test_broken_variants_are_refused_by_the_reader_in_one_line(tmp_path, kind):
    for label, doc, field, fragment in _variants(kind):
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        path, target = _write(folder, kind, doc)
        with pytest.raises(InputError) as raised:
            READERS[kind](target)
        message = str(raised.value)
        assert "\n" not in message, message
        assert message.startswith(f"{path}: {field}: "), (label, message)
        assert raised.value.field == field and fragment in message, (label, message)


# ---------------------------------------------------------------- what the schemas say, in finplan's words

def _refused(kind: str, doc: dict, tmp_path: Path) -> str:
    path, target = _write(tmp_path, kind, doc)
    with pytest.raises(InputError) as raised:
        READERS[kind](target)
    return str(raised.value).removeprefix(f"{path}: ")


def _edited(kind: str, change, index: int = 0) -> dict:
    doc = copy.deepcopy(_examples(kind)[index])
    change(doc)
    return doc


@pytest.mark.parametrize("kind, change, expected", [
    ("scenario", lambda d: d["applications"][0].update(rate=5),
     ("applications[0].rate: unknown field 'rate'; expected one of name, model, source, max_latency_s, min_accuracy, "
      "rate_hz (or description, x-... for your own notes)")),
    ("scenario", lambda d: d["options"].update(mode="fast"), "options.mode: is 'fast'; expected one of 'static', 'dynamic'"),
    ("scenario", lambda d: d.update(network=7), "network: is 7; expected a string or a mapping"),
    ("scenario", lambda d: d["applications"][1].update(min_accuracy=1.5),
     "applications[1].min_accuracy: is 1.5; expected a number <= 1"),
    ("network", lambda d: d["nodes"][0]["compute"].pop("power_w"), "nodes[0].compute.power_w: missing; expected a number"),
    ("network", lambda d: d["nodes"][1].update(profile=[]), "nodes[1].profile: has 0 entries; expected at least 1"),
    ("network", lambda d: d["links"][0].update(latency_s=-1), "links[0].latency_s: is -1; expected a number >= 0"),
    ("manifest", lambda d: d.pop("inputs"), "inputs: missing; expected inputs (or input)"),
    ("manifest", lambda d: d["stages"][0]["exits"][0].update(policy="entropy"),
     "stages[0].exits[0].policy: is 'entropy'; expected one of 'max_softmax', 'max_probability'"),
    ("manifest", lambda d: d["session"].update(intra_op_threads=0), "session.intra_op_threads: is 0; expected an integer >= 1"),
    ("manifest", lambda d: d["stages"][0].update(sha256="abc"),
     "stages[0].sha256: is 'abc'; expected text matching ^[0-9a-f]{64}$"),
    ("deployment", lambda d: d.pop("sha256"),
     "sha256: missing; expected a mapping; re-run finplan emit (a deployment folder is emitted, not edited)"),
    ("model", lambda d: d["blocks"][0].update(params=3),
     ("blocks[0].params: unknown field 'params'; expected one of name, flops, output_bytes, params_bytes, live_set "
      "(or description, x-... for your own notes)")),
])
def test_schema_violations_read_as_one_line_naming_the_field(tmp_path, kind, change, expected):
    assert _refused(kind, _edited(kind, change), tmp_path) == expected


def test_an_inline_network_is_checked_by_the_network_schema_under_its_own_path(tmp_path):
    doc = _edited("scenario", lambda d: d["network"]["nodes"][0]["compute"].update(ops_per_s=0), index=1)
    assert _refused("scenario", doc, tmp_path) == "network.nodes[0].compute.ops_per_s: is 0; expected a number > 0"


def test_an_inline_network_is_named_under_its_own_path_by_the_checks_beyond_the_schema(tmp_path):
    doc = _edited("scenario", lambda d: d["network"]["nodes"].append(dict(d["network"]["nodes"][0])), index=1)
    assert _refused("scenario", doc, tmp_path) == "network.nodes[1].name: duplicate name 'device'; names must be unique"
    links = [{"from": "device", "to": "moon", "bandwidth_bps": 1e9, "energy_j_per_bit": 0}]
    doc = _edited("scenario", lambda d: d["network"].update(links=links), index=1)
    assert _refused("scenario", doc, tmp_path) == "network.links[0].to: unknown node 'moon' (nodes: device)"


def test_the_manifest_schema_knows_the_exit_policies_finplan_scores():
    stage = schema_of("manifest")["$defs"]["stage"]
    assert sorted(stage["properties"]["exits"]["items"]["properties"]["policy"]["enum"]) == sorted(SCORERS)


# ---------------------------------------------------------------- what finplan writes

def test_a_plan_finplan_writes_validates_and_carries_a_valid_network(tmp_path, capsys):
    from finplan.cli.main import main

    out = tmp_path / "plan.json"
    assert main(["plan", str(ROOT / "examples" / "paper" / "scenario.yaml"), "-o", str(out)]) == 0
    capsys.readouterr()
    plan = json.loads(out.read_text())
    validate_document(plan, "plan", file=out)
    validate_document(plan["network"], "network", file=out)


def test_an_emitted_deployment_validates_file_by_file(tmp_path):
    import onnx

    sys.path.insert(0, str(ROOT / "tests" / "deploy"))
    try:
        from helpers import plan_doc, write_json
    finally:
        sys.path.remove(str(ROOT / "tests" / "deploy"))
    from onnx_builders import tiny_branchy_model

    from finplan.contract import model_hash
    from finplan.deploy.emit import emit

    model = tiny_branchy_model()
    onnx.save(model, tmp_path / "tiny.onnx")
    plan = write_json(tmp_path / "plan.json", plan_doc(["device", "edge", "cloud"], model_hash=model_hash(model),
                                                        thresholds={"exit1": 0.5}))
    folder = tmp_path / "deploy"
    emit(plan, tmp_path / "tiny.onnx", folder)
    index = validate_document(json.loads((folder / "deployment.json").read_text()), "deployment")
    assert index["nodes"] == ["device", "edge", "cloud"]
    for node in index["nodes"]:
        validate_document(json.loads((folder / node / "manifest.json").read_text()), "manifest")
    validate_document(json.loads((folder / "network.json").read_text()), "network")
    validate_document(json.loads((folder / "plan.json").read_text()), "plan")
    assert load_deployment(folder).nodes == index["nodes"]


def test_the_demo_writes_a_valid_network_and_scenario(tmp_path):
    from finplan.demo import _write_network_and_scenario

    profile = tmp_path / "this-machine.profile.json"
    profile.write_text(json.dumps(_examples("profile")[0]))
    _, scenario = _write_network_and_scenario(tmp_path, profile, tmp_path / "card.json")
    validate_document(json.loads(scenario.read_text()), "scenario")
    validate_document(json.loads((tmp_path / "network.json").read_text()), "network")
