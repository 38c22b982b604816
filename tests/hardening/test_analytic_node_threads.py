"""Class 7: every node runs with the profiled thread count: its own profile's, or for an
analytic node (no profile, this machine stands in) the source's; ``--threads`` for all; at
most the CPUs here. The run report says which count each node used and why."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hardening_helpers import cli

from finplan.deploy.node_runtime import thread_choice
from finplan.fileio import available_cpus


def _profiled_threads(world) -> int:
    return json.loads((world / "device.profile.json").read_text())["session_options"]["intra_op_threads"]


def test_analytic_nodes_borrow_the_source_profiles_threads(world):
    threads = _profiled_threads(world)
    index = json.loads((world / "deploy" / "deployment.json").read_text())
    assert "cloud" in index["nodes"]  # cloud is analytic (compute only) in the world's network
    for node in index["nodes"]:
        session = json.loads((world / "deploy" / node / "manifest.json").read_text())["session"]
        assert session["intra_op_threads"] == threads
        assert session.get("from_node") == (None if node == "device" else "device")


def test_the_run_report_says_which_count_each_node_used(capsys, world):
    threads = _profiled_threads(world)
    code, out, err = cli(capsys, "run", world / "deploy", "--data", "embedded", "--limit", "8", "--json")
    assert code == 0, err
    used = json.loads(out)["threads"]
    assert used["device"] == {"intra_op_threads": threads, "how": "its profile"}
    assert used["cloud"] == {"intra_op_threads": threads, "how": "the profile of device (it has none)"}
    code, out, err = cli(capsys, "run", world / "deploy", "--data", "embedded", "--limit", "8")
    assert code == 0, err
    assert f"intra-op threads: device {threads} (its profile), cloud {threads} (the profile of device" in out


def test_threads_given_apply_to_every_node(capsys, world):
    code, out, err = cli(capsys, "run", world / "deploy", "--data", "embedded", "--limit", "4", "--threads", "1",
                         "--json")
    assert code == 0, err
    assert {node: t["intra_op_threads"] for node, t in json.loads(out)["threads"].items()} == {"device": 1, "cloud": 1}
    assert {t["how"] for t in json.loads(out)["threads"].values()} == {"as asked"}


def _manifest(threads, lender=None):
    session = None if threads is None else {"intra_op_threads": threads, **({"from_node": lender} if lender else {})}
    return SimpleNamespace(session_threads=threads, doc={} if session is None else {"session": session})


@pytest.mark.parametrize("given, manifest, expected", [
    (1, _manifest(2), (1, "as asked")),
    (None, _manifest(1), (1, "its profile")),
    (None, _manifest(1, "device"), (1, "the profile of device (it has none)")),
    (None, _manifest(None), (None, "onnxruntime's default (no profile names a count)")),
])
def test_thread_choice(given, manifest, expected):
    assert thread_choice(given, manifest) == expected


def test_a_profile_from_a_bigger_machine_is_capped_at_the_cpus_here():
    cpus = available_cpus()
    count, how = thread_choice(None, _manifest(cpus + 64, "device"))
    assert count == cpus and f"{cpus + 64}, capped at the {cpus} CPUs of this machine" in how


def test_no_profile_anywhere_keeps_onnxruntime_default(capsys, world_copy):
    network = json.loads((world_copy / "network.json").read_text())
    network["nodes"][0] = {"name": "device", "tier": "mobile", "compute": {"ops_per_s": 300e9, "power_w": 4.0}}
    (world_copy / "network.json").write_text(json.dumps(network))
    assert cli(capsys, "plan", world_copy / "scenario.yaml", "-o", world_copy / "analytic.plan.json", "-q")[0] == 0
    code, _, err = cli(capsys, "emit", world_copy / "analytic.plan.json", "--model", world_copy / "model.onnx",
                       "-o", world_copy / "analytic.deploy", "-q")
    assert code == 0, err
    index = json.loads((world_copy / "analytic.deploy" / "deployment.json").read_text())
    for node in index["nodes"]:
        assert "session" not in json.loads((world_copy / "analytic.deploy" / node / "manifest.json").read_text())
    code, out, err = cli(capsys, "run", world_copy / "analytic.deploy", "--data", "embedded", "--limit", "4", "--json")
    assert code == 0, err
    assert {t["intra_op_threads"] for t in json.loads(out)["threads"].values()} == {None}
