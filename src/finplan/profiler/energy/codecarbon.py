"""codecarbon's offline tracker in task mode, one task per window.

Offline only: ``OfflineEmissionsTracker`` with ``country_iso_code`` given never looks up the
location or the grid on the internet; ``save_to_file=False`` and no API/logger outputs mean
no emissions.csv and no network.

Tracking mode ``process``. On a machine without power counters codecarbon does not measure:
it turns CPU load into watts with a TDP (from its CPU table, or 4 W per thread when the CPU is
unknown). In ``machine`` mode that load is the whole machine's, so on a machine shared with
other work a neighbour busy during the idle baseline made every part "below idle" (clamped to
0 J: compute looked free), and one busy during a part's window was charged to the part. In
``process`` mode the CPU figure is this process's CPU time (every onnxruntime thread) x TDP
per thread, so only the part's own work counts; RAM is estimated from the process's memory,
and the idle window removes it. When codecarbon finds RAPL (or powermetrics/Power Gadget) it
reads those counters, which cover the whole package whatever the mode, and we say
``measured: true``. A window it cannot resolve is returned as is (see base.unresolved) and
replaced by a labelled estimate by the profiler.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time

from finplan.profiler.energy.base import (DEFAULT_MIN_WINDOW_S, EnergyMeter, EnergyReading, Workload,
                                          check_reading, run_window_cpu)

KWH_TO_J = 3.6e6
MEASURING_CPU_MODES = ("intel_rapl", "intel_power_gadget", "apple_powermetrics")


class CodecarbonMeter(EnergyMeter):
    method = "codecarbon"
    needs_window = True
    # codecarbon integrates power over about a second: windows of a few ms read 3.5x too high
    # (its RAM term is charged over its own task time) or fall into the idle noise
    min_window_floor_s = 1.0

    def __init__(self, *, country_iso_code: str = "FRA", include_gpu: bool = False,
                 idle_window_s: float = DEFAULT_MIN_WINDOW_S, sleep=time.sleep):
        self.country_iso_code = country_iso_code
        self.include_gpu = include_gpu  # a CPU-provider profile must not be charged for an idle GPU
        self.idle_window_s = idle_window_s
        self._sleep = sleep
        self._tracker = None
        self._idle_w: float | None = None
        self.cpu_mode: str | None = None
        self.tdp_w: float | None = None
        self.threads: int | None = None
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
                save_to_logger=False, save_to_prometheus=False, log_level="error", tracking_mode="process",
                allow_multiple_runs=True, measure_power_secs=max(self.idle_window_s, 1.0),
            )

    def _task(self, run_window_fn) -> tuple[float, float, object]:
        """(joules, seconds codecarbon integrated over, what ``run_window_fn`` returned) for one task."""
        with contextlib.redirect_stdout(io.StringIO()):
            self._tracker.start_task("finplan")
            outcome = run_window_fn()
            data = self._tracker.stop_task()
        energy_kwh = data.cpu_energy + data.ram_energy + (data.gpu_energy if self.include_gpu else 0.0)
        energy_j = check_reading(float(energy_kwh) * KWH_TO_J, "codecarbon energy")
        return energy_j, float(data.duration), outcome

    def start(self) -> None:
        if self._tracker is not None:
            return
        self._tracker = self._make_tracker()

        def idle():
            t0 = time.perf_counter()
            self._sleep(self.idle_window_s)
            return time.perf_counter() - t0

        idle_j, task_s, idle_s = self._task(idle)
        # Per second of codecarbon's own task time: the same span its energy covers.
        self._idle_w = idle_j / max(task_s if task_s > 0 else idle_s, 1e-9)
        self._read_cpu_model()  # codecarbon sets its hardware up at the first task
        self.measured = self.cpu_mode in MEASURING_CPU_MODES

    def _read_cpu_model(self) -> None:
        # codecarbon has no public accessor for the method it picked or its TDP; read them defensively.
        for hardware in getattr(self._tracker, "_hardware", []) or []:
            if type(hardware).__name__ == "CPU":
                self.cpu_mode = getattr(hardware, "_mode", None)
                tdp = getattr(hardware, "_tdp", None)
                threads = getattr(hardware, "_cpu_count", None)
                if isinstance(tdp, (int, float)) and tdp > 0 and isinstance(threads, int) and threads > 0:
                    self.tdp_w, self.threads = float(tdp), threads

    def idle_power_w(self) -> float | None:
        return self._idle_w

    def default_watts_per_cpu(self) -> tuple[float, str]:
        if self.tdp_w and self.threads:
            watts = self.tdp_w / self.threads
            return watts, f"{watts:.3g} W per busy CPU (codecarbon's TDP {self.tdp_w:g} W / {self.threads} threads)"
        return super().default_watts_per_cpu()

    def note(self) -> str:
        if self.measured:
            return (f"codecarbon read the {self.cpu_mode} counters (the whole package, so other work on this machine "
                    "counts too; idle subtracted)")
        per_thread = ""
        if self.tdp_w and self.threads:
            per_thread = f" = {self.tdp_w / self.threads:.3g} W per busy thread (TDP {self.tdp_w:g} W / {self.threads})"
        return (f"ESTIMATED by codecarbon: CPU via {self.cpu_mode or 'unknown'} mode, this process's CPU time x TDP per "
                f"thread{per_thread}, no power counters here; codecarbon's constant RAM power is part of the idle "
                "power subtracted; not a measurement")

    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        if self._tracker is None:
            self.start()
        total_j, task_s, (runs, window_s, cpu_s) = self._task(lambda: run_window_cpu(workload.run, min_window_s))
        active_j = total_j - self._idle_w * (task_s if task_s > 0 else window_s)
        note = None
        if active_j <= 0:
            # Returned as is, never clamped to 0: the profiler replaces it by a labelled estimate.
            note = f"within the idle noise ({total_j:.3g} J in {task_s:.3g} s at {self._idle_w:.3g} W idle)"
        else:
            self._record_resolved(active_j, cpu_s)
        return EnergyReading(active_j / runs, self.method, self.measured, runs, window_s, note, cpu_s / runs)

    def close(self) -> None:
        if self._tracker is not None:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    self._tracker.stop()
            except Exception:
                pass
            self._tracker = None
