"""emit is check -> build -> write: the build is pure (parts as bytes, manifests as dicts, no
disk), and writing it gives the folder emit gives, byte for byte."""
from __future__ import annotations

import json
import os

import onnx
import pytest

from helpers import fake_profile, network_doc, plan_doc
from onnx_builders import tiny_branchy_model
from finplan.contract import model_hash, read_contract
from finplan.deploy.emit import DEPLOYMENT_FILE, emit, serialized
from finplan.deploy.emit_build import PLAN_FILE, ProfileFile, build_deployment
from finplan.deploy.emit_check import check_documents
from finplan.deploy.manifest import sha256_bytes
from finplan.errors import FinplanInputError
from finplan.fileio import to_json_text


def _built(placement, tmp_path, monkeypatch, **plan_kwargs):
    model = tiny_branchy_model()
    profile = fake_profile(model_hash(model))
    profile["session_options"] = {"intra_op_threads": 1, "execution_provider": "CPUExecutionProvider"}
    plan = plan_doc(placement, model_hash=model_hash(model), network=network_doc(profile="p.json"), **plan_kwargs)
    profiles = {"p.json": ProfileFile("/nowhere/p.json", "p.json", json.dumps(profile).encode())}
    # no disk: in an empty folder, with every way of opening a file failing
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail(f"opened {a}"))
    monkeypatch.setattr(os, "open", lambda *a, **k: pytest.fail(f"opened {a}"))
    inputs = check_documents(plan, 0, model, read_contract(model), profiles, plan_bytes=b"{}\n",
                             plan_file="plan.json", model_file="tiny.onnx")
    built = build_deployment(inputs)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    return model, built


def test_build_is_pure_and_holds_every_part_and_manifest(tmp_path, monkeypatch):
    model, built = _built(["device", "edge", "device"], tmp_path, monkeypatch, thresholds={"exit1": 0.6})
    assert sorted(built.documents) == ["device/manifest.json", "edge/manifest.json", "network.json"]
    parts = {rel: data for rel, data in built.files.items() if rel.endswith(".onnx")}
    assert sorted(parts) == ["device/part00_block1-block1.onnx", "device/part01_block3-block3.onnx",
                             "edge/part00_block2-block2.onnx"]
    for node in ("device", "edge"):
        manifest = built.documents[f"{node}/manifest.json"]
        assert manifest["model"]["hash"] == model_hash(model)
        for stage in manifest["stages"]:
            data = parts[f"{node}/{stage['part']}"]
            assert stage["sha256"] == sha256_bytes(data)
            onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    # exit1 is active after block1: device's first stage ends there; the profile's threads are the session
    device = built.documents["device/manifest.json"]
    assert [s["blocks"] for s in device["stages"]] == [["block1"], ["block3"]]
    assert device["stages"][0]["exits"][0]["threshold"] == 0.6
    assert device["session"]["intra_op_threads"] == 1
    assert built.documents["edge/manifest.json"]["session"]["from_node"] == "device"
    assert built.documents["network.json"]["nodes"][0]["profile"] == "profiles/p.json"
    assert built.files["profiles/p.json"].startswith(b"{") and built.files[PLAN_FILE] == b"{}\n"
    # the index ties every file a runtime reads besides the parts
    contents = serialized(built)
    index = json.loads(contents[DEPLOYMENT_FILE])
    assert sorted(index["sha256"]) == sorted(built.tied)
    assert all(index["sha256"][rel] == sha256_bytes(contents[rel]) for rel in built.tied)


def test_written_folder_is_the_build_byte_for_byte(deployments, tiny):
    folder, plan, _ = deployments["revisit-dynamic"]
    from finplan.deploy.emit_check import check_emit

    inputs, _target = check_emit(plan, tiny[0], folder.parent / "not-written", force=False)
    contents = serialized(build_deployment(inputs))
    on_disk = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert on_disk == contents
    assert contents[DEPLOYMENT_FILE] == to_json_text(json.loads(contents[DEPLOYMENT_FILE])).encode()


def test_a_missing_profile_is_refused_before_anything_is_built(workdir, tiny, plan_factory):
    out = workdir / "missing-profile.deploy"
    with pytest.raises(FinplanInputError, match="profile 'nope.json' not found"):
        emit(plan_factory(["device"] * 3, network=network_doc(profile="nope.json")), tiny[0], out)
    assert not out.exists() and not [p for p in workdir.iterdir() if p.name.startswith(".missing-profile")]
