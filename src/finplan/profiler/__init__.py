"""The profiler: what each block and exit of a branchy ONNX model costs on this device.

onnx + onnxruntime only (no torch). One module per concern: ``flops`` (static costs),
``timing`` (onnxruntime sessions, interleaved repetitions), ``stats`` (summaries and the
median's confidence interval), ``energy`` (one backend per module), ``calibration`` (exit
scores and the threshold table), ``device`` (machine description), ``run`` (orchestration).
"""
from finplan.profiler.run import DEFAULT_BUDGET_S, ProfileJob, ProfileOptions, ProfileResult, prepare_profile, profile_model

__all__ = ["DEFAULT_BUDGET_S", "ProfileJob", "ProfileOptions", "ProfileResult", "prepare_profile", "profile_model"]
