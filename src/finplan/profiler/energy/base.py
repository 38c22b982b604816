"""The ``EnergyMeter`` interface shared by every energy backend.

A meter says whether it can work here (``available() -> (ok, reason)``) and, for each part,
returns joules per run with how they were obtained (``method``) and whether they were
``measured`` by a hardware counter or estimated. Counter meters repeat a short part inside
one window of at least ``min_window_s`` (the counters tick every ~1-100 ms) and subtract the
idle power measured over an equally long window.

A part that takes time never gets 0 J in silence. When a backend cannot resolve a part (its
window's energy is within the idle noise, a counter did not move, a file says 0) ``measure``
returns the raw figure, ``unresolved`` says why, and ``EnergyMeter.fallback`` replaces it by
a labelled estimate: watts per busy CPU x the part's CPU-seconds per run (method
``power-model``, ``measured: false``, ``fallback_from`` the backend); the profiler says so in
the profile and on stderr.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from finplan.errors import EnvironmentFault

DEFAULT_MIN_WINDOW_S = 1.0
# Watts per busy CPU thread when nothing better is known: codecarbon's own figure for a CPU missing
# from its TDP table. The default power model and the fallback estimate use it.
DEFAULT_WATTS_PER_CPU = 4.0


@dataclass(frozen=True)
class Workload:
    """One part to measure: ``run`` executes it once; ``latency_s`` and ``cpu_utilisation`` come from timing."""

    name: str
    kind: str  # "block", "exit" or "whole"
    run: Callable[[], object]
    latency_s: float
    cpu_utilisation: float | None = None


@dataclass(frozen=True)
class EnergyReading:
    energy_j: float  # per run, idle baseline subtracted where the method has one
    method: str
    measured: bool
    runs: int = 0  # how many runs shared the window (0: computed, not run)
    window_s: float = 0.0
    note: str | None = None
    cpu_s: float | None = None  # process CPU-seconds per run in the window (all threads); None: not run
    fallback_from: str | None = None  # the backend that could not resolve this part (an estimate replaced it)

    def to_dict(self) -> dict:
        doc = {"value": self.energy_j, "method": self.method, "measured": self.measured}
        if self.fallback_from:
            doc["fallback_from"] = self.fallback_from
        if self.runs:
            doc["runs"] = self.runs
            doc["window_s"] = round(self.window_s, 4)
        if self.note:
            doc["note"] = self.note
        return doc


def unresolved(reading: EnergyReading, latency_s: float) -> str | None:
    """Why ``reading`` cannot stand for a part that takes ``latency_s`` per run; None when it can."""
    value = reading.energy_j
    if value is None or not math.isfinite(value):
        return f"{reading.method} gave no finite energy ({value})"
    if value <= 0 and latency_s > 0:
        return f"{reading.method} gave {value:.3g} J/run" + (f", {reading.note}" if reading.note else "")
    return None


class EnergyMeter(ABC):
    method: str = ""
    measured: bool = False
    needs_window: bool = False  # True when measuring means running the part for a window
    needs_utilisation: bool = False  # True when the meter uses the part's CPU utilisation (power model)
    # The shortest window the backend resolves; shorter requested windows are raised to it.
    min_window_floor_s: float = 0.0

    def window_s(self, requested_s: float) -> float:
        """The energy window to use for a requested ``--energy-window-s``."""
        return max(float(requested_s), self.min_window_floor_s)

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, what will be used) or (False, why not and what to use instead)."""

    def start(self) -> None:
        """Set up (and measure the idle baseline) before the first ``measure``."""

    def close(self) -> None:
        """Release what ``start`` took."""

    def idle_power_w(self) -> float | None:
        return None

    def describe(self) -> dict:
        """The profile's top-level ``energy`` entry."""
        doc = {"method": self.method, "measured": self.measured, "idle_power_w": self.idle_power_w()}
        note = self.note()
        if note:
            doc["note"] = note
        return doc

    def note(self) -> str | None:
        return None

    @abstractmethod
    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        """Joules per run of ``workload``: the backend's own figure, which may be unresolved (see ``unresolved``)."""

    # ------------------------------------------------------------ fallback for unresolved parts

    def _record_resolved(self, active_j: float, cpu_s: float) -> None:
        """A window this meter resolved: its active joules and the process CPU-seconds it took."""
        if active_j > 0 and cpu_s > 0:
            totals = self.__dict__.setdefault("_resolved_totals", [0.0, 0.0])
            totals[0] += active_j
            totals[1] += cpu_s

    def default_watts_per_cpu(self) -> tuple[float, str]:
        """Watts per busy CPU when nothing better is known."""
        return DEFAULT_WATTS_PER_CPU, (f"{DEFAULT_WATTS_PER_CPU:g} W per busy CPU (codecarbon's figure for a CPU "
                                       "it does not know)")

    def fallback_watts_per_cpu(self) -> tuple[float, str]:
        """(watts per busy CPU, how it was obtained) for estimating parts this meter could not resolve:
        what the meter itself gave per CPU-second over the windows it resolved, else ``default_watts_per_cpu``."""
        active_j, cpu_s = self.__dict__.get("_resolved_totals", (0.0, 0.0))
        if active_j > 0 and cpu_s > 0:
            watts = active_j / cpu_s
            return watts, f"{watts:.3g} W per busy CPU, what {self.method} gave per CPU-second over the parts it resolved"
        return self.default_watts_per_cpu()

    def fallback(self, workload: Workload, reading: EnergyReading, cpu_s_per_run: float | None,
                 why: str) -> EnergyReading:
        """The labelled estimate that replaces an unresolved ``reading``: watts per busy CPU x CPU-seconds per run.

        Without a positive CPU time (a part that waits rather than computes) it charges one busy CPU
        over the part's p50 latency, so a part that takes time never costs 0 J."""
        watts, how = self.fallback_watts_per_cpu()
        if cpu_s_per_run is not None and cpu_s_per_run > 0:
            seconds, basis = cpu_s_per_run, f"{cpu_s_per_run:.3g} CPU-s/run measured"
        else:
            seconds, basis = workload.latency_s, f"one busy CPU over the p50 latency {workload.latency_s:.3g} s"
        note = f"ESTIMATED (fallback: {why}): {how} x {basis}"
        return EnergyReading(watts * seconds, "power-model", False, reading.runs, reading.window_s, note,
                             reading.cpu_s, self.method)


def run_window(run: Callable[[], object], min_window_s: float, clock=time.perf_counter) -> tuple[int, float]:
    """Run ``run`` back to back until ``min_window_s`` has passed; (runs, seconds)."""
    runs, elapsed, _ = run_window_cpu(run, min_window_s, clock)
    return runs, elapsed


def run_window_cpu(run: Callable[[], object], min_window_s: float, clock=time.perf_counter,
                   cpu_clock=time.process_time) -> tuple[int, float, float]:
    """``run_window`` that also returns the process CPU-seconds (every thread) the window took."""
    runs = 0
    cpu0 = cpu_clock()
    start = clock()
    while True:
        run()
        runs += 1
        elapsed = clock() - start
        if elapsed >= min_window_s:
            return runs, elapsed, max(cpu_clock() - cpu0, 0.0)


class CounterMeter(EnergyMeter):
    """A meter over a cumulative hardware energy counter (joules since some origin).

    Subclasses implement ``read_j`` (monotone after their own wrap-around handling; raise
    EnvironmentFault on NaN or a counter that runs backwards). Idle power is measured once
    in ``start`` over ``idle_window_s`` with the process asleep.
    """

    measured = True
    needs_window = True

    def __init__(self, *, idle_window_s: float = DEFAULT_MIN_WINDOW_S, sleep=time.sleep, clock=time.perf_counter):
        self.idle_window_s = idle_window_s
        self._sleep = sleep
        self._clock = clock
        self._idle_w: float | None = None

    @abstractmethod
    def read_j(self) -> float:
        """Cumulative joules (any origin)."""

    def start(self) -> None:
        e0, t0 = self.read_j(), self._clock()
        self._sleep(self.idle_window_s)
        e1, t1 = self.read_j(), self._clock()
        self._idle_w = check_reading((e1 - e0) / max(t1 - t0, 1e-9), f"{self.method} idle power")

    def idle_power_w(self) -> float | None:
        return self._idle_w

    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        if self._idle_w is None:
            self.start()
        e0 = self.read_j()
        runs, window_s, cpu_s = run_window_cpu(workload.run, min_window_s, self._clock)
        e1 = self.read_j()
        total_j = check_reading(e1 - e0, f"{self.method} energy over {workload.name}")
        active_j = total_j - self._idle_w * window_s
        note = None
        if active_j <= 0:
            # At or below the idle baseline: the part's own energy is within the counter's noise.
            # Returned as is (never clamped to 0); the profiler replaces it by a labelled estimate.
            note = f"within the idle noise ({total_j:.3g} J in {window_s:.3g} s at {self._idle_w:.3g} W idle)"
        else:
            self._record_resolved(active_j, cpu_s)
        return EnergyReading(active_j / runs, self.method, True, runs, window_s, note, cpu_s / runs)


# What a counter that returns no number points to: the machine, not the user's files.
COUNTER_CHECK = "the energy counter this --energy backend reads; --energy power-model --power-w W estimates instead"


def check_reading(value: float, what: str) -> float:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        raise EnvironmentFault(f"{what} is {value}; the energy counter returned no finite number",
                               check=COUNTER_CHECK)
    return float(value)
