"""finplan's two kinds of failure through the CLI entry point: whose fault it is decides the exit code.

An InputError (the user's files or options) exits 2, an EnvironmentFault (the machine: an energy
counter, an execution provider, a missing package) exits 1; both are one line on stderr, no traceback.
"""
from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest

from finplan.errors import EnvironmentFault, FinplanError, FinplanInputError, InputError
from onnx_builders import tiny_branchy_model


def _finplan(*argv, env=None):
    """The real command in a fresh process, so nothing but finplan's own line can reach stderr."""
    return subprocess.run([sys.executable, "-m", "finplan", *map(str, argv)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("finplan: error: "), lines[0]
    return lines[0]


def test_input_error_exits_2_with_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nowhere.onnx"
    done = _finplan("inspect", missing)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert str(missing) in line and "file not found" in line


def test_environment_fault_exits_1_with_one_line_saying_what_to_check(tmp_path):
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_branchy_model(), str(model))
    output = tmp_path / "p.json"
    # A machine without RAPL counters: --energy rapl cannot work here, whatever the inputs.
    done = _finplan("profile", model, "--energy", "rapl", "-o", output, "--budget-s", "0.2", "--quiet",
                    env={"FINPLAN_POWERCAP_ROOT": str(tmp_path / "no-powercap")})
    assert done.returncode == 1, done.stderr
    line = _one_line(done.stderr)
    assert "rapl is unavailable here" in line and "--energy power-model" in line
    assert not output.exists()


def test_the_kinds_and_their_codes():
    assert FinplanInputError is InputError and issubclass(InputError, FinplanError)
    assert issubclass(EnvironmentFault, FinplanError) and not issubclass(EnvironmentFault, InputError)
    assert (InputError.exit_code, EnvironmentFault.exit_code) == (2, 1)
    assert str(InputError("is -1; expected > 0", file="a.json", field="links[0].mbps")) == \
        "a.json: links[0].mbps: is -1; expected > 0"
    assert str(EnvironmentFault("the counter read NaN", check="the driver")) == "the counter read NaN; check: the driver"


def test_a_missing_execution_provider_is_the_machines_fault():
    from finplan.profiler.timing import SessionConfig, check_provider

    with pytest.raises(EnvironmentFault, match="NoSuchExecutionProvider.*not available.*check: the onnxruntime"):
        check_provider(SessionConfig.default(1, provider="NoSuchExecutionProvider"))


def test_a_missing_package_is_the_machines_fault(monkeypatch):
    import sys as system

    from finplan.partition.draw import plan_png

    monkeypatch.setitem(system.modules, "matplotlib", None)  # as if the [plot] extra were not installed
    with pytest.raises(EnvironmentFault, match=r"needs matplotlib.*; check: pip install 'finplan\[plot\]'"):
        plan_png({"applications": []})


def test_a_machine_out_of_threads_is_not_a_bad_model(monkeypatch):
    import onnxruntime as ort

    from finplan.profiler.timing import SessionConfig, make_session
    from onnx_builders import tiny_branchy_model as model

    def refused(*args, **kwargs):  # what onnxruntime raises when the process table is full
        raise RuntimeError("pthread_create failed: Resource temporarily unavailable")
    monkeypatch.setattr(ort, "InferenceSession", refused)
    with pytest.raises(EnvironmentFault, match="could not start the threads of the model.*check: the thread limits"):
        make_session(model(), SessionConfig.default(2), what="the model")
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bad graph")))
    with pytest.raises(InputError, match="onnxruntime cannot load the model: bad graph"):
        make_session(model(), SessionConfig.default(2), what="the model")
