"""The closed-loop report: fields, bases, relative errors and warnings."""
from __future__ import annotations

import json

import pytest

from finplan.deploy.deployment import load_deployment
from finplan.deploy.emit import emit
from finplan.deploy.executor import run_local
from finplan.deploy.report import build_report, relative_error


@pytest.fixture(scope="module")
def report(deployments, inputs):
    folder, _, _ = deployments["three-dynamic"]
    x, y, _ = inputs
    m = run_local(folder, x, y, batch_size=4)
    return build_report(m, load_deployment(folder)), m


def test_report_fields(report):
    r, m = report
    assert r["schema"] == "finplan.run-report/1" and r["engine"] == "local" and r["samples"] == 96
    assert r["accuracy"] == pytest.approx(float((m.predictions == m.labels).mean()))
    assert sum(r["exit_counts"].values()) == 96 and set(r["exit_rates"]) == {"exit1", "exit2"}
    assert r["latency_s"]["p50"] <= r["latency_s"]["p90"] <= r["latency_s"]["p99"] <= r["latency_s"]["max"]
    assert set(r["nodes"]) == {"device", "edge", "cloud"}
    assert set(r["links"]) == {"device->edge", "edge->cloud"}
    metrics = {row["metric"] for row in r["comparison"]}
    for expected in ("accuracy", "exit_rate[exit1]", "exit_rate[exit2]", "latency_mean", "busy_s[edge]",
                     "energy_j[cloud]", "bytes[device->edge]", "compute_energy_j", "transfer_energy_j", "energy_j"):
        assert expected in metrics
    json.dumps(r, allow_nan=False)  # --json must be valid JSON


def test_rows_carry_prediction_relative_error_and_basis(report):
    r, _ = report
    rows = {row["metric"]: row for row in r["comparison"]}
    row = rows["bytes[device->edge]"]
    assert row["relative_error"] == pytest.approx(relative_error(row["measured"], row["predicted"]))
    # analytic nodes (compute.power_w): energy is an estimate, never shown as measured or derived
    assert rows["energy_j[edge]"]["basis"] == "estimated"
    assert r["nodes"]["edge"]["energy"]["energy_j"] == pytest.approx(5.0 * 2 * r["nodes"]["edge"]["busy_s_total"])
    for row in r["comparison"]:
        assert row["warn"] == any(w.startswith(row["metric"] + ":") for w in r["warnings"])


def test_exit_rate_warning_uses_points(report, deployments):
    r, m = report
    dep = load_deployment(deployments["three-dynamic"][0])
    measured = r["exit_rates"]["exit1"]
    dep.application["predicted"]["exit_rates"] = {"exit1": measured + 0.01, "exit2": 1 - measured - 0.01}
    quiet = {row["metric"]: row for row in build_report(m, dep)["comparison"]}
    assert not quiet["exit_rate[exit1]"]["warn"]
    dep.application["predicted"]["exit_rates"] = {"exit1": measured + 0.05, "exit2": 1 - measured - 0.05}
    loud = {row["metric"]: row for row in build_report(m, dep)["comparison"]}
    assert loud["exit_rate[exit1]"]["warn"] and loud["exit_rate[exit1]"]["difference"] == pytest.approx(-0.05)


def test_energy_derived_from_profile_counts(workdir, tiny, plan_factory, inputs):
    from helpers import fake_profile, network_doc

    profile = workdir / "report.profile.json"
    profile.write_text(json.dumps(fake_profile(tiny[1])))
    out = workdir / "report-profile.deploy"
    emit(plan_factory(["device"] * 3, network=network_doc(profile=str(profile))), tiny[0], out)
    m = run_local(out, inputs[0][:10], inputs[1][:10])
    r = build_report(m, load_deployment(out))
    energy = r["nodes"]["device"]["energy"]
    # 10 samples x (3 blocks + final exit head) x 2 mJ each, as the profile says
    assert energy["basis"] == "derived" and energy["energy_j"] == pytest.approx(10 * 4 * 2e-3)
    assert energy["method"] == "power-model" and energy["profile_measured"] is False
