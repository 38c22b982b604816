"""Deployments of models whose cuts carry several tensors (issue 11): a two-input text model
(int64 ids + an int64 mask read by every layer, or a float mask computed once in block 1) and a
conv net with a skip from block 1 to block 3, emitted on 2-3 nodes.

What must hold: the chained parts equal the whole model (verify's max abs diff <= 1e-5 and no
exit decision differs), the run's exit rates are the plan's (computed here from the whole
model's exit scores with the plan's thresholds), and every transfer carries exactly the live
set: the measured bytes per sample sent are the live set's, tensor by tensor."""
from __future__ import annotations

import json

import pytest

from finplan.cli.main import main
from finplan.deploy.executor import LocalExecutor
from finplan.deploy.manifest import load_manifest
from finplan.deploy.verify import verify

from .helpers import LIVE_SET_MODELS, LIVE_SET_SAMPLES, live_set_deployment

N = LIVE_SET_SAMPLES


@pytest.fixture(scope="module", params=sorted(LIVE_SET_MODELS))
def case(request, tmp_path_factory):
    return live_set_deployment(tmp_path_factory.mktemp(request.param), request.param)


def test_the_manifests_carry_the_live_sets(case):
    live, contract = case["live"], case["contract"]
    doc = json.loads((case["folder"] / "deployment.json").read_text())
    assert [t["name"] for t in doc["inputs"]] == list(contract.inputs)
    seen_hops = 0
    for node in doc["nodes"]:
        manifest = load_manifest(case["folder"] / node)
        for stage in manifest.stages:
            last = contract.block_index(stage.blocks[-1]) + 1
            if stage.next is not None:
                seen_hops += 1
                assert stage.next.names == tuple(t.name for t in live[last])
                assert stage.next.tensor == contract.blocks[last - 1].output
        for entry in manifest.entries:
            stage = manifest.stages[entry.stage]
            first = contract.block_index(stage.blocks[0])
            assert entry.names == tuple(t.name for t in live[first])
            assert {t.name for t in stage.inputs} <= set(entry.names)
    assert seen_hops >= 2
    if case["name"] != "text-mask-inside":  # that layout keeps blocks 1-2 on one node
        assert any(len(s) > 1 for s in live[1:-1]), "the fixture should carry several tensors across a cut"


def test_chained_parts_equal_the_whole_model(case):
    result = verify(case["folder"], case["model"], case["x"], batch_size=16)
    assert result.passed and result.max_diff <= 1e-5 and result.decision_mismatches == 0, result.to_dict()
    assert result.samples == N


def test_run_exit_rates_are_the_plans_and_bytes_are_the_live_sets(case):
    executor = LocalExecutor(case["folder"])
    measured = executor.run(case["x"], batch_size=8)
    counts = {n: measured.exit_names.count(n) / N for n in case["rates"]}
    assert counts == case["rates"]
    live, contract = case["live"], case["contract"]
    app = case["doc"]["applications"][0]
    for transfer in app["transfers"]:
        key = f"{transfer['from']}->{transfer['to']}"
        k = contract.block_index(transfer["after_block"]) + 1
        sent = measured.link_samples[key]
        assert sent > 0
        assert measured.link_bytes[key] == sent * sum(t.bytes_per_sample for t in live[k]) == sent * transfer["bytes"]
        assert measured.link_tensor_bytes[key] == {t.name: sent * t.bytes_per_sample for t in live[k]}


def test_the_cli_runs_and_verifies_with_named_inputs(case, capsys):
    folder, data = str(case["folder"]), str(case["data"])
    assert main(["verify", folder, "--model", str(case["model"]), "--data", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
    assert main(["run", folder, "--data", data, "--batch-size", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exit_rates"] == case["rates"]
    for key, link in report["links"].items():
        assert link["bytes_per_sample_sent"] == link["predicted_bytes_per_sample"], (key, link)
