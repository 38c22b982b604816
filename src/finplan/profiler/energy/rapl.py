"""RAPL energy counters under /sys/class/powercap (Intel, and AMD Zen through the same driver).

Reads the top-level ``intel-rapl:N`` zones (one per package; their sub-zones such as
``intel-rapl:0:0`` are parts of the package and would be counted twice). ``psys`` zones
cover the whole platform and overlap the packages, so they are skipped. Each ``energy_uj``
wraps at ``max_energy_range_uj``; a decrease is a wrap only when the implied energy is
plausible for the time elapsed, otherwise the counter ran backwards and we stop.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from finplan.errors import EnvironmentFault
from finplan.profiler.energy.base import CounterMeter

# FINPLAN_POWERCAP_ROOT: for containers that mount the host's sysfs elsewhere, and for tests (a fake tree).
DEFAULT_ROOT = Path(os.environ.get("FINPLAN_POWERCAP_ROOT", "/sys/class/powercap"))
# A wrap is accepted when the implied average power stays below this (a 2-socket server peaks < 1 kW).
MAX_PLAUSIBLE_POWER_W = 5000.0
# What to look at when a counter misbehaves: the machine, never the user's files.
RAPL_CHECK = ("the powercap counters (readable by this user? reset by another tool? a VM passing a broken one?); "
              "--energy power-model --power-w W estimates energy without them")


class RaplMeter(CounterMeter):
    method = "rapl"

    def __init__(self, root: str | Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root or os.environ.get("FINPLAN_POWERCAP_ROOT") or DEFAULT_ROOT)
        self._zones: list[Path] | None = None
        self._last: dict[Path, tuple[int, float]] = {}
        self._total_uj = 0

    def zones(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = []
        for zone in sorted(self.root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue  # sub-zone (core, uncore, dram) of a package already counted
            name_file = zone / "name"
            try:
                if name_file.is_file() and name_file.read_text().strip() == "psys":
                    continue
            except OSError:
                pass
            found.append(zone)
        return found

    def available(self) -> tuple[bool, str]:
        zones = self.zones()
        if not zones:
            return False, (f"no RAPL counters: {self.root}/intel-rapl:* does not exist (no RAPL on this CPU or "
                           "not exposed in this VM/container); use --energy codecarbon (estimate), "
                           "--energy power-model --power-w W, or --energy external --energy-file F")
        for zone in zones:
            try:
                (zone / "energy_uj").read_text()
                (zone / "max_energy_range_uj").read_text()
            except PermissionError:
                return False, (f"{zone}/energy_uj is not readable (root-only since Linux 5.10); run as root, or "
                               f"'sudo chmod a+r {self.root}/intel-rapl:*/energy_uj', or use --energy power-model")
            except OSError as exc:
                return False, f"{zone}/energy_uj cannot be read ({exc.strerror or exc}); use --energy power-model"
        return True, f"RAPL package counters: {', '.join(z.name for z in zones)}"

    def _read_zone(self, zone: Path, name: str) -> int:
        path = zone / name
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise EnvironmentFault(f"{path}: cannot read the energy counter ({exc.strerror or exc})",
                                   check=RAPL_CHECK) from None
        try:
            value = float(text)
        except ValueError:
            raise EnvironmentFault(f"{path}: reads {text!r}; expected an integer count of microjoules",
                                   check=RAPL_CHECK) from None
        if math.isnan(value) or math.isinf(value):
            raise EnvironmentFault(f"{path}: reads {text}; the energy counter returned no finite number", check=RAPL_CHECK)
        if value < 0 or value != int(value):
            raise EnvironmentFault(f"{path}: reads {text}; expected a non-negative integer count of microjoules",
                                   check=RAPL_CHECK)
        return int(value)

    def read_j(self) -> float:
        if self._zones is None:
            self._zones = self.zones()
        now = time.monotonic()
        for zone in self._zones:
            raw = self._read_zone(zone, "energy_uj")
            span = self._read_zone(zone, "max_energy_range_uj")
            if raw > span:
                raise EnvironmentFault(f"{zone / 'energy_uj'}: reads {raw} uJ, above max_energy_range_uj {span}",
                                       check=RAPL_CHECK)
            if zone in self._last:
                last_raw, last_time = self._last[zone]
                delta = raw - last_raw
                if delta < 0:
                    delta += span + 1  # the counter wrapped through max_energy_range_uj back to 0
                    elapsed = max(now - last_time, 1e-3)
                    if delta / 1e6 / elapsed > MAX_PLAUSIBLE_POWER_W:
                        raise EnvironmentFault(
                            f"{zone / 'energy_uj'}: the energy counter reads backwards ({last_raw} -> {raw} uJ in "
                            f"{elapsed:.3f} s; a wrap at {span} would imply {delta / 1e6 / elapsed:.0f} W)",
                            check=RAPL_CHECK)
                self._total_uj += delta
            self._last[zone] = (raw, now)
        return self._total_uj / 1e6
