"""``finplan serve`` / ``finplan infer`` argument handling and one-line errors (no Ray started)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from finplan.cli.main import main


def test_serve_dry_run_describes_the_application(ray_deployments, capsys):
    assert main(["serve", str(ray_deployments["three-dynamic"]), "--dry-run", "--json", "--replicas", "edge=2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_name = {d["name"]: d for d in doc["deployments"]}
    assert set(by_name) == {"ingress", "node-device", "node-edge", "node-cloud"}
    assert by_name["node-edge"]["replicas"] == 2
    assert by_name["node-cloud"]["ray_actor_options"]["label_selector"] == {"finplan-node": "cloud"}
    assert doc["chain"] == ["device", "edge", "cloud"]
    assert doc["max_concurrent_requests"] == 1000
    assert main(["serve", str(ray_deployments["three-dynamic"]), "--dry-run", "--max-concurrent-requests", "0"]) == 2
    assert "--max-concurrent-requests" in capsys.readouterr().err


def test_serve_without_ray_says_to_install_the_extra(ray_deployments, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["serve", str(ray_deployments["three-dynamic"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finplan[ray]" in err


def test_bad_replicas_and_unreachable_places_are_one_line(ray_deployments, capsys):
    from finplan.deploy.ray_serve.cluster import free_port

    assert main(["serve", str(ray_deployments["three-dynamic"]), "--dry-run", "--replicas", "moon=2"]) == 2
    assert "moon" in capsys.readouterr().err
    port = free_port()
    assert main(["serve", str(ray_deployments["three-dynamic"]), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Ray head answers" in err
    assert main(["infer", f"http://127.0.0.1:{port}/tiny", "--data", "embedded"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finplan service answers" in err


def test_engine_overhead_table_puts_the_link_model_beside_the_measurement(capsys):
    from finplan.cli.serve import print_engine_overhead

    print_engine_overhead({"engine_overhead_s": {"hop[device->edge].engine_s": 0.003, "hop[device->edge].engine_p50_s": 0.0029,
                                                 "hop[device->edge].link_model_s": 0.0062}})
    out = capsys.readouterr().out
    assert "device->edge" in out and "3.000 ms" in out and "6.200 ms" in out and "not device latency" in out
    print_engine_overhead({"engine_overhead_s": {}})
    assert capsys.readouterr().out == ""


@pytest.mark.ray
def test_run_on_ray_keeps_stdout_for_the_report(ray_deployments, ray_workdir, tiny_inputs):
    """``finplan run --engine ray --json`` in its own process, with its own local Ray: stdout is
    the report and nothing else (Ray's driver and raylets print at shutdown: those go to stderr)."""
    import subprocess
    import sys

    import numpy as np

    data = ray_workdir / "inputs.npz"
    np.savez(data, x=tiny_inputs[0][:16], y=tiny_inputs[1][:16])
    done = subprocess.run([sys.executable, "-m", "finplan.cli.main", "run", str(ray_deployments["three-dynamic"]),
                           "--data", str(data), "--engine", "ray", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["engine"] == "ray" and report["samples"] == 16


@pytest.mark.ray
def test_run_on_ray_carries_several_named_inputs_and_the_live_sets(live_set_deployments):
    """The two-input text model on Ray: .npz requests, stage messages with several named tensors;
    exit rates are the plan's and each hop sent exactly the live set's bytes per sample."""
    import subprocess
    import sys

    case = live_set_deployments["text"]
    done = subprocess.run([sys.executable, "-m", "finplan.cli.main", "run", str(case["folder"]), "--data",
                           str(case["data"]), "--engine", "ray", "--batch-size", "4", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["engine"] == "ray" and report["exit_rates"] == case["rates"]
    hops = [key for key in report["links"] if key != "ingress"]
    assert len(hops) == 2
    for key in hops:
        link = report["links"][key]
        assert link["bytes_per_sample_sent"] == link["predicted_bytes_per_sample"], (key, link)
