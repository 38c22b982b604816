"""Energy from a power model the user gives: constant watts, or idle + busy x utilisation.

energy per run = power x measured p50 latency. With ``idle_w``/``busy_w`` the power is
``idle_w + busy_w * u`` where ``u`` is the share of this machine's CPUs the part kept busy
(process CPU time over wall time over CPUs, measured while timing). Always an estimate.
Zero watts in all is refused: it would make every part's compute free.
"""
from __future__ import annotations

from finplan.errors import FinplanInputError
from finplan.profiler.energy.base import (DEFAULT_MIN_WINDOW_S, DEFAULT_WATTS_PER_CPU, EnergyMeter, EnergyReading,
                                          Workload)

__all__ = ["DEFAULT_WATTS_PER_CPU", "PowerModelMeter"]


class PowerModelMeter(EnergyMeter):
    method = "power-model"
    measured = False

    def __init__(self, *, power_w: float | None = None, idle_w: float | None = None, busy_w: float | None = None,
                 cpus: int | None = None):
        if power_w is not None and (idle_w is not None or busy_w is not None):
            raise FinplanInputError("give either --power-w or --idle-w with --busy-w, not both", field="--power-w")
        if (idle_w is None) != (busy_w is None):
            raise FinplanInputError("--idle-w and --busy-w go together (power = idle + busy x utilisation)",
                                    field="--idle-w" if idle_w is None else "--busy-w")
        for flag, value in (("--power-w", power_w), ("--idle-w", idle_w), ("--busy-w", busy_w)):
            if value is not None and not (value >= 0 and value < float("inf")):
                raise FinplanInputError(f"is {value}; expected watts >= 0", field=flag)
        if power_w is not None and power_w == 0:
            raise FinplanInputError("is 0; expected watts > 0 (0 W would make every part's compute free)",
                                    field="--power-w")
        if idle_w is not None and idle_w + busy_w == 0:
            raise FinplanInputError("--idle-w and --busy-w are both 0; expected some watts (0 W would make every "
                                    "part's compute free)", field="--busy-w")
        from finplan.fileio import available_cpus

        self.cpus = cpus or available_cpus()
        self.default_used = power_w is None and idle_w is None
        if self.default_used:
            idle_w, busy_w = 0.0, DEFAULT_WATTS_PER_CPU * self.cpus
        self.power_w, self.idle_w, self.busy_w = power_w, idle_w, busy_w
        self.needs_utilisation = power_w is None

    def available(self) -> tuple[bool, str]:
        return True, self.note()

    def idle_power_w(self) -> float | None:
        return None if self.power_w is not None else self.idle_w

    def note(self) -> str:
        if self.power_w is not None:
            return f"ESTIMATED: constant {self.power_w:g} W x measured p50 latency"
        text = f"ESTIMATED: ({self.idle_w:g} W idle + {self.busy_w:g} W x CPU utilisation) x measured p50 latency"
        if self.default_used:
            text += (f" (no power given: default {DEFAULT_WATTS_PER_CPU:g} W per CPU; pass --power-w or "
                     "--idle-w/--busy-w for your device)")
        return text

    def default_watts_per_cpu(self) -> tuple[float, str]:
        if self.power_w is not None:
            return self.power_w, f"the constant {self.power_w:g} W"
        if self.busy_w > 0:
            watts = self.busy_w / self.cpus
            return watts, f"{watts:.3g} W per busy CPU ({self.busy_w:g} W busy / {self.cpus} CPUs)"
        return super().default_watts_per_cpu()

    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        if self.power_w is not None:
            watts = self.power_w
        else:
            utilisation = 1.0 if workload.cpu_utilisation is None else workload.cpu_utilisation
            watts = self.idle_w + self.busy_w * utilisation
        return EnergyReading(watts * workload.latency_s, self.method, False)
