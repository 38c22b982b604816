"""A directed network link and what a transfer over it costs: shared by the planner (which
predicts with it) and the runtime (which emulates it), so both use the same formula."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    bandwidth_bps: float
    latency_s: float
    energy_j_per_bit: float
    max_utilization: float = 1.0

    def time_s(self, nbytes: float) -> float:
        """Seconds to send ``nbytes``: 8 nbytes / bandwidth_bps + latency_s."""
        return 8.0 * nbytes / self.bandwidth_bps + self.latency_s

    def energy_j(self, nbytes: float) -> float:
        """Joules to send ``nbytes``: 8 nbytes x energy_j_per_bit."""
        return 8.0 * nbytes * self.energy_j_per_bit
