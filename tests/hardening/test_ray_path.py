"""Class 6: the Ray path names what failed and fails fast: a taken port and a swapped part are
refused before Ray starts, a non-finite input gets 422, SIGTERM stops ``finplan serve`` as
Ctrl-C does. Only the last test starts Ray (marked ``ray``); it checks three things on one start."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hardening_helpers import refused

from finplan.deploy.manifest import TensorSpec
from finplan.deploy.ray_serve.core import RequestError, parse_request
from finplan.deploy.ray_serve.wire import encode_tensor

SRC = Path(__file__).resolve().parents[2] / "src"


def _swap_a_part(folder: Path) -> Path:
    """Put another part's bytes in place of device's first part (the manifest still names the old sha256)."""
    parts = sorted((folder / "device").glob("*.onnx")) + sorted((folder / "cloud").glob("*.onnx"))
    victim, other = parts[0], parts[-1]
    shutil.copyfile(other, victim)
    return victim


@pytest.fixture()
def not_started(monkeypatch):
    """Fail the test if anything tries to start Ray."""
    from finplan.deploy.ray_serve import cluster

    monkeypatch.setattr(cluster.ServeSession, "start", lambda self: pytest.fail("Ray was started"))


def test_a_taken_port_is_named_before_ray_starts(capsys, world_copy, not_started):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from finplan.deploy.ray_serve import cluster

        with pytest.raises(Exception) as error:
            cluster.check_port_free("127.0.0.1", port)
        assert "taken by another process" in str(error.value) and str(error.value).startswith("--port")
        assert error.value.exit_code == 1  # the machine's state, not the user's files


def test_serve_with_a_taken_port_is_one_line_without_ray(capsys, world_copy, monkeypatch):
    from finplan.deploy.ray_serve import cluster

    monkeypatch.setattr(cluster, "LocalCluster", lambda *a, **k: pytest.fail("Ray was about to start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused(capsys, world_copy, "serve", world_copy / "deploy", "--port", port,
                fragments=["--port", f"port {port} on 127.0.0.1 is taken"], exit_code=1)


@pytest.mark.parametrize("argv", [["serve", "{deploy}"], ["serve", "{deploy}", "--dry-run"],
                                  ["run", "{deploy}", "--engine", "ray", "--data", "embedded", "--limit", "4"]])
def test_a_swapped_part_is_named_before_ray_starts(capsys, world_copy, not_started, argv):
    victim = _swap_a_part(world_copy / "deploy")
    argv = [a.format(deploy=world_copy / "deploy") for a in argv]
    refused(capsys, world_copy, *argv, fragments=[victim.name, "was altered", "sha256"])


@pytest.mark.parametrize("values", [[np.nan], [np.inf], [-np.inf], [1.0, np.nan]])
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_non_finite_inputs_are_refused_with_422(values, dtype):
    spec = TensorSpec("x", ("N", 1, 2, 2), dtype)
    x = np.zeros((1, 1, 2, 2), dtype)
    x.reshape(-1)[: len(values)] = values
    with pytest.raises(RequestError) as error:
        parse_request(encode_tensor(x), "application/x-npy", spec, max_request_bytes=1 << 20)
    assert error.value.status == 422 and "NaN or infinite" in error.value.message
    x = np.zeros((1, 1, 2, 2), dtype)
    assert parse_request(encode_tensor(x), "application/x-npy", spec, max_request_bytes=1 << 20)["x"].shape == (1, 1, 2, 2)


def test_the_callers_sigterm_handler_survives_a_start_that_replaces_it():
    from finplan.deploy.ray_serve.cluster import keep_sigterm_handler

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with keep_sigterm_handler():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what Ray's init does to a driver
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def _post(url: str, array: np.ndarray) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=encode_tensor(array), headers={"Content-Type": "application/x-npy"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.ray
def test_served_nan_is_422_and_sigterm_stops_serve_cleanly(world, tmp_path):
    """One real `finplan serve`: GET names the classes, NaN -> 422, a real input -> 200, then
    SIGTERM -> exit 0, as after Ctrl-C (before: a native abort, exit 134)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "ORT_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen([sys.executable, "-m", "finplan", "serve", str(world / "deploy"), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                               start_new_session=True)
    try:
        first = process.stdout.readline()
        assert first, process.stderr.read()
        lines = [first]
        while not lines[-1].startswith("}"):  # print_json: an indented document ending in "}"
            lines.append(process.stdout.readline())
        url = json.loads("".join(lines))["url"]
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert json.loads(answer.read())["num_classes"] == 10
        x = np.load(world / "calib.npz")["x"][:2]
        bad = x.copy()
        bad[1, 0, 0, 0] = np.nan
        status, doc = _post(url, bad)
        assert status == 422 and "NaN or infinite" in doc["error"]
        status, doc = _post(url, x)
        assert status == 200, doc
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # 0: finplan's handler ran (Ray's gave a native abort, 134; no handler: -15)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err and "core dumped" not in err
