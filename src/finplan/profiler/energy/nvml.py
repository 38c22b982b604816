"""NVIDIA GPU energy through NVML's total-energy counter (Volta and newer).

``nvmlDeviceGetTotalEnergyConsumption`` returns millijoules since the driver loaded, as a
64-bit count (no wrap in practice); it updates about every 100 ms, hence the >= 1 s windows.
It sees the GPU board only: a model running on onnxruntime's CPU provider does not show up
in it, which is why ``--energy auto`` uses it only for GPU execution providers.
"""
from __future__ import annotations

import math

from finplan.errors import EnvironmentFault
from finplan.profiler.energy.base import CounterMeter

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")
# What a failing counter points to: the driver, not the user's files.
NVML_CHECK = "the NVIDIA driver (nvidia-smi -q -d POWER); --energy power-model --power-w W estimates instead"


class NvmlMeter(CounterMeter):
    method = "nvml"

    def __init__(self, device_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.device_index = device_index
        self._handle = None
        self._last_mj: int | None = None
        self._pynvml = None
        self.gpu_name: str | None = None

    def _init(self):
        import pynvml

        pynvml.nvmlInit()
        self._pynvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        name = pynvml.nvmlDeviceGetName(self._handle)
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)

    def available(self) -> tuple[bool, str]:
        try:
            import pynvml  # noqa: F401
        except ImportError:
            return False, "pynvml is not installed (pip install nvidia-ml-py); use --energy power-model or codecarbon"
        try:
            if self._handle is None:
                self._init()
            self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _NotSupported, _InvalidArgument
            return False, (f"NVML unavailable ({exc.__class__.__name__}: {exc}); no NVIDIA driver/GPU here or the GPU "
                           "lacks a total-energy counter; use --energy rapl, codecarbon or power-model")
        return True, f"NVML total-energy counter of GPU {self.device_index} ({self.gpu_name})"

    def read_j(self) -> float:
        if self._handle is None:
            self._init()
        try:
            raw = self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:
            raise EnvironmentFault(f"NVML energy counter of GPU {self.device_index} failed ({exc})",
                                   check=NVML_CHECK) from None
        value = float(raw)
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise EnvironmentFault(f"NVML energy counter of GPU {self.device_index} reads {raw}; expected a "
                                   "non-negative count of millijoules", check=NVML_CHECK)
        if self._last_mj is not None and raw < self._last_mj:
            raise EnvironmentFault(f"NVML energy counter of GPU {self.device_index} reads backwards "
                                   f"({self._last_mj} -> {raw} mJ)", check=NVML_CHECK)
        self._last_mj = int(raw)
        return value / 1e3

    def power_w(self) -> float:
        """Instantaneous board power (for reports; energy uses the counter)."""
        if self._handle is None:
            self._init()
        return self._pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1e3

    def close(self) -> None:
        if self._pynvml is not None:
            try:
                self._pynvml.nvmlShutdown()
            except Exception:
                pass
            self._pynvml = None
            self._handle = None
