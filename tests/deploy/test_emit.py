"""finplan emit: parts, metadata, manifests, the self-contained root, atomicity."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from helpers import LAYOUTS, fake_profile
from finplan.deploy.emit import emit
from finplan.deploy.manifest import load_manifest, sha256_file
from finplan.errors import FinplanInputError


def manifests(folder):
    index = json.loads((folder / "deployment.json").read_text())
    return index, {node: load_manifest(folder / node) for node in index["nodes"]}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_one_folder_per_hosting_node_and_valid_parts(deployments, layout, tiny):
    folder, _, thresholds = deployments[layout]
    placement, dynamic = LAYOUTS[layout]
    index, by_node = manifests(folder)
    assert index["nodes"] == list(dict.fromkeys(placement))
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(set(placement) | {"profiles"})
    blocks_seen = []
    for node, manifest in by_node.items():
        assert manifest.node == node and manifest.model_hash == tiny[1]
        for stage in manifest.stages:
            path = folder / node / stage.part
            assert sha256_file(path) == stage.sha256
            part = onnx.load(str(path))
            onnx.checker.check_model(part, full_check=True)
            meta = json.loads({p.key: p.value for p in part.metadata_props}["finplan"])
            assert [b["name"] for b in meta["blocks"]] == list(stage.blocks)
            assert [e["name"] for e in meta["exits"]] == [e.name for e in stage.exits]
            assert meta["part"]["parent_model"]["hash"] == tiny[1]
            for value in list(part.graph.input) + list(part.graph.output):
                assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
            blocks_seen += [(b, node) for b in stage.blocks]
    assert sorted(blocks_seen) == sorted(zip(["block1", "block2", "block3"], placement))
    active = {e["name"]: e["threshold"] for e in index["active_exits"]}
    assert active == ({"exit1": thresholds["exit1"], "exit2": None} if dynamic else {"exit2": None})


def test_stages_cut_at_active_exits_only(deployments):
    _, static = manifests(deployments["one-static"][0])
    _, dynamic = manifests(deployments["one-dynamic"][0])
    # without early exits one part holds all three blocks; with exit1 active the chain is cut after block1
    assert [s.blocks for s in static["device"].stages] == [("block1", "block2", "block3")]
    assert [s.blocks for s in dynamic["device"].stages] == [("block1",), ("block2", "block3")]
    first = dynamic["device"].stages[0]
    assert [e.name for e in first.exits] == ["exit1"] and first.next.node == "device"
    # the static deployment does not even contain exit1's head
    assert all(e.name != "exit1" for s in static["device"].stages for e in s.exits)
    assert static["device"].stages[-1].next is None


def test_next_hops_and_entries_follow_the_placement(deployments):
    index, by_node = manifests(deployments["revisit-dynamic"][0])
    device, edge = by_node["device"], by_node["edge"]
    assert [e.tensor for e in device.entries] == ["x", "block2"]
    assert device.is_source and not edge.is_source
    assert device.stages[0].next.node == "edge" and device.stages[0].next.tensor == "block1"
    assert edge.stages[0].next.node == "device" and edge.stages[-1].next.tensor == "block2"
    assert device.stages[-1].next is None


def test_root_is_self_contained(deployments, workdir):
    folder, plan, _ = deployments["three-static"]
    assert (folder / "plan.json").read_bytes() == plan.read_bytes()
    network = json.loads((folder / "network.json").read_text())
    assert network["schema"] == "finplan.network/1" and len(network["nodes"]) == 3


def test_profiles_are_copied_and_paths_rewritten(workdir, tiny, plan_factory):
    from helpers import network_doc

    profile = workdir / "fake.profile.json"
    profile.write_text(json.dumps(fake_profile(tiny[1])))
    plan = plan_factory(["device"] * 3, network=network_doc(profile=str(profile)))
    out = workdir / "with-profile.deploy"
    emit(plan, tiny[0], out)
    network = json.loads((out / "network.json").read_text())
    ref = network["nodes"][0]["profile"]
    assert not ref.startswith("/") and (out / ref).read_bytes() == profile.read_bytes()


def test_emit_refuses_and_leaves_nothing(workdir, tiny, plan_factory):
    out = workdir / "refused.deploy"
    for kwargs, message in (({"model_hash": "sha256:" + "0" * 64}, "another model"),
                            ({"feasible": False}, "infeasible")):
        with pytest.raises(FinplanInputError, match=message):
            emit(plan_factory(**kwargs), tiny[0], out)
    with pytest.raises(FinplanInputError, match="no application named 'nope'"):
        emit(plan_factory(), tiny[0], out, application="nope")
    assert not out.exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".refused.deploy")]


def test_existing_folder_needs_force_and_is_replaced_whole(workdir, tiny, plan_factory):
    out = workdir / "replace.deploy"
    emit(plan_factory(["device"] * 3), tiny[0], out)
    with pytest.raises(FinplanInputError, match="already exists"):
        emit(plan_factory(["device", "edge", "edge"]), tiny[0], out)
    emit(plan_factory(["device", "edge", "edge"]), tiny[0], out, force=True)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["device", "edge", "profiles"]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".replace.deploy")]


def test_final_exit_after_block1_deploys_one_block(workdir, tiny, plan_factory):
    out = workdir / "short.deploy"
    emit(plan_factory(["device"], final_exit="exit1"), tiny[0], out)
    manifest = load_manifest(out / "device")
    assert [s.blocks for s in manifest.stages] == [("block1",)]
    assert [o.name for o in manifest.stages[0].outputs] == ["exit1"]
    assert np.dtype(manifest.stages[0].outputs[0].dtype) == np.float32


def test_nodes_run_with_the_threads_their_profile_was_timed_with(workdir, tiny, plan_factory):
    """The manifest of a profiled node carries the profile's intra-op threads; the runtime uses
    them unless told otherwise; a node without a profile runs with the source's profiled count
    (issue 12: an analytic node stands in with the profiled thread choice); with no profile of
    this model anywhere, onnxruntime's default."""
    from finplan.deploy.executor import LocalExecutor
    from helpers import network_doc

    doc = fake_profile(tiny[1])
    doc["session_options"] = {"intra_op_threads": 1, "execution_provider": "CPUExecutionProvider"}
    profile = workdir / "threads.profile.json"
    profile.write_text(json.dumps(doc))
    out = workdir / "threads.deploy"
    emit(plan_factory(["device", "edge", "edge"], network=network_doc(profile=str(profile))), tiny[0], out)
    device = json.loads((out / "device" / "manifest.json").read_text())
    assert device["session"] == {"intra_op_threads": 1, "execution_provider": "CPUExecutionProvider",
                                 "profile": "profiles/threads.profile.json"}
    edge = json.loads((out / "edge" / "manifest.json").read_text())
    assert edge["session"] == {**device["session"], "from_node": "device"}
    executor = LocalExecutor(out)
    assert executor.runtimes["device"].threads == 1 and executor.runtimes["edge"].threads == 1
    assert executor.runtimes["edge"].threads_how == "the profile of device (it has none)"
    assert LocalExecutor(out, threads=2).runtimes["device"].threads == 2

    other = {**doc, "model": {"name": "tiny", "hash": "sha256:" + "1" * 64}}
    profile.write_text(json.dumps(other))
    emit(plan_factory(["device"] * 3, network=network_doc(profile=str(profile))), tiny[0], workdir / "other.deploy")
    assert "session" not in json.loads((workdir / "other.deploy" / "device" / "manifest.json").read_text())


def test_a_bad_session_in_a_manifest_is_refused(workdir, tiny, plan_factory):
    from finplan.deploy.node_runtime import NodeRuntime

    out = workdir / "bad-session.deploy"
    emit(plan_factory(["device"] * 3), tiny[0], out)
    path = out / "device" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["session"] = {"intra_op_threads": 0}
    path.write_text(json.dumps(manifest))
    with pytest.raises(FinplanInputError, match=r"session\.intra_op_threads.*expected an integer >= 1"):
        NodeRuntime(out / "device")
