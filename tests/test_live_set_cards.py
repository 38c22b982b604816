"""Live sets in model cards and plans: a card's block ``output_bytes`` is its live set's sum, the
planner charges that sum, and the plan's transfers list the tensors; hand-written one-number
cards (the paper's) keep working."""
from __future__ import annotations

import copy

import pytest

from finplan.errors import FinplanInputError
from finplan.partition.plan import plan_document, validate_plan
from finplan.partition.documents import card_from_dict, network_from_dict
from finplan.partition.problem import Application, Options, Scenario
from finplan.partition.solve import solve

NETWORK = {"schema": "finplan.network/1",
           "nodes": [{"name": "device", "tier": "mobile", "compute": {"ops_per_s": 1e8, "power_w": 2}},
                     {"name": "cloud", "tier": "cloud", "compute": {"ops_per_s": 1e11, "power_w": 20}}],
           "links": [{"from": "device", "to": "cloud", "bandwidth_bps": 1e8, "latency_s": 0.001,
                      "energy_j_per_bit": 1e-9}]}
# a mask (48 bytes) crosses both cuts next to the layer output (192 bytes)
CARD = {"schema": "finplan.model/1", "name": "text", "input_bytes": 96,
        "blocks": [{"name": "b1", "flops": 1e6, "output_bytes": 240,
                    "live_set": [{"tensor": "attention_mask", "bytes": 48}, {"tensor": "layer1", "bytes": 192}]},
                   {"name": "b2", "flops": 1e9, "output_bytes": 240,
                    "live_set": [{"tensor": "attention_mask", "bytes": 48}, {"tensor": "layer2", "bytes": 192}]},
                   {"name": "b3", "flops": 1e9, "output_bytes": 192}],
        "exits": [{"name": "e1", "after": "b1", "accuracy": 0.5}, {"name": "e3", "after": "b3", "accuracy": 0.9}]}


def _plan(card_doc):
    app = Application("a", card_from_dict(card_doc), "text.json", "device", 10.0, 0.8, 1.0)
    scenario = Scenario(network_from_dict(NETWORK), (app,), Options())
    doc = plan_document(scenario, solve(scenario, "exhaustive"))
    validate_plan(doc)
    return doc["applications"][0]


def test_plan_transfers_list_the_live_set_and_charge_its_sum():
    entry = _plan(CARD)
    cut = [t for t in entry["transfers"] if t["after_block"] != "input"]
    assert cut, entry["placement"]  # b1 on the device, the heavy blocks in the cloud
    assert cut[0]["bytes"] == 240
    assert cut[0]["tensors"] == [{"tensor": "attention_mask", "bytes": 48}, {"tensor": f"layer{cut[0]['after_block'][1]}",
                                                                             "bytes": 192}]
    # the same card without the per-tensor list plans the same, byte for byte, less the detail
    plain = copy.deepcopy(CARD)
    for block in plain["blocks"]:
        block.pop("live_set", None)
    other = _plan(plain)
    assert [{k: v for k, v in t.items() if k != "tensors"} for t in entry["transfers"]] == other["transfers"]
    assert other["predicted"] == entry["predicted"] and "tensors" not in other["transfers"][-1]


def test_a_live_set_that_does_not_add_up_is_refused():
    bad = copy.deepcopy(CARD)
    bad["blocks"][0]["output_bytes"] = 192
    with pytest.raises(FinplanInputError, match=r"blocks\[0\]\.live_set.*adds up to 240.*output_bytes is 192"):
        card_from_dict(bad, "text.json")
    bad = copy.deepcopy(CARD)
    bad["blocks"][0]["live_set"][0] = {"bytes": 48}
    with pytest.raises(FinplanInputError, match=r"live_set\[0\]"):
        card_from_dict(bad, "text.json")


def test_paper_cards_keep_one_number_per_block():
    from pathlib import Path

    import finplan
    examples = Path(finplan.__file__).resolve().parents[2] / "examples"
    cards = sorted(examples.rglob("*.json"))
    loaded = 0
    for path in cards:
        text = path.read_text()
        if '"finplan.model/1"' in text:
            from finplan.partition.documents import load_card_file
            card = load_card_file(path)
            assert all(b.live_set == () for b in card.blocks)
            loaded += 1
    assert loaded >= 1
