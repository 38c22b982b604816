"""What `finplan plan` and `finplan show` tell the user: capacity reasons, where costs came
from, the --compare table, warnings."""
from __future__ import annotations

import json
import re

import pytest

from finplan.partition.context import contexts
from finplan.partition.evaluate import Usage
from finplan.partition.explain import infeasibility_reason
from finplan.partition.documents import network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from partition_helpers import MULTI, lenet_profile
from partition_helpers import bad, run, shortcut, write_network

RATE_LIMITED = ["--rate", "5000"]


def test_capacity_reason_names_the_full_node_with_numbers(capsys, paper):
    code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--json", *RATE_LIMITED))
    reason = json.loads(out)["applications"][0]["reason"]
    assert code == 0
    assert reason.startswith("device would be busy 1028% of the time, over its max_utilization 100% "
                             "(block1 2.056 ms x 5000 Hz)")
    assert "first_block_at_source" in reason  # why block1 cannot leave the device
    assert "remaining" not in reason and "(max_utilization, memory_bytes)" not in reason
    for solver in ("exhaustive", "milp", "min-latency"):  # every solver explains it the same way
        code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--json",
                                             "--solver", solver, *RATE_LIMITED))
        assert "device would be busy 1028% of the time, over its max_utilization 100%" in \
            json.loads(out)["applications"][0]["reason"]


def _paper_ctx(paper_network, card, max_latency_s, rate_hz, cloud_max_utilization=None):
    doc = json.loads(json.dumps(paper_network.doc))
    if cloud_max_utilization is not None:
        doc["nodes"][2]["max_utilization"] = cloud_max_utilization
    app = Application("a", card, "b-alexnet.json", "device", max_latency_s, 0.8, rate_hz)
    return contexts(Scenario(network_from_dict(doc), (app,), Options()))[0]


def test_capacity_reason_counts_the_other_applications(paper_network, paper_cards):
    ctx = _paper_ctx(paper_network, paper_cards["b-alexnet"], 0.005, 250.0)
    kind, reason = infeasibility_reason(ctx, Usage(node_utilization={"device": 0.6}))
    assert kind == "capacity"
    assert reason.startswith("device would be busy 111.4% of the time, over its max_utilization 100% (60% taken by "
                             "the other applications + block1 2.056 ms x 250 Hz)")


def test_capacity_reason_says_what_the_fastest_fitting_placement_takes(paper_network, paper_cards):
    """The cloud cannot take a block at 400 Hz; the fastest placement (via the cloud) meets
    2.3 ms, the fastest that fits (via the edge) does not."""
    ctx = _paper_ctx(paper_network, paper_cards["b-alexnet"], 0.0023, 400.0, cloud_max_utilization=0.001)
    kind, reason = infeasibility_reason(ctx)
    assert kind == "capacity"
    assert reason.startswith("cloud would be busy ")
    assert "of the time, over its max_utilization 0.1% (block2 " in reason
    assert re.search(r"the fastest placement within every node and link limit \(device, edge x4\) takes 2\.3\d* ms, "
                     r"over the 2\.3 ms limit", reason), reason


def test_fin_notes_are_in_user_terms(capsys):
    code, out, _ = run(capsys, "plan", MULTI / "scenario.yaml", "--json", "--solver", "fin-sequential")
    notes = [n for app in json.loads(out)["applications"] for n in app.get("notes", [])]
    assert notes and all("repair" not in n and "option(s)" not in n for n in notes)
    assert any("block4 on phone-a" in n for n in notes)


@pytest.mark.parametrize("profile_hash", ["sha256:other", "sha256:mine"])
def test_a_profile_of_another_model_falls_back_visibly(capsys, paper, tmp_path, profile_hash):
    (tmp_path / "device.profile.json").write_text(json.dumps(lenet_profile(profile_hash, 1e-4)))
    net = write_network(tmp_path / "net.json", nodes=[
        {"name": "device", "profile": "device.profile.json", "compute": {"ops_per_s": 11e9, "power_w": 6}},
        {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 153.4e9, "power_w": 140}}])
    doc = json.loads((paper / "b-lenet.json").read_text())
    doc["hash"] = "sha256:mine"
    card = tmp_path / "lenet.json"
    card.write_text(json.dumps(doc))
    code, out, err = run(capsys, *shortcut(card, net, "--json", accuracy="0.9"))
    assert code == 0
    costs = json.loads(out)["applications"][0]["costs"]
    assert costs["edge"] == {"from": "compute", "estimate": "flops / ops_per_s; power_w x time"}
    if profile_hash == "sha256:other":
        warning = err.strip().splitlines()
        assert len(warning) == 1 and warning[0].startswith("finplan: warning: node device: profile ")
        for word in ("device.profile.json", "sha256:other", "sha256:mine", "lenet.json", "compute"):
            assert word in warning[0]
        assert costs["device"]["from"] == "compute"
        assert costs["device"]["profile_mismatch"]["profile_hash"] == "sha256:other"
    else:
        assert err == ""
        assert costs["device"]["from"] == "profile" and costs["device"]["energy"] == "measured"
        assert costs["device"]["profile"].endswith("device.profile.json")


def test_compare_marks_cloud_only_and_fin_without_a_plan(capsys, paper):
    code, out, _ = run(capsys, "plan", paper / "scenario.yaml", "--compare", "--gamma", "3")
    assert code == 0
    table = out[out.index("Comparison"):]
    fin_row = next(line for line in table.splitlines() if line.strip().startswith("fin "))
    mark = re.search(r"no plan \((\d+)\)", fin_row).group(1)
    assert re.search(rf"^\({mark}\) fin, fin-sequential: FIN with gamma=3 found no plan.*try --gamma", table, re.M)
    cloud_row = next(line for line in table.splitlines() if line.strip().startswith("cloud-only"))
    cloud_mark = re.search(r"cloud-only \((\d+)\)", cloud_row).group(1)
    assert re.search(rf"^\({cloud_mark}\) cloud-only: sends the raw input off the source although "
                     "first_block_at_source is true", table, re.M)
    code, out, _ = run(capsys, "plan", paper / "scenario.yaml", "--compare", "--json")
    rows = {r["solver"]: r for r in json.loads(out)["comparison"]}
    assert any("first_block_at_source" in n for n in rows["cloud-only"]["notes"])


def test_compare_shows_each_solvers_time_once(capsys):
    code, out, _ = run(capsys, "plan", MULTI / "scenario.yaml", "--compare")
    table = out[out.index("Comparison"):out.index("\n(1)")]
    rows = [line for line in table.splitlines() if re.match(r"\s+[a-z-]+( \(\d+\))?\s+(photos|scenes|digits)", line)]
    assert len(rows) == 3 * 9
    timed = [line for line in rows if re.search(r"\d ms\s*$", line)]
    assert len(timed) == 9 and "time (solver total)" in table


def test_show_prints_a_saved_comparison(capsys, paper, tmp_path):
    plan = tmp_path / "plan.json"
    assert run(capsys, "plan", paper / "scenario.yaml", "--compare", "-o", plan)[0] == 0
    code, out, _ = run(capsys, "show", plan)
    assert code == 0 and "Comparison" in out and "min-latency" in out and "57.0%" in out


def test_time_limit_with_a_solver_that_ignores_it_warns(capsys, paper):
    code, _, err = run(capsys, "plan", paper / "scenario.yaml", "--solver", "mcp", "--time-limit", "1s")
    assert code == 0 and "--time-limit only bounds MILP runs" in err
    code, _, err = run(capsys, "plan", paper / "scenario.yaml", "--solver", "milp", "--time-limit", "10s")
    assert code == 0 and err == ""


def test_baseline_summary_does_not_claim_binding_constraints(capsys, paper):
    code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--solver", "mcp",
                                         latency="100ms"))
    assert code == 0 and "binding:" not in out and "at a limit (>= 99% used): none" in out
    code, out, _ = run(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml", "--json", latency="100ms"))
    app = json.loads(out)["applications"][0]
    assert app["binding"] == ["accuracy"] and app["binding_basis"] == "relaxation" and app["at_limit"] == []


@pytest.mark.parametrize("edit, field, expect", [
    (lambda row: row.pop("energy_j"), "comparison[1].energy_j", "missing; expected a number or null"),
    (lambda row: row.pop("feasible"), "comparison[1].feasible", "missing; expected true or false"),
    (lambda row: row.update(fin_saving="abc"), "comparison[1].fin_saving", "is 'abc'; expected a number or null"),
    (lambda row: row.update(solver=5), "comparison[1].solver", "is 5; expected a string"),
    (lambda row: row.update(notes=None), "comparison[1].notes", "expected a list"),
    (lambda row: row.update(latency_s="3ms"), "comparison[1].latency_s", "expected a number or null"),
])
def test_show_refuses_a_hand_edited_comparison_in_one_line(capsys, paper, tmp_path, edit, field, expect):
    plan = tmp_path / "plan.json"
    assert run(capsys, "plan", paper / "scenario.yaml", "--compare", "-o", plan)[0] == 0
    doc = json.loads(plan.read_text())
    edit(doc["comparison"][1])
    plan.write_text(json.dumps(doc))
    line = bad(capsys, "show", plan, expect=[str(plan), field, expect])
    assert "Traceback" not in line


@pytest.mark.parametrize("path, value", [
    (("applications", 0, "constraints", "max_latency_s"), "5ms"),
    (("applications", 0, "rate_hz"), "abc"),
    (("applications", 0, "transfers", 0, "bytes"), None),
    (("totals", "energy_j"), None),
    (("totals",), 5),
])
def test_show_refuses_other_mistyped_fields_it_prints(capsys, paper, tmp_path, path, value):
    plan = tmp_path / "plan.json"
    assert run(capsys, "plan", paper / "scenario.yaml", "-o", plan)[0] == 0
    doc = json.loads(plan.read_text())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    plan.write_text(json.dumps(doc))
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    bad(capsys, "show", plan, expect=[field])


def test_times_of_a_second_or_more_are_shown_in_seconds(capsys):
    from finplan.cli.show import duration, print_comparison

    assert duration(8.21) == "8.21 s" and duration(0.0123) == "12.3 ms" and duration(0.9999) == "1 s"
    row = {"solver": "milp", "application": "a", "feasible": True, "energy_j": 1.0, "latency_s": 0.001,
           "accuracy": 0.9, "placement": "x", "final_exit": "e", "fin_saving": 0.0}
    print_comparison([row], {"milp": 8.21})
    out = capsys.readouterr().out
    assert "8.21 s" in out and "e+03" not in out


def test_a_skipped_solver_is_a_footnote_not_a_wide_cell(capsys):
    from finplan.cli.show import print_comparison

    rows = []
    for solver in ("fin", "milp"):
        for app in ("a", "b"):
            rows.append({"solver": solver, "application": app, "feasible": True, "energy_j": 1.0, "latency_s": 0.001,
                         "accuracy": 0.9, "placement": "x", "final_exit": "e", "fin_saving": 0.0})
    skipped = ("instance too large for the exhaustive solver: 60,466,176 placements to enumerate, over the limit of "
               "2,000,000; use --solver milp (exact) or fin")
    rows.insert(2, {"solver": "exhaustive", "skipped": skipped})
    print_comparison(rows, {"fin": 0.001, "milp": 0.002})
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(line for line in lines if line.strip().startswith("exhaustive"))
    assert re.search(r"exhaustive\s+skipped \(1\)\s*$", row), row
    assert f"(1) exhaustive: {skipped}" in lines
    widths = {len(line.rstrip()) for line in lines if re.match(r"\s+(fin|milp)\s", line)}
    assert max(widths) < 110, out  # the table stays as narrow as without the skipped row


def test_the_paper_example_readme_uses_no_deprecated_flag():
    from partition_helpers import PAPER

    text = (PAPER / "README.md").read_text()
    assert "--reproducible" not in text and "-o plan.json" in text


def test_plan_refuses_a_card_with_a_mistyped_block_field(capsys, paper):
    doc = json.loads((paper / "b-alexnet.json").read_text())
    doc["blocks"][0]["params"] = 1000  # meant params_bytes: it would never count against memory_bytes
    (paper / "b-alexnet.json").write_text(json.dumps(doc))
    bad(capsys, *shortcut(paper / "b-alexnet.json", paper / "network.yaml"),
        expect=["b-alexnet.json", "blocks[0].params", "unknown field", "params_bytes"])


def test_the_summary_says_where_the_energy_comes_from(capsys):
    """Every node of the paper's network is an analytic model: the summary must call it an estimate."""
    code, out, _ = run(capsys, "plan", MULTI.parent / "paper" / "scenario.yaml")
    assert code == 0
    line = next(line for line in out.splitlines() if "energy basis" in line)
    assert "ESTIMATE" in line and "device compute model" in line and "link J/bit model" in line
