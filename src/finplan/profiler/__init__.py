"""The profiler: what each block and exit of a branchy ONNX model costs on this device.

onnx + onnxruntime only (no torch). One module per concern: ``flops`` (static costs),
``timing`` (onnxruntime sessions, interleaved repetitions), ``stats`` (summaries and the
median's confidence interval), ``energy`` (one backend per module), ``calibration`` (exit
scores and the threshold table), ``device`` (machine description), ``probes`` (the call-cost
and runtime-stage probes timed beside the parts), ``documents`` (the profile built from
measurements by pure functions), ``prepare`` (every check before a measurement) and ``run``
(the measurement).
"""
from finplan.profiler.prepare import prepare_profile, profile_model
from finplan.profiler.run import DEFAULT_BUDGET_S, ProfileJob, ProfileOptions, ProfileResult

__all__ = ["DEFAULT_BUDGET_S", "ProfileJob", "ProfileOptions", "ProfileResult", "prepare_profile", "profile_model"]
