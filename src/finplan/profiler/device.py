"""What machine a profile was measured on, without the hostname unless the user names it."""
from __future__ import annotations

import platform
import re
from pathlib import Path

from finplan.fileio import available_cpus


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def physical_cores(cpuinfo: str | Path = "/proc/cpuinfo") -> int | None:
    """Distinct (physical id, core id) pairs; None when /proc/cpuinfo does not say."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    pairs = set()
    for block in text.split("\n\n"):
        physical = re.search(r"^physical id\s*:\s*(\d+)", block, re.MULTILINE)
        core = re.search(r"^core id\s*:\s*(\d+)", block, re.MULTILINE)
        if physical and core:
            pairs.add((physical.group(1), core.group(1)))
    return len(pairs) or None


def gpu_name() -> str | None:
    """The first NVIDIA GPU NVML sees, or None (no pynvml, no driver, no GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # ImportError or any NVMLError: no GPU to report
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def describe_device(execution_provider: str, *, name: str | None = None, cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """The machine a profile is measured on (``execution_provider``: the one its sessions use).

    Takes the provider, not the session config, so that timing.py (which needs ``physical_cores``
    for its default thread count) and this module do not import each other."""
    import onnxruntime as ort

    cpu = cpu_model(cpuinfo)
    logical = available_cpus()
    cores = physical_cores(cpuinfo) or logical
    cores = min(cores, logical)  # a container limited to 2 CPUs of a 64-core host has 2 usable cores
    return {
        # Default name from the hardware, never the hostname (profiles get shared).
        "name": name or f"{_slug(cpu)}-{logical}cpu",
        "cpu": cpu,
        "cores": max(int(cores), 1),
        "threads": logical,
        "execution_provider": execution_provider,
        "onnxruntime_version": ort.__version__,
        "gpu": gpu_name(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }
