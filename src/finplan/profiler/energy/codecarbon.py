"""codecarbon's offline tracker in task mode, one task per window.

Offline only: ``OfflineEmissionsTracker`` with ``country_iso_code`` given never looks up the
location or the grid on the internet; ``save_to_file=False`` and no API/logger outputs mean
no emissions.csv and no network. On a machine without power counters codecarbon does not
measure: it multiplies a TDP (from its CPU table, or 4 W per thread when the CPU is unknown)
by the CPU load, and RAM by a constant, so the figures are ``measured: false``. When it finds
RAPL (or powermetrics/Power Gadget) it reads those counters and we say ``measured: true``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time

from finplan.profiler.energy.base import (DEFAULT_MIN_WINDOW_S, EnergyMeter, EnergyReading, Workload,
                                          check_reading, run_window)

KWH_TO_J = 3.6e6
MEASURING_CPU_MODES = ("intel_rapl", "intel_power_gadget", "apple_powermetrics")


class CodecarbonMeter(EnergyMeter):
    method = "codecarbon"
    needs_window = True

    def __init__(self, *, country_iso_code: str = "FRA", include_gpu: bool = False,
                 idle_window_s: float = DEFAULT_MIN_WINDOW_S, sleep=time.sleep):
        self.country_iso_code = country_iso_code
        self.include_gpu = include_gpu  # a CPU-provider profile must not be charged for an idle GPU
        self.idle_window_s = idle_window_s
        self._sleep = sleep
        self._tracker = None
        self._idle_w: float | None = None
        self.cpu_mode: str | None = None
        self.measured = False

    def available(self) -> tuple[bool, str]:
        try:
            import codecarbon  # noqa: F401
        except ImportError:
            return False, "codecarbon is not installed (pip install codecarbon); use --energy power-model --power-w W"
        return True, f"codecarbon offline tracker (country {self.country_iso_code})"

    def _make_tracker(self):
        from codecarbon import OfflineEmissionsTracker

        # codecarbon logs warnings (unknown CPU, no RAPL) at import and init; they would break
        # the CLI's output, and the same facts go into this meter's note instead.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            return OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code, save_to_file=False, save_to_api=False,
                save_to_logger=False, save_to_prometheus=False, log_level="error", tracking_mode="machine",
                allow_multiple_runs=True, measure_power_secs=max(self.idle_window_s, 1.0),
            )

    def _task_j(self, run_window_fn) -> tuple[float, object]:
        with contextlib.redirect_stdout(io.StringIO()):
            self._tracker.start_task("finplan")
            outcome = run_window_fn()
            data = self._tracker.stop_task()
        energy_kwh = data.cpu_energy + data.ram_energy + (data.gpu_energy if self.include_gpu else 0.0)
        return check_reading(float(energy_kwh) * KWH_TO_J, "codecarbon energy"), outcome

    def start(self) -> None:
        if self._tracker is not None:
            return
        self._tracker = self._make_tracker()

        def idle():
            t0 = time.perf_counter()
            self._sleep(self.idle_window_s)
            return time.perf_counter() - t0

        idle_j, idle_s = self._task_j(idle)
        self._idle_w = idle_j / max(idle_s, 1e-9)
        self.cpu_mode = self._cpu_mode()
        self.measured = self.cpu_mode in MEASURING_CPU_MODES

    def _cpu_mode(self) -> str | None:
        # codecarbon has no public accessor for the method it picked; read it defensively.
        for hardware in getattr(self._tracker, "_hardware", []) or []:
            if type(hardware).__name__ == "CPU":
                return getattr(hardware, "_mode", None)
        return None

    def idle_power_w(self) -> float | None:
        return self._idle_w

    def note(self) -> str:
        if self.measured:
            return f"codecarbon read the {self.cpu_mode} counters (machine mode, idle subtracted)"
        return (f"ESTIMATED by codecarbon: CPU via {self.cpu_mode or 'unknown'} mode (TDP x load; no power counters "
                "here) and RAM as a constant, machine-wide, idle subtracted; not a measurement")

    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        if self._tracker is None:
            self.start()
        total_j, (runs, window_s) = self._task_j(lambda: run_window(workload.run, min_window_s))
        active_j = total_j - self._idle_w * window_s
        note = None
        if active_j < 0:
            note = f"below idle noise ({active_j / runs:.3g} J/run before clamping to 0)"
            active_j = 0.0
        return EnergyReading(active_j / runs, self.method, self.measured, runs, window_s, note)

    def close(self) -> None:
        if self._tracker is not None:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._tracker.stop()
            except Exception:
                pass
            self._tracker = None
