"""Shared helpers of benchmarks/paper.py and benchmarks/speed.py (not part of the package).

Everything here is plumbing: where the example files are, how a one-application scenario is
built, how a timing is taken (median over repeats), how CSV / markdown / figures are written
so that every file except the timing columns is byte-identical between two runs.
"""
from __future__ import annotations

import csv
import io
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper"
REFERENCE = ROOT / "tests" / "partition" / "data" / "paper_optima.json"
MODELS = ("b-alexnet", "b-resnet", "b-lenet")
DEFAULT_OUT = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------- problem building

def paper_network():
    from finplan.partition.documents import load_network

    return load_network(PAPER / "network.yaml")


def paper_card(model: str):
    from finplan.partition.documents import load_card_file

    return load_card_file(PAPER / f"{model}.json")


def one_app(network, card, max_latency_s: float, min_accuracy: float, *, mode: str = "static",
            source: str = "device", rate_hz: float | None = None, name: str = "app"):
    """A scenario with one application (the paper's sweeps are one application per point)."""
    from finplan.partition.problem import Application, Options, Scenario

    app = Application(name, card, f"{card.name}.json", source, max_latency_s, min_accuracy, rate_hz)
    return Scenario(network, (app,), Options(mode=mode))


def paper_sweep_points() -> list[tuple[str, float, float]]:
    """(sweep, min_accuracy, max_latency_s) of the paper's two sweeps, in the reference file's order:
    min accuracy 0.10 .. 0.85 at 5 ms, then max latency 3 .. 15 ms at accuracy 0.80 (29 points)."""
    points = [("accuracy", round(0.10 + 0.05 * i, 2), 0.005) for i in range(16)]
    points += [("latency", 0.80, ms / 1000) for ms in range(3, 16)]
    return points


# ---------------------------------------------------------------- timing

def median_time(fn: Callable[[], object], repeats: int, *, inner: Callable[[object], float] | None = None) -> tuple[float, object]:
    """Median over ``repeats`` calls of ``fn``'s wall time (or of ``inner(result)`` when given,
    e.g. the solver's own solve_time_s). Returns (median seconds, last result)."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
        times.append(inner(result) if inner is not None else wall)
    return statistics.median(times), result


def machine() -> str:
    """One line naming the machine the numbers come from (no hostname)."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    import numpy

    versions = f"Python {platform.python_version()}, numpy {numpy.__version__}"
    try:
        import highspy  # noqa: F401
        from importlib.metadata import version

        versions += f", highspy {version('highspy')}"
    except Exception:  # pragma: no cover - highspy is a dependency
        pass
    return f"{cpu}, {cpus} CPUs available{mem}, no GPU used; {platform.system()} {platform.machine()}; {versions}"


# ---------------------------------------------------------------- output files

def fmt(value) -> str:
    """Deterministic text of one cell: floats with 10 significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.10g}"
    if isinstance(value, (list, tuple)):
        return "|".join(str(v) for v in value)
    return str(value)


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([fmt(row.get(c)) for c in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def md_table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l, r, c)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out) + "\n"


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def sig(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def pyplot():
    """matplotlib with the Agg backend and settings that make PNGs reproducible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "svg.hashsalt": "finplan"})
    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp/software metadata in the PNG, so the file only changes when the figure does.
    fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x): y ~ x^k."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
