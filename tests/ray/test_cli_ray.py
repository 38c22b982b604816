"""``finplan serve`` / ``finplan infer`` argument handling and one-line errors (no Ray started)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import signal

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
    assert main(["serve", str(ray_deployments["three-dynamic"])]) == 1  # a missing package is the machine's fault (EnvironmentFault)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "finplan[ray]" in err


def test_bad_replicas_and_unreachable_places_are_one_line(ray_deployments, capsys):
    from finplan.deploy.ray_serve.cluster import free_port

    assert main(["serve", str(ray_deployments["three-dynamic"]), "--dry-run", "--replicas", "moon=2"]) == 2
    assert "moon" in capsys.readouterr().err
    port = free_port()
    assert main(["serve", str(ray_deployments["three-dynamic"]), "--address", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Ray head answers" in err
    assert main(["infer", f"http://127.0.0.1:{port}/tiny", "--data", "embedded"]) == 1
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


@pytest.mark.ray
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_on_sigint_and_sigterm(ray_deployments, tiny_inputs, signum):
    """A real ``finplan serve``: it answers, then the signal stops it with exit 0, no traceback,
    and no process of the Ray instance it started left behind."""
    import os
    import subprocess
    import sys
    import time

    from finplan.deploy.ray_serve.client import infer_many

    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen([sys.executable, "-m", "finplan", "serve", str(ray_deployments["three-dynamic"]),
                                "--json", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        lines = [process.stdout.readline()]
        assert lines[0], process.stderr.read()
        while not lines[-1].startswith("}"):  # print_json: an indented document ending in "}"
            lines.append(process.stdout.readline())
        info = json.loads("".join(lines))
        assert info["max_batch_size"] == 32 and info["serve_mode"]
        report = infer_many(info["url"], tiny_inputs[0][:8], concurrency=2, timeout_s=60)
        assert report.answered == 8 and report.failed == 0, report.errors
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        left_behind = True
        for _ in range(100):  # the instance's processes exit with it; give the last a moment
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                left_behind = False
                break
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # only this test's serve and what it started
    assert not left_behind, "a process of the Ray instance that serve started outlived it"
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "Aborted" not in err and "core dumped" not in err, err[-2000:]


def _one_line_error(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra,fragment", [
    (["--max-batch-size", "0"], "--max-batch-size"), (["--max-batch-size", "two"], "--max-batch-size"),
    (["--batch-wait-s", "nan"], "--batch-wait-s"), (["--batch-wait-s", "inf"], "--batch-wait-s"),
    (["--batch-wait-s", "-1"], "--batch-wait-s")])
def test_bad_batching_options_are_one_line(ray_deployments, capsys, extra, fragment):
    assert fragment in _one_line_error(capsys, ["serve", ray_deployments["three-dynamic"], "--dry-run", *extra])


def test_ray_compiled_on_a_bad_folder_is_one_line_before_ray_starts(ray_deployments, tmp_path, capsys, monkeypatch):
    import shutil

    from finplan.deploy.ray_serve import compiled

    monkeypatch.setattr(compiled, "ray_instance", lambda *a, **k: pytest.fail("Ray was about to start"))
    run = ["run", "--engine", "ray-compiled", "--data", "embedded", "--limit", "4"]
    missing = tmp_path / "nowhere"
    assert str(missing) in _one_line_error(capsys, [run[0], missing, *run[1:]])
    (tmp_path / "empty").mkdir()
    assert "deployment.json" in _one_line_error(capsys, [run[0], tmp_path / "empty", *run[1:]])
    folder = shutil.copytree(ray_deployments["three-dynamic"], tmp_path / "swapped")
    parts = sorted((folder / "device").glob("*.onnx")) + sorted((folder / "cloud").glob("*.onnx"))
    shutil.copyfile(parts[-1], parts[0])  # another part's bytes: the manifest's sha256 no longer matches
    data = tmp_path / "inputs.npz"
    import numpy as np

    np.savez(data, x=np.zeros((4, 1, 8, 8), np.float32))
    err = _one_line_error(capsys, ["run", folder, "--engine", "ray-compiled", "--data", data])
    assert parts[0].name in err and "sha256" in err
