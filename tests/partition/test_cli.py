"""`finplan plan` and `finplan show` end to end: outputs, determinism and every bad input."""
from __future__ import annotations

import json

import pytest

from finplan.partition.plan import validate_plan
from partition_helpers import MULTI, ROOT, bad, lenet_profile, run, shortcut, write_network


def test_plan_writes_a_valid_plan_and_summary(capsys, paper, tmp_path):
    out_file = tmp_path / "plan.json"
    code, out, _ = run(capsys, "plan", paper / "scenario.yaml", "-o", out_file)
    assert code == 0
    doc = validate_plan(json.loads(out_file.read_text()))
    app = doc["applications"][0]
    assert [p["node"] for p in app["placement"]] == ["device", "device", "device", "cloud", "cloud"]
    assert app["final_exit"] == "exit3" and app["feasible"] and app["binding"] == ["latency", "accuracy"]
    assert app["predicted"]["energy_j"] == pytest.approx(0.0856027665902098, rel=1e-9)
    assert app["transfers"] == [{"from": "device", "to": "cloud", "after_block": "block3", "bytes": 64896.0,
                                 "probability": 1.0, "time_s": pytest.approx(64896 * 8 * 0.22e-12),
                                 "energy_j": pytest.approx(64896 * 8 * 42.6e-9)}]
    assert set(app["per_node"]) == {"device", "cloud"} and app["per_node"]["cloud"]["blocks"] == ["block4", "block5"]
    assert doc["network"]["nodes"][0]["name"] == "device"  # self-contained
    assert "block4" in out and "cloud" in out and "compute" in out and "transfer" in out and "binding" in out


def test_plans_are_byte_identical_by_default_and_times_only_with_timings(capsys, paper, tmp_path, monkeypatch):
    files = []
    for i in range(2):
        target = tmp_path / f"p{i}.json"
        assert run(capsys, "plan", MULTI / "scenario.yaml", "-o", target)[0] == 0
        files.append(target.read_bytes())
    assert files[0] == files[1]
    solver = json.loads(files[0])["solver"]
    assert "solve_time_s" in solver and solver["solve_time_s"] is None  # present (DESIGN.md), null by default
    # the --json output too, and the human summary still shows the time measured in this run
    code, out, _ = run(capsys, "plan", MULTI / "scenario.yaml", "--json", "--compare")
    doc = json.loads(out)
    assert code == 0 and doc["solver"]["solve_time_s"] is None
    assert all(r["solve_time_s"] is None for r in doc["comparison"] if "skipped" not in r)
    code, out, _ = run(capsys, "plan", MULTI / "scenario.yaml", "--compare")
    assert code == 0 and " ms, mode static" in out and "time (solver total)" in out
    timed = tmp_path / "timed.json"
    assert run(capsys, "plan", MULTI / "scenario.yaml", "-o", timed, "--timings", "--compare")[0] == 0
    doc = json.loads(timed.read_text())
    assert isinstance(doc["solver"]["solve_time_s"], float)
    doc["solver"]["solve_time_s"] = None
    assert all(isinstance(r["solve_time_s"], float) for r in doc.pop("comparison"))
    assert all(isinstance(r["solve_time_s"], float) for r in doc.pop("comparison_totals"))  # several applications
    assert doc == json.loads(files[0])
    # the no-op --reproducible (plans are reproducible by default) is gone: click refuses it with exit code 2
    assert run(capsys, "plan", MULTI / "scenario.yaml", "--reproducible")[0] == 2


def test_paths_in_a_plan_do_not_depend_on_the_working_directory(capsys, paper, tmp_path, monkeypatch):
    """Paths are recorded relative to the plan file, so the bytes are the same from any folder,
    and finplan emit finds the files from the plan."""
    profile = json.loads((ROOT / "examples" / "profiles" / "this-machine-2core.profile.json").read_text())
    (paper / "dev.profile.json").write_text(json.dumps(profile))
    net = json.loads(json.dumps(__import__("yaml").safe_load((paper / "network.yaml").read_text())))
    net["nodes"][0]["profile"] = "dev.profile.json"  # another model's profile: compute is used (and warned)
    (paper / "network.yaml").write_text(json.dumps(net))
    (tmp_path / "out").mkdir()
    outputs = []
    for cwd, scenario, target in ((tmp_path, "paper/scenario.yaml", "out/plan.json"),
                                  (paper, "scenario.yaml", "../out/plan2.json")):
        monkeypatch.chdir(cwd)
        assert run(capsys, "plan", scenario, "-o", target)[0] == 0
        outputs.append((cwd / target).read_bytes())
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    assert doc["scenario"] == "../paper/scenario.yaml"
    assert doc["applications"][0]["model"]["card"] == "../paper/b-alexnet.json"
    assert doc["network"]["nodes"][0]["profile"] == "../paper/dev.profile.json"
    assert (tmp_path / "out" / doc["network"]["nodes"][0]["profile"]).is_file()


def test_json_and_compare(capsys, paper):
    code, out, _ = run(capsys, "plan", paper / "scenario.yaml", "--json", "--compare")
    assert code == 0
    doc = json.loads(out)
    rows = {r["solver"]: r for r in doc["comparison"]}
    assert rows["mcp"]["placement"] == "device,edge,cloud,cloud,cloud"
    assert rows["mcp"]["fin_saving"] == pytest.approx(1 - 0.0856027665902098 / 0.1992044068667694, rel=1e-6)
    assert rows["exhaustive"]["energy_j"] == pytest.approx(rows["fin"]["energy_j"], rel=1e-12)
    code, out, _ = run(capsys, "plan", paper / "scenario.yaml", "--compare")
    assert "Comparison" in out and "57.0%" in out and "min-latency" in out


def test_shortcut_units_and_solvers(capsys, paper):
    for latency in ("5ms", "0.005", "5000us"):
        code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--json",
                                             latency=latency), "--solver", "milp")
        assert code == 0
        assert json.loads(out)["applications"][0]["predicted"]["energy_j"] == pytest.approx(0.0856027665902098)


def test_infeasible_is_not_an_error(capsys, paper):
    args = shortcut(paper / "b-alexnet.json", paper / "network.yaml", accuracy="0.9")
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "no exit reaches accuracy 0.9" in out and "0.8595 (exit3)" in out
    assert run(capsys, *args, "--fail-infeasible")[0] == 1
    code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--json", latency="2ms"))
    app = json.loads(out)["applications"][0]
    assert code == 0 and app["feasible"] is False and app["reason"].startswith("the fastest placement takes 2.216 ms")


def test_show_and_png(capsys, paper, tmp_path):
    plan, png = tmp_path / "plan.json", tmp_path / "plan.png"
    assert run(capsys, "plan", MULTI / "scenario.yaml", "-o", plan)[0] == 0
    code, out, _ = run(capsys, "show", plan, "--png", png)
    assert code == 0 and "photos" in out and "lower bound (Lagrangian relaxation of the shared capacities)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_graph(capsys, paper, tmp_path):
    import networkx as nx
    target = tmp_path / "g.graphml"
    code, _, _ = run(capsys, *shortcut(paper / "b-lenet.json", paper / "network.yaml", "--export-graph", target,
                                       "--gamma", "20"))
    assert code == 0
    graph = nx.read_graphml(target)
    assert "source" in graph and "sink" in graph
    assert nx.has_path(graph, "source", "sink")
    assert all(d["q"] <= 20 for n, d in graph.nodes(data=True) if d.get("kind") == "vertex")


def test_help_shows_an_example(capsys):
    code, out, _ = run(capsys, "plan", "--help")
    assert code == 0 and "finplan plan examples/paper/scenario.yaml" in out and "--max-latency 5ms" in out


# ---------------------------------------------------------------- bad input

def test_bad_network_inputs(capsys, paper, tmp_path):
    card = paper / "b-alexnet.json"
    cases = [
        (dict(links=[{"from": "device", "to": "moon", "bandwidth_bps": 1e9, "latency_s": 0, "energy_j_per_bit": 1e-9}]),
         ["links[0].to", "moon"]),
        (dict(links=[{"from": "device", "to": "device", "bandwidth_bps": 1e9, "latency_s": 0, "energy_j_per_bit": 1e-9}]),
         ["links[0].to", "itself"]),
        (dict(links=[{"from": "device", "to": "edge", "bandwidth_bps": 0, "latency_s": 0, "energy_j_per_bit": 1e-9}]),
         ["links[0].bandwidth_bps", "> 0"]),
        (dict(links=[{"from": "device", "to": "edge", "bandwidth_bps": -5, "latency_s": 0, "energy_j_per_bit": 1e-9}]),
         ["links[0].bandwidth_bps"]),
        (dict(links=[{"from": "device", "to": "edge", "bandwidth_bps": float("nan"), "latency_s": 0,
                      "energy_j_per_bit": 1e-9}]), ["links[0].bandwidth_bps", "finite"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 11e9, "power_w": 0}}], links=[]),
         ["nodes[0].compute.power_w"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": float("nan"), "power_w": 1}}], links=[]),
         ["nodes[0].compute.ops_per_s"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": -1, "power_w": 1}}], links=[]),
         ["nodes[0].compute.ops_per_s"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 0, "power_w": 1}}], links=[]),
         ["nodes[0].compute.ops_per_s"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 11e9, "power_w": -2}}], links=[]),
         ["nodes[0].compute.power_w"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 11e9, "power_w": float("nan")}}], links=[]),
         ["nodes[0].compute.power_w"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}},
                     {"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}}], links=[]),
         ["nodes[1].name", "duplicate"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}, "max_utilisation": 0.5}],
              links=[]), ["nodes[0].max_utilisation", "unknown field", "max_utilization"]),
        (dict(links=[{"from": "device", "to": "edge", "bandwidth_bps": 1e9, "latency_s": 0, "energy_j_per_bit": 1e-9,
                      "bandwith_bps": 1e6}]), ["links[0].bandwith_bps", "unknown field"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}, "capacity": 0.5,
                      "max_utilization": 0.8}], links=[]), ["nodes[0].capacity", "give one"]),
        (dict(nodes=[{"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}, "capacity": -1}], links=[]),
         ["nodes[0].capacity"]),
    ]
    for i, (kwargs, expect) in enumerate(cases):
        net = write_network(tmp_path / f"net{i}.json", **kwargs)
        out_file = tmp_path / f"out{i}.json"
        bad(capsys, *shortcut(card, net, "-o", out_file), expect=[f"net{i}.json"] + expect)
        assert not out_file.exists()  # nothing half-written


def test_bad_card_inputs(capsys, paper, tmp_path):
    net = paper / "network.yaml"
    base = json.loads((paper / "b-lenet.json").read_text())
    edits = [
        (lambda d: d["blocks"][0].update(flops=0), "blocks[0].flops"),
        (lambda d: d["blocks"][0].update(flops=-3), "blocks[0].flops"),
        (lambda d: d["blocks"][0].update(flops=float("nan")), "blocks[0].flops"),
        (lambda d: d["blocks"][1].update(name="block1"), "duplicate"),
        (lambda d: d["exits"][0].update(after="block9"), "exits[0].after"),
    ]
    for i, (edit, expect) in enumerate(edits):
        doc = json.loads(json.dumps(base))
        edit(doc)
        card = tmp_path / f"card{i}.json"
        card.write_text(json.dumps(doc))
        bad(capsys, *shortcut(card, net, "-o", tmp_path / f"plan{i}.json"), expect=[f"card{i}.json", expect])


def test_bad_source_and_parameters(capsys, paper, tmp_path):
    card, net = paper / "b-alexnet.json", paper / "network.yaml"
    out = tmp_path / "plan.json"
    bad(capsys, *shortcut(card, net, "-o", out, source="phone"), expect=["--source", "phone", "not a node"])
    tiny = write_network(tmp_path / "tiny.json", nodes=[
        {"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}, "memory_bytes": 10},
        {"name": "edge", "compute": {"ops_per_s": 1e9, "power_w": 1}}], links=[])
    doc = json.loads(card.read_text())
    doc["blocks"][0]["params_bytes"] = 1000
    heavy = tmp_path / "heavy.json"
    heavy.write_text(json.dumps(doc))
    bad(capsys, *shortcut(heavy, tiny, "-o", out, "--raw-offload"), expect=["--source", "no link"])
    bad(capsys, *shortcut(heavy, tiny, "-o", out), expect=["--source", "cannot hold block1"])
    for gamma in ("0", "-5", "abc"):
        bad(capsys, *shortcut(card, net, "-o", out, "--gamma", gamma), expect=["--gamma"])
    bad(capsys, *shortcut(card, net, "-o", out, "--lambda", "-1"), expect=["--lambda"])
    bad(capsys, *shortcut(card, net, "-o", out, latency="fast"), expect=["--max-latency"])
    bad(capsys, *shortcut(card, net, "-o", out, accuracy="2"), expect=["--min-accuracy"])


def test_profile_hash_mismatch(capsys, paper, tmp_path):
    profile = lenet_profile("sha256:other", 1e-3)
    (tmp_path / "device.profile.json").write_text(json.dumps(profile))
    net = write_network(tmp_path / "net.json", nodes=[{"name": "device", "profile": "device.profile.json"}], links=[])
    doc = json.loads((paper / "b-lenet.json").read_text())
    doc["hash"] = "sha256:mine"
    card = tmp_path / "lenet.json"
    card.write_text(json.dumps(doc))
    bad(capsys, *shortcut(card, net, "-o", tmp_path / "plan.json"), expect=["device.profile.json", "lenet.json", "hash"])


def test_too_large_for_exhaustive(capsys, paper, tmp_path):
    nodes = [{"name": "device", "compute": {"ops_per_s": 1e9, "power_w": 1}}] + \
        [{"name": f"n{i}", "compute": {"ops_per_s": 1e10, "power_w": 10}} for i in range(40)]
    net = write_network(tmp_path / "big.json", nodes=nodes, links=[])
    bad(capsys, *shortcut(paper / "b-alexnet.json", net, "--solver", "exhaustive", "-o", tmp_path / "plan.json"),
        expect=["too large for the exhaustive solver", "milp"])


def test_bad_scenario_file(capsys, paper, tmp_path):
    text = (paper / "scenario.yaml").read_text()
    (paper / "s1.yaml").write_text(text.replace("min_accuracy: 0.80", "min_accuracy: lots"))
    bad(capsys, "plan", paper / "s1.yaml", "-o", tmp_path / "plan.json", expect=["s1.yaml", "applications[0].min_accuracy"])
    (paper / "s2.yaml").write_text(text.replace("mode: static", "mode: turbo"))
    bad(capsys, "plan", paper / "s2.yaml", "-o", tmp_path / "plan.json", expect=["options.mode"])
    (paper / "s3.yaml").write_text(text.replace("min_accuracy: 0.80", "min_accuracy: 0.80\n    rate: 200", 1))
    bad(capsys, "plan", paper / "s3.yaml", "-o", tmp_path / "plan.json", expect=["s3.yaml", "applications[0].rate", "unknown field", "rate_hz"])
    bad(capsys, "plan", tmp_path / "missing.yaml", "-o", tmp_path / "plan.json", expect=["missing.yaml", "not found"])
    bad(capsys, "plan", paper / "scenario.yaml", "-o", tmp_path / "plan.json", "--model", "x.json", expect=["not both"])


def test_plans_are_byte_identical_across_processes_and_hash_seeds(tmp_path):
    """Two separate processes with different string-hash seeds: any output order that follows set
    or dict-of-str iteration would show here, not in two runs inside one process."""
    import os
    import subprocess
    import sys

    outputs = []
    for seed in ("1", "2"):
        target = tmp_path / f"plan{seed}.json"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-m", "finplan", "plan", str(MULTI / "scenario.yaml"), "--compare",
                               "-o", str(target), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
