"""Paths and builders shared by the partition tests (fixtures live in conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

from finplan.cli.main import main
from finplan.partition.context import contexts
from finplan.partition.problem import Application, Options, Scenario

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "examples" / "paper"
MULTI = ROOT / "examples" / "multi"
DATA = Path(__file__).parent / "data"
MODELS = ("b-alexnet", "b-resnet", "b-lenet")


def paper_ctx(network, card, max_latency_s, min_accuracy, options=None, rate_hz=None):
    app = Application("app", card, f"{card.name}.json", "device", max_latency_s, min_accuracy, rate_hz)
    return contexts(Scenario(network, (app,), options or Options()))[0]


def lenet_profile(model_hash: str, block_s: float) -> dict:
    """A hardware profile of a 3-block B-LeNet whose blocks all take ``block_s`` and ``block_s`` joules."""
    return {"schema": "finplan.profile/1", "model": {"name": "b-lenet", "hash": model_hash},
            "device": {"name": "d", "cpu": "c", "cores": 1, "execution_provider": "CPU", "onnxruntime_version": "1"},
            "session_options": {}, "flops_convention": "x",
            "blocks": [{"name": f"block{i}", "flops": 1, "output_bytes": 1, "params_bytes": 0,
                        "latency_s": {"n": 1, "mean": block_s, "p50": block_s, "p90": block_s, "p99": block_s,
                                      "stdev": 0},
                        "energy_j": {"value": block_s, "method": "rapl", "measured": True}} for i in (1, 2, 3)],
            "exits": [], "energy": {"method": "rapl", "measured": True}}


def run(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # --fail-infeasible leaves through sys.exit
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def bad(capsys, *args, expect=()):
    """A bad-input run: exit 2, one line naming what is wrong, no traceback, and no -o file written."""
    args = [str(a) for a in args]
    target = Path(args[args.index("-o") + 1]) if "-o" in args else None
    code, out, err = run(capsys, *args)
    assert target is None or not target.exists(), f"{target} was written"
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finplan: error: "), err
    assert "Traceback" not in out + err
    for word in expect:
        assert word in lines[0], lines[0]
    return lines[0]


def write_network(path, nodes=None, links=None):
    doc = {"schema": "finplan.network/1",
           "nodes": nodes or [{"name": "device", "tier": "mobile", "compute": {"ops_per_s": 11e9, "power_w": 6}},
                              {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 153.4e9, "power_w": 140}}],
           "links": links if links is not None else [{"from": "device", "to": "edge", "bandwidth_bps": 1e9,
                                                       "latency_s": 0, "energy_j_per_bit": 6.7e-8}]}
    path.write_text(json.dumps(doc))
    return path


def shortcut(card, net, *extra, source="device", latency="5ms", accuracy="0.8"):
    return ["plan", "--model", card, "--network", net, "--source", source, "--max-latency", latency,
            "--min-accuracy", accuracy, *extra]
