"""Smoke tests of benchmarks/paper.py and benchmarks/speed.py in --quick mode (a reduced sweep),
so the benchmark code cannot rot. They check that every output appears with sane content, not
any timing."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _run(script: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, path


@pytest.fixture(scope="module")
def paper_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paper")
    _run("paper.py", out)
    return out


@pytest.fixture(scope="module")
def speed_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speed")
    _run("speed.py", out)
    return out


def test_paper_files(paper_out):
    for name in ("sweeps.csv", "breakdown.csv", "scatter.csv", "gamma.csv", "multi_app.csv", "dynamic.csv",
                 "summary.md", "headline.json"):
        assert (paper_out / name).stat().st_size > 100, name
    for name in ("energy_vs_accuracy.png", "energy_vs_latency.png", "breakdown.png", "scatter.png", "gamma.png",
                 "multi_app.png", "dynamic.png"):
        _png(paper_out / name)
    # the quick run writes into its own folder only
    assert not (paper_out / "docs").exists()


def test_paper_sweeps_are_sane(paper_out):
    rows = _rows(paper_out / "sweeps.csv")
    solvers = {r["solver"] for r in rows}
    assert {"fin", "exhaustive", "mcp", "device-only", "cloud-only", "single-cut", "min-latency"} <= solvers
    points = {(r["model"], r["sweep"], r["min_accuracy"], r["max_latency_ms"]) for r in rows}
    assert {p[0] for p in points} == {"b-alexnet", "b-resnet", "b-lenet"}
    by = {(r["model"], r["sweep"], r["min_accuracy"], r["max_latency_ms"], r["solver"]): r for r in rows}
    for p in points:
        fin, opt, mcp = by[(*p, "fin")], by[(*p, "exhaustive")], by[(*p, "mcp")]
        assert opt["feasible"] == "true" and fin["feasible"] == "true"
        assert float(fin["energy_j"]) >= float(opt["energy_j"]) * (1 - 1e-12)
        assert float(opt["energy_j"]) == pytest.approx(float(opt["reference_optimum_j"]), rel=1e-9)
        assert mcp["energy_j"] != ""
        assert float(fin["compute_energy_j"]) + float(fin["transfer_energy_j"]) == pytest.approx(float(fin["energy_j"]))
        for r in (fin, opt):  # every feasible plan meets the point's constraints (strict)
            assert float(r["latency_ms"]) < float(r["max_latency_ms"])
            assert float(r["accuracy"]) > float(r["min_accuracy"])
    # MCP on B-AlexNet: the paper's answer at every point
    for r in rows:
        if r["model"] == "b-alexnet" and r["solver"] == "mcp":
            assert r["placement"] == "device|edge|cloud|cloud|cloud"
            assert float(r["energy_j"]) == pytest.approx(0.19920, abs=1e-5)


def test_paper_other_tables(paper_out):
    scatter = _rows(paper_out / "scatter.csv")
    # block 1 on the device, blocks move only up the tiers: 1 + 6 + 15 configurations per 5-block model
    assert sum(r["model"] == "b-alexnet" for r in scatter) == 1 + 6 + 15
    gamma = _rows(paper_out / "gamma.csv")
    assert {int(r["gamma"]) for r in gamma} == {3, 1000}
    for r in gamma:
        assert int(r["no_solution"]) + int(r["suboptimal"]) + int(r["optimal"]) <= int(r["points"])
        if r["gamma"] == "1000":
            assert r["no_solution"] == "0" and r["suboptimal"] == "0"
    multi = _rows(paper_out / "multi_app.csv")
    assert {r["solver"] for r in multi} == {"fin", "milp", "mcp"}
    for r in multi:
        assert int(r["served"]) <= int(r["applications"])
        if r["solver"] == "fin":
            milp = next(m for m in multi if m["solver"] == "milp" and m["users_per_model"] == r["users_per_model"])
            if r["served"] == milp["served"]:
                assert float(r["energy_j"]) >= float(milp["energy_j"]) * (1 - 1e-9)
    dyn = _rows(paper_out / "dynamic.csv")
    assert {r["mode"] for r in dyn} == {"static", "dynamic"}
    for r in dyn:
        if r["mode"] == "dynamic" and r["solver"] == "exhaustive" and r["feasible"] == "true":
            static = next(o for o in dyn if o["mode"] == "static" and o["solver"] == "exhaustive"
                          and (o["model"], o["sweep"], o["min_accuracy"], o["max_latency_ms"])
                          == (r["model"], r["sweep"], r["min_accuracy"], r["max_latency_ms"]))
            if static["feasible"] == "true":  # thresholds can only help: disabled exits are a policy too
                assert float(r["energy_j"]) <= float(static["energy_j"]) * (1 + 1e-9)
    summary = (paper_out / "summary.md").read_text()
    for heading in ("FIN against the exhaustive optimum", "FIN against MCP", "Sensitivity to gamma",
                    "Several applications", "Dynamic mode"):
        assert heading in summary
    head = json.loads((paper_out / "headline.json").read_text())
    assert head["fin_matches_optimum"] == head["points"]


def test_paper_is_deterministic_apart_from_timings(paper_out, tmp_path):
    _run("paper.py", tmp_path)
    for name in ("scatter.csv", "gamma.csv", "dynamic.csv", "breakdown.csv"):
        a, b = _rows(paper_out / name), _rows(tmp_path / name)
        drop = lambda rows: [{k: v for k, v in r.items() if not k.endswith(("_ms", "_s", "_ms_total",  # noqa: E731
                                                                                "_ms_per_point"))} for r in rows]
        assert drop(a) == drop(b), name


def test_speed_files(speed_out):
    for name in ("speed.csv", "speed_big.csv", "speed_milp.csv", "speed.md", "speed_headline.json"):
        assert (speed_out / name).stat().st_size > 100, name
    _png(speed_out / "speed.png")
    scale = _rows(speed_out / "speed.csv")
    assert {r["sweep"] for r in scale} == {"nodes", "blocks", "gamma"}
    assert all(float(r["time_s"]) > 0 and float(r["peak_mib"]) > 0 for r in scale)
    # every hop costs at least one latency unit, so FIN needs gamma >= blocks to find anything
    assert all(r["feasible"] == "true" for r in scale if int(r["gamma"]) >= int(r["blocks"]))
    for r in _rows(speed_out / "speed_milp.csv"):
        if r["fin_feasible"] == "true" and r["milp_feasible"] == "true":
            assert float(r["fin_energy_j"]) >= float(r["milp_energy_j"]) * (1 - 1e-7)
    text = (speed_out / "speed.md").read_text()
    assert "Targets (issue 4)" in text and "Machine:" in text
    head = json.loads((speed_out / "speed_headline.json").read_text())
    assert head["paper_instance"]["fin_energy_j"] <= head["paper_instance"]["mcp_energy_j"]


def test_runtime_overhead_runs_and_reports_every_figure():
    """benchmarks/runtime_overhead.py (issue 5's targets) end to end on a small budget: every figure
    is there; the exit rates, which do not depend on timing, match the plan's on the calibration set."""
    import math

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime_overhead.py"), "--repeats", "1",
                           "--limit", "30", "--budget-s", "1", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    overhead, loop = doc["overhead"], doc["closed_loop"]
    assert overhead["samples"] == 30 and overhead["ratio_median"] > 0
    assert overhead["executor_batch1_s_median"] > 0 and overhead["whole_model_session_s_median"] > 0
    assert math.isfinite(loop["latency_relative_error"]) and loop["measured_mean_latency_s"] > 0
    assert set(loop["exit_rates_measured"]) == set(loop["plan"]["exit_rates"])
    assert all(abs(d) < 1e-9 for d in loop["exit_rate_difference_points"].values())
