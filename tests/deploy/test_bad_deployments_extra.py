"""Deployments and inputs that must be refused as bad input (one line, exit code 2, nothing
half-written) rather than crash inside onnxruntime, run silently or report a misleading failure:
edited manifests and index files, inputs of another dtype, plans for another model's sizes or
for links the network lacks, a meaningless --atol."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import TINY_BLOCKS, assert_bad_input, cli, network_doc, plan_doc, write_json
from onnx_builders import tiny_branchy_model

from finplan.contract import model_hash
from finplan.deploy.emit import emit
from finplan.deploy.manifest import sha256_file
from finplan.errors import FinplanInputError


def edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


# --------------------------------------------------------------------------- 1. tensor specs vs parts

@pytest.mark.parametrize("field, value, fragments", [
    ("shape", ["batch", 16, 4, 4], ['stages[0].inputs[0].shape', '["batch", 16, 4, 4]', '["batch", 4, 4, 4]']),
    ("dtype", "float16", ["stages[0].inputs[0].dtype", "'float16'", "float32"]),
])
def test_a_manifest_tensor_spec_the_part_does_not_declare_is_refused(capsys, copy_of, inputs, field, value, fragments):
    folder = copy_of()
    path = folder / "cloud" / "manifest.json"
    # what the node receives too (inputs, its entry's tensors): they are the first stage's input
    edit_json(path, lambda m: [spec.__setitem__(field, value)
                               for spec in (m["stages"][0]["inputs"][0], m["inputs"][0], m["entries"][0]["tensors"][0])])
    code, out, err = cli(capsys, "run", folder, "--data", inputs[2])
    assert_bad_input(code, out, err, "cloud/manifest.json", *fragments)
    # a node loaded on its own (what the Ray layer does per node) refuses it too, before any run
    from finplan.deploy.node_runtime import NodeRuntime

    with pytest.raises(FinplanInputError) as raised:
        NodeRuntime(folder / "cloud")
    assert all(f in str(raised.value) for f in fragments), str(raised.value)


def test_a_manifest_output_spec_the_part_does_not_declare_is_refused(copy_of):
    from finplan.deploy.node_runtime import NodeRuntime

    folder = copy_of()
    # the tensor handed on too (next.tensors), which the manifest checks against the stage's outputs
    edit_json(folder / "edge" / "manifest.json", lambda m: [spec.__setitem__("shape", ["batch", 4, 4]) for spec in
                                                            (m["stages"][0]["outputs"][0], m["stages"][0]["next"]["tensors"][0])])
    with pytest.raises(FinplanInputError, match=r"stages\[0\]\.outputs\[0\]\.shape.*declares 'block2'"):
        NodeRuntime(folder / "edge")


def test_a_manifest_input_that_is_not_its_first_stage_input_is_refused(copy_of):
    from finplan.deploy.manifest import load_manifest

    folder = copy_of()
    edit_json(folder / "edge" / "manifest.json", lambda m: m["inputs"][0].__setitem__("shape", ["batch", 4, 4, 5]))
    with pytest.raises(FinplanInputError, match=r"edge/manifest\.json: inputs: .*first entry takes block1"):
        load_manifest(folder / "edge")


# --------------------------------------------------------------------------- 4. files tied to deployment.json

def test_emit_records_the_sha256_of_every_file_a_runtime_reads(deployments):
    folder = deployments["three-dynamic"][0]
    recorded = json.loads((folder / "deployment.json").read_text())["sha256"]
    assert {"plan.json", "network.json", "device/manifest.json", "edge/manifest.json", "cloud/manifest.json"} <= set(recorded)
    assert all(sha256_file(folder / rel) == digest for rel, digest in recorded.items())


@pytest.mark.parametrize("rel, change", [
    ("device/manifest.json", lambda m: m["stages"][0]["exits"][0].__setitem__("threshold", 0.01)),
    ("plan.json", lambda p: p["applications"][0]["model"].__setitem__("hash", "sha256:" + "2" * 64)),
    ("network.json", lambda n: n["links"][0].__setitem__("bandwidth_bps", 1.0)),
])
def test_a_file_edited_after_emit_is_refused(capsys, copy_of, inputs, tiny, rel, change):
    folder = copy_of()
    edit_json(folder / rel, change)
    for argv in (("run", folder, "--data", inputs[2]), ("verify", folder, "--model", tiny[0], "--data", inputs[2])):
        code, out, err = cli(capsys, *argv)
        assert_bad_input(code, out, err, f"{folder / rel}: ", "altered", "re-run finplan emit")


def test_a_deployment_without_recorded_hashes_is_refused(capsys, copy_of, inputs):
    folder = copy_of()
    edit_json(folder / "deployment.json", lambda d: d.pop("sha256"))
    code, out, err = cli(capsys, "run", folder, "--data", inputs[2])
    assert_bad_input(code, out, err, "deployment.json: sha256", "re-run finplan emit")


@pytest.mark.parametrize("change, field", [
    (lambda d: d["active_exits"][0].__setitem__("threshold", 0.01), "active_exits"),
    (lambda d: d["inputs"][0].__setitem__("shape", ["batch", 1, 8, 9]), "inputs"),
    # the fields that repeat plan.json: blamed on deployment.json, not on a link the plan never used
    (lambda d: d.__setitem__("source", "edge"), "source"),
    (lambda d: d.__setitem__("final_exit", "exit1"), "final_exit"),
    (lambda d: d.__setitem__("mode", "static"), "mode"),
    (lambda d: d.__setitem__("nodes", list(reversed(d["nodes"]))), "nodes"),
])
def test_index_fields_that_disagree_with_the_manifests_are_refused(capsys, copy_of, inputs, change, field):
    folder = copy_of()
    edit_json(folder / "deployment.json", change)
    code, out, err = cli(capsys, "run", folder, "--data", inputs[2])
    assert_bad_input(code, out, err, f"deployment.json: {field}: ", "re-run finplan emit")


# --------------------------------------------------------------------------- 2. input dtypes

@pytest.fixture(scope="module")
def half_deployment(tmp_path_factory):
    """The tiny model with a float16 input (cast to float32 inside block 1), emitted on one node."""
    work = tmp_path_factory.mktemp("half")
    model = tiny_branchy_model()
    for node in model.graph.node:
        node.input[:] = ["x32" if name == "x" else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT, name="x/Cast"))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    path = work / "half.onnx"
    onnx.save(model, path)
    plan = write_json(work / "half.plan.json", plan_doc(["device"] * 3, model_hash=model_hash(model)))
    emit(plan, path, work / "deploy")
    return work / "deploy", path


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float_data_feeds_a_float16_deployment(capsys, half_deployment, inputs, tmp_path, dtype):
    folder, model = half_deployment
    data = tmp_path / f"{dtype}.npz"
    np.savez(data, x=inputs[0].astype(dtype), y=inputs[1])
    code, out, err = cli(capsys, "verify", folder, "--model", model, "--data", data, "--json")
    assert code == 0 and json.loads(out)["passed"] and json.loads(out)["samples"] == len(inputs[0]), err


def test_integer_pixels_for_a_float_input_are_refused(capsys, deployments, tmp_path):
    data = tmp_path / "pixels.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8)).astype(np.uint8))
    code, out, err = cli(capsys, "run", deployments["one-static"][0], "--data", data)
    assert_bad_input(code, out, err, "pixels.npz: x: ", "shape 4x1x8x8 dtype uint8", "needs shape [N]x1x8x8 dtype float32",
                     "unnormalised pixels")


def test_input_of_the_wrong_shape_names_shape_and_dtype_both_ways(capsys, half_deployment, tmp_path):
    folder, model = half_deployment
    data = tmp_path / "big.npz"
    np.savez(data, x=np.zeros((4, 1, 9, 9), np.float32))
    code, out, err = cli(capsys, "verify", folder, "--model", model, "--data", data)
    assert_bad_input(code, out, err, "big.npz: x: ", "shape 4x1x9x9 dtype float32", "needs shape [N]x1x8x8 dtype float16")


# --------------------------------------------------------------------------- 3. hash-less plans for another model

def card_doc(output_bytes=(256, 256, 128), input_bytes=256, model_hash=None):
    doc = {"schema": "finplan.model/1", "name": "tiny", "input_bytes": input_bytes,
           "blocks": [{"name": b, "flops": 1000, "output_bytes": n} for b, n in zip(TINY_BLOCKS, output_bytes)],
           "exits": [{"name": "exit1", "after": "block1", "accuracy": 0.5}, {"name": "exit2", "after": "block3", "accuracy": 0.6}]}
    if model_hash is not None:
        doc["hash"] = model_hash
    return doc


def hashless_plan(tmp_path, card=None, *, placement=("device", "edge", "cloud")):
    plan = write_json(tmp_path / "plan.json", plan_doc(list(placement), model_hash=None))
    if card is not None:
        write_json(tmp_path / "tiny.card.json", card)  # the plan's model.card, relative to the plan's folder
    return plan


def test_a_hashless_card_with_another_models_sizes_is_refused(capsys, tiny, tmp_path):
    plan = hashless_plan(tmp_path, card_doc(output_bytes=(1280, 256, 128)))
    out = tmp_path / "deploy"
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", out)
    assert_bad_input(code, o, err, "tiny.card.json: blocks[0].output_bytes: ", "output of block1", "1280", "256 bytes",
                     "finplan profile")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "tiny.card.json"]


def test_a_hashless_card_with_the_models_sizes_emits_with_a_warning(capsys, tiny, tmp_path):
    plan = hashless_plan(tmp_path, card_doc(output_bytes=(256, 256, 0)))  # the last block's output never travels
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy", "--json")
    assert code == 0, err
    assert any("tiny.card.json" in w for w in json.loads(o)["warnings"])


def test_a_card_with_the_models_hash_vouches_for_a_hashless_plan(capsys, tiny, tmp_path):
    plan = hashless_plan(tmp_path, card_doc(model_hash=model_hash(onnx.load(tiny[0]))))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy", "--json")
    assert code == 0, err
    assert json.loads(o)["warnings"] == []


def test_labels_outside_the_models_classes_are_refused(capsys, deployments, tmp_path, inputs):
    x = inputs[0][:6]
    path = tmp_path / "labels.npz"
    np.savez(path, x=x, y=np.full(len(x), 12))
    code, out, err = cli(capsys, "run", deployments["three-dynamic"][0], "--data", path)
    assert_bad_input(code, out, err, "labels.npz: y: ", "12", "0..")


def test_a_card_with_another_models_hash_is_refused(capsys, tiny, tmp_path):
    plan = hashless_plan(tmp_path, card_doc(model_hash="sha256:" + "3" * 64))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy")
    assert_bad_input(code, o, err, "tiny.card.json: hash: ", "another model")


def test_without_the_card_the_plans_transfer_bytes_are_checked(capsys, tiny, tmp_path):
    plan = hashless_plan(tmp_path)  # the card it names is not there
    edit_json(plan, lambda p: p["applications"][0]["transfers"][1].__setitem__("bytes", 1280))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy")
    assert_bad_input(code, o, err, "plan.json: applications[0].transfers[1].bytes: ", "output of block2", "1280", "256 bytes")


# --------------------------------------------------------------------------- 5. links the placement needs

def without_link(src, dst):
    network = network_doc()
    network["links"] = [l for l in network["links"] if (l["from"], l["to"]) != (src, dst)]
    return network


@pytest.mark.parametrize("placement, source, missing, field", [
    (["device", "edge", "cloud"], None, ("edge", "cloud"), "applications[0].placement[2]"),
    (["cloud", "device", "device"], None, ("cloud", "device"), "applications[0].placement[1]"),
    (["edge", "edge", "edge"], "device", ("device", "edge"), "applications[0].source"),
])
def test_a_placement_over_a_missing_link_is_refused_at_emit(capsys, tiny, tmp_path, placement, source, missing, field):
    doc = plan_doc(placement, model_hash=tiny[1], network=without_link(*missing))
    if source is not None:
        doc["applications"][0]["source"] = source
    plan = write_json(tmp_path / "plan.json", doc)
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy")
    assert_bad_input(code, o, err, f"plan.json: {field}: ", "application 'tiny'", f"no link {missing[0]} -> {missing[1]}")
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_a_placement_on_a_node_outside_the_network_is_refused_at_emit(capsys, tiny, tmp_path):
    plan = write_json(tmp_path / "plan.json", plan_doc(["device", "gpu", "gpu"], model_hash=tiny[1]))
    code, o, err = cli(capsys, "emit", plan, "--model", tiny[0], "-o", tmp_path / "deploy")
    assert_bad_input(code, o, err, "applications[0].placement[1].node", "'gpu'")


# --------------------------------------------------------------------------- 6. --atol

@pytest.mark.parametrize("atol", ["-1", "nan", "-nan", "inf"])
def test_verify_refuses_a_tolerance_that_is_not_a_number_at_least_0(capsys, deployments, tiny, inputs, atol):
    code, out, err = cli(capsys, "verify", deployments["one-static"][0], "--model", tiny[0], "--data", inputs[2],
                         "--atol", atol)
    assert_bad_input(code, out, err, "--atol")


@pytest.mark.parametrize("option, value", [("--tolerance", "nan"), ("--tolerance", "inf"), ("--rate-tolerance", "inf"),
                                           ("--tolerance", "-0.1")])
def test_run_refuses_a_tolerance_that_is_not_a_finite_number_at_least_0(capsys, deployments, inputs, option, value):
    # NaN would switch every check off in silence; inf cannot be written to --json
    code, out, err = cli(capsys, "run", deployments["one-static"][0], "--data", inputs[2], option, value, "--json")
    assert_bad_input(code, out, err, option)
