"""Per-part energies measured elsewhere (a lab power meter) and supplied in a file.

JSON: ``{"blocks": {"block1": 0.0012, ...}, "exits": {"exit1": 0.0001, ...},
"idle_power_w": 3.1, "note": "Monsoon, 5 kHz"}`` (``idle_power_w`` and ``note`` optional),
or a flat ``{"block1": 0.0012, ...}``. CSV: a header ``name,energy_j`` and one row per part.
Joules per run of each part, idle already subtracted. Every block and exit must be listed.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from finplan.errors import FinplanInputError
from finplan.profiler.energy.base import DEFAULT_MIN_WINDOW_S, EnergyMeter, EnergyReading, Workload



NOTE_CHARS = 200

class ExternalMeter(EnergyMeter):
    method = "external"
    measured = True

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.energies: dict[str, float] = {}
        self._idle_w: float | None = None
        self._note: str | None = None
        self._load()

    def _number(self, value, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise FinplanInputError(f"is {value!r}; expected joules per run (a number >= 0)", file=self.path, field=field)
        try:
            number = float(value)
        except ValueError:
            raise FinplanInputError(f"is {value!r}; expected joules per run (a number >= 0)", file=self.path,
                                    field=field) from None
        if math.isnan(number) or math.isinf(number) or number < 0:
            raise FinplanInputError(f"is {value}; expected a finite number of joules >= 0", file=self.path, field=field)
        return number

    def _joules(self, value, field: str) -> float:
        """A part's joules per run: > 0, since every part takes time (0 J would make it free to plan)."""
        number = self._number(value, field)
        if number == 0:
            raise FinplanInputError("is 0; expected the meter's joules per run (> 0): a part that takes time costs "
                                    "energy", file=self.path, field=field)
        return number

    def _load(self) -> None:
        from finplan.fileio import MAX_DOCUMENT_BYTES, require_input_file

        require_input_file(self.path, max_bytes=MAX_DOCUMENT_BYTES, what="JSON or CSV file of joules")
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FinplanInputError(f"cannot read ({exc.__class__.__name__})", file=self.path) from None
        if self.path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            if not rows or "name" not in rows[0] or "energy_j" not in rows[0]:
                raise FinplanInputError("expected a CSV header 'name,energy_j' and one row per block and exit",
                                        file=self.path)
            for index, row in enumerate(rows, start=2):
                if row.get("name") is None or row.get("energy_j") is None:  # a short row
                    raise FinplanInputError("expected a name and an energy_j", file=self.path, field=f"line {index}")
                self.energies[row["name"].strip()] = self._joules(row["energy_j"].strip(), f"line {index}.energy_j")
            return
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FinplanInputError(f"not valid JSON ({exc.msg}); expected JSON or a .csv", file=self.path) from None
        if not isinstance(doc, dict):
            raise FinplanInputError("expected a JSON object {\"blocks\": {name: joules}, \"exits\": {...}}",
                                    file=self.path)
        if "idle_power_w" in doc:
            self._idle_w = self._number(doc.pop("idle_power_w"), "idle_power_w")
        if "note" in doc:
            # a note travels into the profile: one line of at most NOTE_CHARS (a 5 MB note made 5 MB profiles)
            self._note = " ".join(str(doc.pop("note")).split())[:NOTE_CHARS]
        groups = {k: doc.pop(k) for k in ("blocks", "exits") if k in doc}
        for group, entries in groups.items():
            if not isinstance(entries, dict):
                raise FinplanInputError("expected an object {name: joules per run}", file=self.path, field=group)
            for name, value in entries.items():
                self.energies[name] = self._joules(value, f"{group}.{name}")
        for name, value in doc.items():
            self.energies[name] = self._joules(value, name)

    def check_parts(self, names: list[str]) -> None:
        """Every part has an energy and no entry names a part the model lacks (before measuring)."""
        missing = [n for n in names if n not in self.energies]
        if missing:
            raise FinplanInputError(f"has no energy for {', '.join(missing)}; expected joules per run for every block "
                                    f"and exit ({', '.join(names)})", file=self.path)
        extra = sorted(set(self.energies) - set(names) - {"whole_model"})
        if extra:
            raise FinplanInputError(f"names {', '.join(extra)}, which the model does not have "
                                    f"(parts: {', '.join(names)})", file=self.path)

    def available(self) -> tuple[bool, str]:
        return True, f"energies from {self.path}"

    def idle_power_w(self) -> float | None:
        return self._idle_w

    def note(self) -> str:
        return f"supplied by the user in {self.path.name}" + (f": {self._note}" if self._note else "")

    def measure(self, workload: Workload, *, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> EnergyReading:
        if workload.name not in self.energies:
            return EnergyReading(float("nan"), self.method, True)  # the caller skips parts without a figure
        return EnergyReading(self.energies[workload.name], self.method, True)
