"""Build plan documents by hand for the tiny branchy model (3 blocks, exits after 1 and 3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TINY_BLOCKS = ("block1", "block2", "block3")
TINY_EXITS = {"exit1": "block1", "exit2": "block3"}
# bytes per sample of the tiny model's boundaries (float32): x 1x8x8, block1 4x4x4, block2 4x4x4, block3 8x2x2
TINY_BYTES = {"input": 256, "block1": 256, "block2": 256, "block3": 128}


def network_doc(nodes=("device", "edge", "cloud"), *, profile: str | None = None) -> dict:
    doc_nodes = []
    for i, name in enumerate(nodes):
        node = {"name": name, "tier": ("mobile", "edge", "cloud")[i % 3]}
        if profile is not None and i == 0:
            node["profile"] = profile
        else:
            node["compute"] = {"ops_per_s": 1e9 * (10 ** i), "power_w": 5.0 * (i + 1)}
        doc_nodes.append(node)
    links = []
    for a in nodes:
        for b in nodes:
            if a != b:
                links.append({"from": a, "to": b, "bandwidth_bps": 1e8, "latency_s": 0.001, "energy_j_per_bit": 1e-8})
    return {"schema": "finplan.network/1", "nodes": doc_nodes, "links": links}


def plan_doc(placement: list[str], *, model_hash: str | None, thresholds: dict[str, float] | None = None,
             final_exit: str | None = None, feasible: bool = True, name: str = "tiny",
             network: dict | None = None, exit_rates: dict[str, float] | None = None,
             blocks: tuple[str, ...] = TINY_BLOCKS, exits_after: dict[str, str] | None = None,
             bytes_after: dict[str, float] | None = None) -> dict:
    """A finplan.plan/1 document with the planner's fields; predictions are simple made-up
    numbers (the report tests only need them to be present and finite). ``blocks``,
    ``exits_after`` (exit -> block) and ``bytes_after`` (block -> bytes per sample crossing the
    cut after it: the live set's sum) describe another model than the tiny one."""
    exits_after = exits_after or TINY_EXITS
    bytes_after = bytes_after or TINY_BYTES
    thresholds = thresholds or {}
    final_exit = final_exit or ("exit2" if len(placement) == 3 else "exit1")
    mode = "dynamic" if thresholds else "static"
    rates = exit_rates or ({final_exit: 1.0} if not thresholds else {**{k: 0.5 for k in thresholds}, final_exit: 0.5})
    per_node: dict[str, dict] = {}
    for block, node in zip(blocks, placement):
        entry = per_node.setdefault(node, {"blocks": [], "exits": [], "energy_j": 0.0, "busy_s": 0.0,
                                           "params_bytes": 1000.0, "utilization": None})
        entry["blocks"].append(block)
        entry["energy_j"] += 1e-4
        entry["busy_s"] += 1e-4
    transfers = []
    for i in range(1, len(placement)):
        if placement[i] != placement[i - 1]:
            prob = 1.0 - sum(r for e, r in rates.items() if e != final_exit and blocks.index(exits_after[e]) < i)
            transfers.append({"from": placement[i - 1], "to": placement[i], "after_block": blocks[i - 1],
                              "bytes": bytes_after[blocks[i - 1]], "probability": prob, "time_s": 0.001,
                              "energy_j": prob * bytes_after[blocks[i - 1]] * 8e-8})
    return {
        "schema": "finplan.plan/1",
        "solver": {"name": "hand", "parameters": {}, "solve_time_s": 0.0},
        "network": network or network_doc(),
        "options": {"mode": mode, "first_block_at_source": True, "strict": True},
        "applications": [{
            "name": name,
            "model": {"name": "tiny", "hash": model_hash, "card": "tiny.card.json"},
            "source": placement[0],
            "constraints": {"max_latency_s": 1.0, "min_accuracy": 0.0, "strict": True},
            "feasible": feasible,
            "placement": [{"block": b, "node": n} for b, n in zip(blocks, placement)],
            "final_exit": final_exit,
            "active_exits": [{"name": k, "after": TINY_EXITS[k], "threshold": v} for k, v in thresholds.items()],
            "thresholds": dict(thresholds),
            "predicted": {"energy_j": 3e-4, "compute_energy_j": 2.5e-4, "transfer_energy_j": 5e-5, "latency_s": 0.003,
                          "expected_latency_s": 0.002, "accuracy": 0.5, "exit_rates": rates},
            "per_node": per_node,
            "transfers": transfers,
            "binding": [],
            **({} if feasible else {"reason": "latency 5 ms is over the 1 ms limit"}),
        }],
    }


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


def synthetic_inputs(n: int, *, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int64)
    return x, y


# name -> (placement, early exits active?)
LAYOUTS = {
    "one-static": (["device"] * 3, False),
    "one-dynamic": (["device"] * 3, True),
    "two-static": (["device", "edge", "edge"], False),
    "two-dynamic": (["device", "device", "edge"], True),
    "three-static": (["device", "edge", "cloud"], False),
    "three-dynamic": (["device", "edge", "cloud"], True),
    "revisit-dynamic": (["device", "edge", "device"], True),
}


def fake_profile(model_hash):
    part = lambda name, **extra: {"name": name, "flops": 1000, "output_bytes": 256, "params_bytes": 100, **extra,
                                  "latency_s": {"n": 5, "mean": 1e-4, "p50": 1e-4, "p90": 1e-4, "p99": 1e-4, "stdev": 0},
                                  "energy_j": {"value": 2e-3, "method": "power-model", "measured": False}}
    return {"schema": "finplan.profile/1", "model": {"name": "tiny", "hash": model_hash},
            "device": {"name": "this", "cpu": "x", "cores": 2, "execution_provider": "CPU", "onnxruntime_version": "1"},
            "session_options": {}, "flops_convention": "mac=2",
            "blocks": [part(f"block{i}") for i in (1, 2, 3)],
            "exits": [part("exit1", after="block1"), part("exit2", after="block3")],
            "energy": {"method": "power-model", "measured": False}}


def cli(capsys, *argv):
    """Run ``finplan ARGV`` in-process: (exit code, stdout, stderr)."""
    from finplan.cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(code, out, err, *fragments, exit_code: int = 2):
    """finplan's bad-input rule: exit 2 (1 for a fault of the environment), one line on stderr
    holding every fragment, no traceback."""
    assert code == exit_code, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in out + err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- models whose cuts carry several tensors

def _skip_inputs(n, seed=3):
    return {"x": np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)}


def _live_set_models():
    from onnx_builders import text_inputs, tiny_branchy_model, tiny_text_model

    return {
        # name -> (builder, inputs, placement, exits made active before the final one)
        "text": (lambda: tiny_text_model(layers=3), lambda n: text_inputs(n, seed=5), ["device", "edge", "cloud"],
                 ["exit1", "exit2"]),
        "text-mask-inside": (lambda: tiny_text_model(layers=3, mask_inside=True), lambda n: text_inputs(n, seed=6),
                             ["device", "device", "edge"], ["exit1", "exit2"]),
        "skip": (lambda: tiny_branchy_model(skip_to_block3=True), _skip_inputs, ["device", "edge", "cloud"], ["exit1"]),
    }


LIVE_SET_MODELS = ("skip", "text", "text-mask-inside")
LIVE_SET_SAMPLES = 48


def live_set_deployment(work: Path, name: str, n: int = LIVE_SET_SAMPLES) -> dict:
    """Emit model ``name`` of LIVE_SET_MODELS into ``work`` with a plan whose thresholds sit at the
    median confidence of each early exit (samples leave at every exit), whose exit rates are the
    ones the whole model gives on the inputs, and whose transfers are priced at the live sets'
    bytes. Returns folder, model path, inputs (name -> array), .npz path, plan doc, live sets,
    contract and rates."""
    import onnx
    import onnxruntime as ort

    from finplan.contract import model_hash, read_contract
    from finplan.deploy.emit import emit
    from finplan.deploy.policy import max_softmax
    from finplan.deploy.verify import direct_exits
    from finplan.onnx_parts import boundaries

    builder, make_inputs, placement, early = _live_set_models()[name]
    model = builder()
    path = work / "model.onnx"
    onnx.save(model, path)
    contract = read_contract(model)
    x = make_inputs(n)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([e.name for e in contract.exits], session.run([e.output for e in contract.exits], x)))
    thresholds = {exit_name: float(np.median(max_softmax(outputs[exit_name])[0])) for exit_name in early}
    final = contract.exits[-1].name
    active = [(e, thresholds[e]) for e in early] + [(final, None)]
    expected, _ = direct_exits(outputs, active)
    rates = {e: expected.count(e) / n for e, _ in active}
    live = boundaries(model, contract)
    blocks = tuple(b.name for b in contract.blocks)
    bytes_after = {"input": sum(t.bytes_per_sample for t in live[0]),
                   **{b: sum(t.bytes_per_sample for t in live[k]) for k, b in enumerate(blocks, start=1)}}
    doc = plan_doc(placement, model_hash=model_hash(model), thresholds=thresholds, final_exit=final, exit_rates=rates,
                   blocks=blocks, exits_after={e.name: e.after for e in contract.exits}, bytes_after=bytes_after)
    plan = write_json(work / "plan.json", doc)
    folder = work / "deploy"
    emit(plan, path, folder)
    np.savez(work / "data.npz", **x)
    return {"folder": folder, "model": path, "x": x, "doc": doc, "live": live, "contract": contract,
            "data": work / "data.npz", "rates": rates, "name": name}
