"""The ``EnergyMeter`` interface shared by every energy backend.

A meter says whether it can work here (``available() -> (ok, reason)``) and, for each part,
returns joules per run with how they were obtained (``method``) and whether they were
``measured`` by a hardware counter or estimated. Counter meters repeat a short part inside
one window of at least ``min_window_s`` (the counters tick every ~1-100 ms) and subtract the
idle power measured over an equally long window.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from finplan.errors import FinplanInputError

DEFAULT_MIN_WINDOW_S = 1.0


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

    def to_dict(self) -> dict:
        doc = {"value": self.energy_j, "method": self.method, "measured": self.measured}
        if self.runs:
            doc["runs"] = self.runs
            doc["window_s"] = round(self.window_s, 4)
        if self.note:
            doc["note"] = self.note
        return doc


class EnergyMeter(ABC):
    method: str = ""
    measured: bool = False
    needs_window: bool = False  # True when measuring means running the part for a window
    needs_utilisation: bool = False  # True when the meter uses the part's CPU utilisation (power model)

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
        """Joules per run of ``workload``."""


def run_window(run: Callable[[], object], min_window_s: float, clock=time.perf_counter) -> tuple[int, float]:
    """Run ``run`` back to back until ``min_window_s`` has passed; (runs, seconds)."""
    runs = 0
    start = clock()
    while True:
        run()
        runs += 1
        elapsed = clock() - start
        if elapsed >= min_window_s:
            return runs, elapsed


class CounterMeter(EnergyMeter):
    """A meter over a cumulative hardware energy counter (joules since some origin).

    Subclasses implement ``read_j`` (monotone after their own wrap-around handling; raise
    FinplanInputError on NaN or a counter that runs backwards). Idle power is measured once
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
        runs, window_s = run_window(workload.run, min_window_s, self._clock)
        e1 = self.read_j()
        total_j = check_reading(e1 - e0, f"{self.method} energy over {workload.name}")
        active_j = total_j - self._idle_w * window_s
        note = None
        if active_j < 0:
            # Below the idle baseline: the part's own energy is within the counter's noise.
            note = f"below idle noise ({active_j / runs:.3g} J/run before clamping to 0)"
            active_j = 0.0
        return EnergyReading(active_j / runs, self.method, True, runs, window_s, note)


def check_reading(value: float, what: str) -> float:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        raise FinplanInputError(f"{what} is {value}; the energy counter returned no finite number")
    return float(value)
