"""Exercise the NVML energy backend on a real GPU workload and record what it measured.

Run once on a machine with an NVIDIA GPU (no CUDA toolkit needed): the workload is a loop of
device memsets through the CUDA driver API (ctypes on libcuda), or torch/cupy when present.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out "$OUT/nvml-check.json"

Prints idle power, the energy per busy iteration and the implied busy power, and NVML's own
instantaneous power readings as a cross-check; writes the same as JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from finplan.profiler.energy import Workload  # noqa: E402
from finplan.profiler.energy.nvml import NvmlMeter  # noqa: E402


def driver_memset_workload(gib: float = 4.0):
    """One iteration = memset ``gib`` GiB of device memory and wait (HBM-bound, draws real power)."""
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(code, what):
        if code != 0:
            raise RuntimeError(f"{what} failed with CUDA error {code}")
    check(cuda.cuInit(0), "cuInit")
    device, context, pointer = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
    check(cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate")
    count = int(gib * (1 << 30) // 4)
    check(cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(count * 4)), "cuMemAlloc")
    state = {"value": 0}

    def run():
        state["value"] += 1
        check(cuda.cuMemsetD32_v2(pointer, ctypes.c_uint(state["value"]), ctypes.c_size_t(count)), "cuMemsetD32")
        check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
    return run, f"CUDA driver cuMemsetD32 over {gib:g} GiB + cuCtxSynchronize"


def torch_workload():
    import torch

    a = torch.randn(8192, 8192, device="cuda")

    def run():
        (a @ a).sum().item()
    return run, "torch 8192x8192 float32 matmul"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--window-s", type=float, default=3.0, help="busy window (NVML updates every ~100 ms)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="idle baseline window")
    args = parser.parse_args()

    meter = NvmlMeter(idle_window_s=args.idle_s)
    ok, reason = meter.available()
    result = {"available": ok, "reason": reason}
    if not ok:
        print(f"nvml: unavailable: {reason}")
    else:
        try:
            run, what = torch_workload()
        except Exception:
            run, what = driver_memset_workload()
        run()  # first call pays context and allocation
        power_before_w = meter.power_w()
        meter.start()
        reading = meter.measure(Workload("gpu-busy-loop", "block", run, 0.0), min_window_s=args.window_s)
        samples = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:  # NVML's instantaneous power while busy, as a cross-check
            run()
            samples.append(meter.power_w())
        busy_w = meter.idle_power_w() + reading.energy_j * reading.runs / reading.window_s
        result.update({
            "gpu": meter.gpu_name, "workload": what, "idle_power_w": meter.idle_power_w(),
            "instant_power_idle_w": power_before_w, "energy_per_iteration_j": reading.energy_j,
            "iterations": reading.runs, "window_s": reading.window_s, "implied_busy_power_w": busy_w,
            "instant_power_busy_median_w": sorted(samples)[len(samples) // 2] if samples else None,
            "note": reading.note, "method": reading.method, "measured": reading.measured,
        })
        meter.close()
        print(f"nvml on {meter.gpu_name}: idle {result['idle_power_w']:.1f} W (counter over {args.idle_s:g} s; "
              f"instantaneous {power_before_w:.1f} W)")
        print(f"busy loop ({what}): {reading.runs} iterations in {reading.window_s:.2f} s, "
              f"{reading.energy_j:.4g} J per iteration above idle, implied {busy_w:.1f} W while busy "
              f"(instantaneous median {result['instant_power_busy_median_w']:.1f} W)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
