"""Energy meters, one backend per module, behind ``EnergyMeter`` (see base.py).

``select_meter`` turns the ``--energy`` choice into a meter, checking availability before any
measurement. ``auto`` takes the first measuring backend that works here (RAPL, then NVML when
the model runs on a GPU provider) and otherwise an estimate (codecarbon if installed, else the
power model), with the reasons it skipped each one. Whatever the backend, a part it cannot
resolve (0 J for work that takes time) gets a labelled estimate instead: see base.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from finplan.errors import EnvironmentFault, FinplanInputError
from finplan.profiler.energy.base import (DEFAULT_MIN_WINDOW_S, DEFAULT_WATTS_PER_CPU, CounterMeter, EnergyMeter,
                                          EnergyReading, Workload, run_window, run_window_cpu, unresolved)

METHODS = ("auto", "rapl", "nvml", "codecarbon", "power-model", "external")

__all__ = ["CounterMeter", "DEFAULT_MIN_WINDOW_S", "DEFAULT_WATTS_PER_CPU", "EnergyMeter", "EnergyReading", "METHODS",
           "Selection", "Workload", "run_window", "run_window_cpu", "select_meter", "unresolved"]


@dataclass
class Selection:
    meter: EnergyMeter
    reason: str  # what was chosen and why
    skipped: list[str] = field(default_factory=list)  # "<method>: <why not>" for backends auto passed over


def _power_given(power_w, idle_w, busy_w) -> bool:
    return power_w is not None or idle_w is not None or busy_w is not None


def select_meter(method: str = "auto", *, execution_provider: str = "CPUExecutionProvider",
                 power_w: float | None = None, idle_w: float | None = None, busy_w: float | None = None,
                 energy_file=None, rapl_root=None, nvml_index: int = 0, country_iso_code: str = "FRA") -> Selection:
    """The meter for ``method``.

    FinplanInputError for options that do not go together; EnvironmentFault (with what to use
    instead) when the backend cannot work on this machine.
    """
    from finplan.profiler.energy.codecarbon import CodecarbonMeter
    from finplan.profiler.energy.external import ExternalMeter
    from finplan.profiler.energy.nvml import GPU_PROVIDERS, NvmlMeter
    from finplan.profiler.energy.power_model import PowerModelMeter
    from finplan.profiler.energy.rapl import RaplMeter

    if method not in METHODS:
        raise FinplanInputError(f"is {method!r}; expected one of {', '.join(METHODS)}", field="--energy")
    if energy_file is not None and method not in ("auto", "external"):
        raise FinplanInputError(f"--energy-file goes with --energy external, not {method}", field="--energy-file")
    if _power_given(power_w, idle_w, busy_w) and method not in ("auto", "power-model"):
        raise FinplanInputError(f"--power-w/--idle-w/--busy-w go with --energy power-model, not {method}",
                                field="--energy")
    on_gpu = execution_provider in GPU_PROVIDERS

    def build(name: str) -> EnergyMeter:
        if name == "rapl":
            return RaplMeter(rapl_root)
        if name == "nvml":
            return NvmlMeter(nvml_index)
        if name == "codecarbon":
            return CodecarbonMeter(country_iso_code=country_iso_code, include_gpu=on_gpu)
        if name == "power-model":
            return PowerModelMeter(power_w=power_w, idle_w=idle_w, busy_w=busy_w)
        if energy_file is None:
            raise FinplanInputError("--energy external needs --energy-file F (JSON or CSV of joules per part)",
                                    field="--energy-file")
        return ExternalMeter(energy_file)

    if method != "auto":
        meter = build(method)
        ok, reason = meter.available()
        if not ok:
            # the reason says what is missing here and which backend to use instead
            raise EnvironmentFault(f"--energy: {method} is unavailable here: {reason}")
        if method == "nvml" and not on_gpu:
            reason += (f"; NOTE the model runs on {execution_provider}, so the GPU counter does not see its work")
        return Selection(meter, reason)

    if energy_file is not None:
        return Selection(build("external"), f"--energy-file given: energies from {energy_file}")
    skipped = []
    for name in ("rapl", "nvml"):
        if name == "nvml" and not on_gpu:
            skipped.append(f"nvml: the model runs on {execution_provider}; the GPU counter would not see its work")
            continue
        meter = build(name)
        ok, reason = meter.available()
        if ok:
            return Selection(meter, reason, skipped)
        skipped.append(f"{name}: {reason}")
    if _power_given(power_w, idle_w, busy_w):
        meter = build("power-model")
        return Selection(meter, "no measuring backend; using the power you gave", skipped)
    meter = build("codecarbon")
    ok, reason = meter.available()
    if ok:
        return Selection(meter, "no measuring backend; " + reason, skipped)
    skipped.append(f"codecarbon: {reason}")
    return Selection(build("power-model"), "no measuring backend and no codecarbon; default power model", skipped)
