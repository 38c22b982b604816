"""finplan run's audit: accurate link emulation (intended and actual delay), predicted latency
percentiles, energy labelled by how it was obtained, and tolerance warnings that fire."""
from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import time

import pytest

from finplan.cli.main import main
from finplan.deploy.deployment import load_deployment
from finplan.deploy.emit import emit
from finplan.deploy.executor import LocalExecutor, emulate_delay, run_local
from finplan.deploy.report import build_report
from finplan.deploy.report_latency import mixture_percentile, predicted_latency

# the test plans' links: 256 bytes per sample over 1e8 bit/s with 1 ms latency
PER_HOP_S = 256 * 8 / 1e8 + 0.001


def _rows(report: dict) -> dict:
    return {row["metric"]: row for row in report["comparison"]}


# ---------------------------------------------------------------- link emulation

def test_emulate_delay_never_ends_early_and_beats_sleep():
    """A sub-microsecond transfer: time.sleep overshoots it by tens of microseconds, the emulator
    by far less (compared in the same run, so the machine's load applies to both)."""
    delay_s = 1e-7
    emulated, slept = [], []
    for _ in range(30):
        emulated.append(emulate_delay(delay_s))
        start = time.perf_counter()
        time.sleep(delay_s)
        slept.append(time.perf_counter() - start)
    assert min(emulated) >= delay_s
    assert statistics.median(emulated) - delay_s < 0.5 * (statistics.median(slept) - delay_s)
    assert emulate_delay(0.0) == 0.0
    assert emulate_delay(3e-3) >= 3e-3  # sleeps for the bulk, spins the rest: still never short


def test_executor_records_intended_and_actual_delay(workdir, plan_factory, tiny, inputs):
    """Links so fast that the model says nanoseconds: the actual delay is recorded beside the
    intended one, is never less, and is far closer to it than time.sleep could be."""
    from helpers import network_doc

    network = network_doc()
    for link in network["links"]:
        link.update(bandwidth_bps=1e15, latency_s=0.0)
    out = workdir / "fast-links.deploy"
    emit(plan_factory(["device", "edge", "cloud"], network=network), tiny[0], out)
    m = LocalExecutor(out, emulate_links=True).run(inputs[0][:20], batch_size=1)
    key = "device->edge"
    intended, actual = m.link_delay_s[key], m.link_delay_actual_s[key]
    assert intended == pytest.approx(20 * 256 * 8 / 1e15)
    assert actual >= intended
    slept = []
    for _ in range(20):
        start = time.perf_counter()
        time.sleep(256 * 8 / 1e15)
        slept.append(time.perf_counter() - start)
    assert actual - intended < 0.5 * sum(slept)
    report = build_report(m, load_deployment(out))
    assert report["links"][key]["actual_delay_s_total"] == actual
    assert report["links"][key]["intended_delay_s_total"] == intended
    assert report["link_emulation"]["excess_s_per_inference"] == pytest.approx(
        (sum(m.link_delay_actual_s.values()) - sum(m.link_delay_s.values())) / 20)


def test_emulation_error_warns_only_when_it_matters(deployments, inputs):
    folder = deployments["three-static"][0]
    m = run_local(folder, inputs[0][:4], emulate_links=True)
    dep = load_deployment(folder)
    # built from recorded totals, not this run's timing (a loaded machine may preempt a spin)
    exact = dataclasses.replace(m, link_delay_actual_s=dict(m.link_delay_s))
    report = build_report(exact, dep)
    assert report["link_emulation"]["excess_s_per_inference"] == 0.0
    assert not any(w.startswith("link emulation") for w in report["warnings"])
    # an engine that waited 1 s longer per transfer than the link model: the latency is the emulator's
    slow = dataclasses.replace(m, link_delay_actual_s={k: v + 4 * 1.0 for k, v in m.link_delay_s.items()})
    warnings = [w for w in build_report(slow, dep)["warnings"] if w.startswith("link emulation")]
    assert len(warnings) == 1 and "beyond the link model" in warnings[0]
    # an engine that records only the intended delay (Ray): reported as not recorded, no warning
    ray_like = dataclasses.replace(m, link_delay_actual_s=None)
    report = build_report(ray_like, dep)
    assert report["link_emulation"]["actual_delay_s_per_inference"] is None
    assert report["links"]["device->edge"]["actual_delay_s_total"] is None


def test_cli_run_with_emulated_links_reports_intended_and_actual(capsys, deployments, inputs):
    folder = deployments["three-static"][0]
    code = main(["run", str(folder), "--data", str(inputs[2]), "--limit", "6", "--emulate-links", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["links_emulated"] is True
    for key in ("device->edge", "edge->cloud"):
        link = report["links"][key]
        assert link["intended_delay_s_total"] == pytest.approx(6 * PER_HOP_S)
        assert link["actual_delay_s_total"] >= link["intended_delay_s_total"]
        assert link["emulation_error_s_total"] >= 0
    emulation = report["link_emulation"]
    assert emulation["intended_delay_s_per_inference"] == pytest.approx(2 * PER_HOP_S)
    assert emulation["actual_delay_s_per_inference"] >= emulation["intended_delay_s_per_inference"]
    assert report["latency_s"]["p50"] >= 2 * PER_HOP_S  # every input crossed both links


# ---------------------------------------------------------------- predicted percentiles

def test_mixture_percentile():
    per_exit = {"early": 0.001, "final": 0.003}
    assert [mixture_percentile(per_exit, {"early": 0.6, "final": 0.4}, q) for q in (50, 90, 99)] == [0.001, 0.003, 0.003]
    # plan rates are rounded: 0.5 must still count as reaching the median
    assert mixture_percentile(per_exit, {"early": 0.4999999999999, "final": 0.5000000000001}, 50) == 0.001
    assert mixture_percentile(per_exit, {"early": 0.2, "final": 0.8}, 50) == 0.003
    assert mixture_percentile(None, {"early": 1.0}, 50) is None


def test_percentiles_from_the_plan_totals(deployments, inputs):
    """One early exit: latency_s is the final exit's path, expected_latency_s fixes the early one's."""
    folder = deployments["three-dynamic"][0]
    m = run_local(folder, inputs[0][:16], inputs[1][:16])
    dep = load_deployment(folder)
    dep.application["predicted"].update(latency_s=0.005, expected_latency_s=0.003,
                                        exit_rates={"exit1": 0.5, "exit2": 0.5})
    # exit1: (0.003 - 0.5 x 0.005) / 0.5 = 1 ms; exit2: 5 ms, of which 2 ms are its two transfers
    assert predicted_latency(dep).per_exit_s == pytest.approx({"exit1": 0.001, "exit2": 0.005})
    plain = build_report(m, dep)
    assert plain["predicted_latency_s"]["method"] == "plan totals"
    assert plain["predicted_latency_s"]["per_exit"] == pytest.approx({"exit1": 0.001, "exit2": 0.003})
    rows = _rows(plain)
    assert rows["latency_p50"]["predicted"] == pytest.approx(0.001)
    assert rows["latency_p90"]["predicted"] == pytest.approx(0.003)
    assert rows["latency_p99"]["predicted"] == pytest.approx(0.003)
    for q in (50, 90, 99):
        row = rows[f"latency_p{q}"]
        assert row["measured"] == plain["latency_s"][f"p{q}"]
        assert row["relative_error"] == pytest.approx((row["measured"] - row["predicted"]) / row["predicted"])
    emulated = build_report(dataclasses.replace(m, emulate_links=True), dep)
    assert _rows(emulated)["latency_p90"]["predicted"] == pytest.approx(0.005)  # transfers included


def test_percentiles_from_the_plans_per_exit_latencies(deployments):
    """The planner writes each exit's path latency; the report takes them as they are, and falls
    back to the two totals only for plans without them."""
    dep = copy.deepcopy(load_deployment(deployments["three-dynamic"][0]))
    predicted = dep.application["predicted"]
    predicted.update(exit_rates={"exit1": 0.25, "exit2": 0.75}, exit_latency_s={"exit1": 0.002, "exit2": 0.007},
                     latency_s=0.007, expected_latency_s=0.25 * 0.002 + 0.75 * 0.007)
    derived = predicted_latency(dep)
    assert derived.method == "plan" and derived.per_exit_s == {"exit1": 0.002, "exit2": 0.007}
    assert mixture_percentile(derived.per_exit_s, derived.exit_rates, 50) == 0.007
    del predicted["exit_latency_s"]
    assert predicted_latency(dep).method == "plan totals"
    assert predicted_latency(dep).per_exit_s == pytest.approx({"exit1": 0.002, "exit2": 0.007})


# ---------------------------------------------------------------- tolerance warnings

@pytest.fixture(scope="module")
def static_run(deployments, inputs):
    folder = deployments["three-static"][0]
    return run_local(folder, inputs[0][:24], inputs[1][:24]), folder


def _with_latency(folder, seconds_without_transfers: float):
    """The three-static deployment with a plan predicting this compute latency for every input."""
    dep = load_deployment(folder)
    transfers_s = sum(t["time_s"] for t in dep.application["transfers"])
    dep.application["predicted"].update(latency_s=seconds_without_transfers + transfers_s,
                                        expected_latency_s=seconds_without_transfers + transfers_s)
    return dep


def test_latency_rows_warn_beyond_tolerance_and_not_within(static_run):
    m, folder = static_run
    p50 = build_report(m, load_deployment(folder))["latency_s"]["p50"]
    exact = _rows(build_report(m, _with_latency(folder, p50)))["latency_p50"]
    assert exact["relative_error"] == pytest.approx(0.0, abs=1e-9) and not exact["warn"]
    within = build_report(m, _with_latency(folder, 1.1 * p50))  # -9%: inside 15%
    assert not _rows(within)["latency_p50"]["warn"]
    assert not any(w.startswith("latency_p50:") for w in within["warnings"])
    beyond = build_report(m, _with_latency(folder, 1.25 * p50))  # -20%: outside 15%
    assert _rows(beyond)["latency_p50"]["warn"]
    assert _rows(beyond)["latency_p50"]["relative_error"] == pytest.approx(-0.2)
    assert any(w.startswith("latency_p50:") and "tolerance 15%" in w for w in beyond["warnings"])
    # the same error is within a looser tolerance
    assert not _rows(build_report(m, _with_latency(folder, 1.25 * p50), tolerance=0.25))["latency_p50"]["warn"]


def test_every_scaled_prediction_warns(static_run):
    """A plan whose every prediction is 10x what happens: every row with a non-zero value warns."""
    m, folder = static_run
    dep = load_deployment(folder)
    app = dep.application
    for key in ("energy_j", "compute_energy_j", "transfer_energy_j", "latency_s", "expected_latency_s"):
        app["predicted"][key] *= 10
    for node in app["per_node"].values():
        node["busy_s"] *= 10
        node["energy_j"] *= 10
    for transfer in app["transfers"]:
        transfer["bytes"] *= 10
        transfer["time_s"] = 0.0  # keep the latency scaling exact: nothing to subtract without emulation
    report = build_report(m, dep)
    checked = 0
    for row in report["comparison"]:
        if row["unit"] == "fraction" or not row["measured"]:
            continue
        checked += 1
        assert row["warn"], row
        assert any(w.startswith(row["metric"] + ":") for w in report["warnings"]), row["metric"]
    assert checked >= 16  # latency x6 (mean, p50, p90, p99, final), busy/energy x3 nodes, bytes x2, energy totals x3


# ---------------------------------------------------------------- energy labels

def _profiled(workdir, tiny, plan_factory, name: str, *, measured: bool):
    from helpers import fake_profile, network_doc

    doc = fake_profile(tiny[1])
    for part in doc["blocks"] + doc["exits"]:
        part["energy_j"].update(method="rapl" if measured else "codecarbon", measured=measured)
    doc["energy"] = {"method": "rapl" if measured else "codecarbon", "measured": measured}
    profile = workdir / f"{name}.profile.json"
    profile.write_text(json.dumps(doc))
    out = workdir / f"{name}.deploy"
    emit(plan_factory(["device", "device", "edge"], network=network_doc(profile=str(profile))), tiny[0], out)
    return out


def test_energy_rows_say_derived_and_estimate(capsys, workdir, tiny, plan_factory, inputs):
    unmeasured = _profiled(workdir, tiny, plan_factory, "energy-codecarbon", measured=False)
    measured = _profiled(workdir, tiny, plan_factory, "energy-rapl", measured=True)
    x, y = inputs[0][:8], inputs[1][:8]
    rows = _rows(build_report(run_local(unmeasured, x, y), load_deployment(unmeasured)))
    device = rows["energy_j[device]"]
    assert device["basis"] == "derived" and device["estimate"] is True
    assert "derived" in device["how"] and "ESTIMATE" in device["how"] and "codecarbon" in device["how"]
    assert rows["energy_j[edge]"]["estimate"] is True and "ESTIMATE" in rows["energy_j[edge]"]["how"]
    for total in ("compute_energy_j", "transfer_energy_j", "energy_j"):
        assert rows[total]["estimate"] is True and "ESTIMATE" in rows[total]["how"]
    assert rows["latency_mean"]["estimate"] is False and rows["latency_mean"]["how"] == "measured"
    rows = _rows(build_report(run_local(measured, x, y), load_deployment(measured)))
    device = rows["energy_j[device]"]
    assert device["basis"] == "derived" and device["estimate"] is False
    assert "derived" in device["how"] and "ESTIMATE" not in device["how"]
    assert rows["compute_energy_j"]["estimate"] is True  # the edge is analytic: its share is estimated

    # the text table: no "measured" column over derived values, the row says ESTIMATE
    assert main(["run", str(unmeasured), "--data", str(inputs[2]), "--limit", "8", "--quiet"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "metric" in line)
    assert "this run" in header and "how obtained" in header and "measured" not in header
    device_line = next(line for line in text.splitlines() if "energy_j[device]" in line)
    assert "derived" in device_line
    assert "ESTIMATE" in text[text.index("energy_j[device]"):text.index("energy_j[edge]")]
