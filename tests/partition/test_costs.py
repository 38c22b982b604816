"""The cost model against the paper's spot values, and the cost sources (compute, profile)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from partition_helpers import PAPER
from finplan.errors import FinplanInputError
from finplan.partition.evaluate import evaluate
from finplan.partition.documents import (
    card_from_dict, load_card_file, network_from_dict, parse_duration_s, parse_fraction,
)
from finplan.partition.problem import Application, Options

# PAPER.md section 2: (placement, exit, energy J, latency ms)
SPOTS = [
    (["device"], "exit1", 0.01234, 2.056),
    (["device"] * 3, "exit2", 0.02153, 3.589),
    (["device"] * 5, "exit3", 0.03938, 6.564),
    (["device", "device", "device", "cloud", "cloud"], "exit3", 0.08560, 3.694),
    (["device", "device", "edge", "edge", "edge"], "exit3", 0.08991, 2.947),
    (["device", "edge", "cloud", "cloud", "cloud"], "exit3", 0.19920, 2.240),
    (["device", "device", "cloud"], "exit2", 0.05112, None),
]


@pytest.mark.parametrize("placement, exit_, energy_j, latency_ms", SPOTS)
def test_paper_spot_values(paper_network, paper_cards, placement, exit_, energy_j, latency_ms):
    app = Application("a", paper_cards["b-alexnet"], "x", "device", 1.0, 0.0)
    ev = evaluate(app, paper_network, Options(), placement, exit_)
    # the paper prints 4 significant digits: agreement to its last digit, within 1e-5 J / 1e-4 ms of exact
    assert abs(ev.energy_j - energy_j) <= 5e-6 + 1e-12
    assert ev.energy_j == pytest.approx(ev.compute_energy_j + ev.transfer_energy_j, rel=1e-12)
    if latency_ms is not None:
        assert abs(ev.latency_s * 1e3 - latency_ms) <= 5e-4


def test_spot_values_exact_against_reference(paper_network, paper_cards, reference):
    app = Application("a", paper_cards["b-alexnet"], "x", "device", 1.0, 0.0)
    ev = evaluate(app, paper_network, Options(), ["device", "edge", "cloud", "cloud", "cloud"], "exit3")
    assert abs(ev.energy_j - reference["mcp_baseline_b_alexnet"]["energy_j"]) <= 1e-5
    assert ev.energy_j == pytest.approx(reference["mcp_baseline_b_alexnet"]["energy_j"], rel=1e-9)
    for vec in reference["optimum_vectors"]:
        opt = vec["optimum"]
        card = paper_cards[vec["model"]]
        exit_ = next(e.name for e in card.exits if e.after == opt["final_exit_after_block"] - 1)
        app = Application("a", card, "x", "device", 1.0, 0.0)
        ev = evaluate(app, paper_network, Options(), opt["placement"], exit_)
        assert abs(ev.energy_j - opt["energy_j"]) <= 1e-5
        assert abs(ev.latency_s - opt["latency_s"]) * 1e3 <= 1e-4
        assert abs(ev.transfer_energy_j - opt["transfer_energy_j"]) <= 1e-5


def test_transfer_formula_and_link_direction(paper_network, paper_cards):
    app = Application("a", paper_cards["b-alexnet"], "x", "device", 1.0, 0.0)
    ev = evaluate(app, paper_network, Options(), ["device", "edge", "edge"], "exit2")
    (t,) = ev.transfers
    bits = 8 * 186624
    assert t["from"] == "device" and t["to"] == "edge" and t["after_block"] == "block1"
    assert t["time_s"] == pytest.approx(bits * 1.78e-12, rel=1e-12)
    assert t["energy_j"] == pytest.approx(bits * 67e-9, rel=1e-12)
    back = evaluate(app, paper_network, Options(), ["device", "cloud", "edge"], "exit2")
    assert not back.feasible and any("no link cloud -> edge" in v for v in back.violations)


def test_cards_match_reference_data(paper_cards, reference):
    for name, card in paper_cards.items():
        ref = reference["models"][name]
        assert [b.flops for b in card.blocks] == ref["ops"]
        assert [b.output_bytes for b in card.blocks] == [x or 0 for x in ref["output_elements"]]
        assert [e.after + 1 for e in card.exits] == [e["after_block"] for e in ref["exits"]]
    assert load_card_file(PAPER / "b-alexnet-cifar100.json").exits[2].accuracy == 0.6032


def test_strict_and_non_strict(paper_network, paper_cards):
    card = paper_cards["b-alexnet"]
    ev_latency = 0.0020563636363636366
    strict = Application("a", card, "x", "device", ev_latency, 0.5637)
    ev = evaluate(strict, paper_network, Options(strict=True), ["device"], "exit1")
    assert not ev.feasible and len(ev.violations) == 2
    ev = evaluate(strict, paper_network, Options(strict=False), ["device"], "exit1")
    assert ev.feasible


def _profile(hash_, blocks, exits, scale):
    def part(name, after=None):
        d = {"name": name, "flops": 1.0, "output_bytes": 1.0, "params_bytes": 0.0,
             "latency_s": {"n": 3, "mean": scale, "p50": scale, "p90": scale, "p99": scale, "stdev": 0.0},
             "energy_j": {"value": 2 * scale, "method": "rapl", "measured": True}}
        if after:
            d["after"] = after
        return d
    return {"schema": "finplan.profile/1", "model": {"name": "m", "hash": hash_},
            "device": {"name": "d", "cpu": "c", "cores": 1, "execution_provider": "CPU", "onnxruntime_version": "1"},
            "session_options": {}, "flops_convention": "macs*2",
            "blocks": [part(b) for b in blocks], "exits": [part(e, a) for e, a in exits],
            "energy": {"method": "rapl", "measured": True}}


def _card(hash_="abc"):
    return {"schema": "finplan.model/1", "name": "m", "hash": hash_, "input_bytes": 10,
            "blocks": [{"name": "b1", "flops": 1e6, "output_bytes": 100}, {"name": "b2", "flops": 1e6, "output_bytes": 0}],
            "exits": [{"name": "e1", "after": "b1", "accuracy": 0.5, "flops": 10},
                      {"name": "e2", "after": "b2", "accuracy": 0.9, "flops": 10}]}


def test_costs_from_a_hardware_profile(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(_profile("abc", ["b1", "b2"], [("e1", "b1"), ("e2", "b2")], 0.001)))
    net = network_from_dict({"schema": "finplan.network/1", "nodes": [{"name": "n", "profile": "p.json"}]},
                            tmp_path / "net.yaml")
    card = card_from_dict(_card(), tmp_path / "card.json")
    app = Application("a", card, "card.json", "n", 1.0, 0.0)
    ev = evaluate(app, net, Options(), ["n", "n"], "e2")
    # two blocks and the final exit head, each 1 ms and 2 mJ from the profile (not from flops)
    assert ev.latency_s == pytest.approx(0.003)
    assert ev.energy_j == pytest.approx(0.006)


def test_profile_hash_mismatch_names_both_files(tmp_path):
    from finplan.partition.documents import check_application
    (tmp_path / "p.json").write_text(json.dumps(_profile("OTHER", ["b1", "b2"], [], 0.001)))
    net = network_from_dict({"schema": "finplan.network/1", "nodes": [{"name": "n", "profile": "p.json"}]},
                            tmp_path / "net.yaml")
    card = card_from_dict(_card(), tmp_path / "card.json")
    app = Application("a", card, "card.json", "n", 1.0, 0.0)
    with pytest.raises(FinplanInputError) as info:
        check_application(app, net, Options())
    assert "p.json" in str(info.value) and "card.json" in str(info.value)


def test_units_parsing():
    assert parse_duration_s("5ms") == pytest.approx(0.005)
    assert parse_duration_s("500us") == pytest.approx(0.0005)
    assert parse_duration_s("0.005") == pytest.approx(0.005)
    assert parse_duration_s(0.005) == 0.005
    assert parse_duration_s("2 s") == 2.0
    assert parse_fraction("80%") == pytest.approx(0.8)
    for bad in ("5 parsecs", "-1ms", "0", "nan"):
        with pytest.raises(FinplanInputError):
            parse_duration_s(bad)
    with pytest.raises(FinplanInputError):
        parse_fraction("1.5")


def test_partition_never_imports_onnx_or_torch():
    code = ("import sys, finplan.partition.solve, finplan.partition.plan, finplan.partition.draw, "
            "finplan.partition.fin, finplan.partition.milp, finplan.partition.exhaustive;"
            "bad = [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
