"""Latency of each part with onnxruntime: one session per part, interleaved repetitions.

Why interleaved: a laptop or a shared VM drifts (frequency scaling, a neighbour waking up);
running part A a thousand times, then part B, would give B a different machine than A. We
run every part once per round, in a seeded shuffled order, so drift hits all parts alike,
until the 95% confidence interval of every median is within the target or the budget ends.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx

from finplan.errors import EnvironmentFault, FinplanInputError
from finplan.fileio import available_cpus  # one definition: the runtimes and the CLI bound threads by it
import finplan.profiler.stats as stats
from finplan.profiler.device import physical_cores

OPTIMIZATION_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")



def default_threads() -> int:
    """Physical cores this process may use (onnxruntime's default), at least 1."""
    return max(min(physical_cores() or available_cpus(), available_cpus()), 1)


# Runs per visit of a part in a timing round (only the last is timed): see time_round_robin.
WARM_VISIT_RUNS = 2


@dataclass(frozen=True)
class SessionConfig:
    """The onnxruntime session options every part is timed with; recorded in the profile."""

    intra_op_threads: int
    inter_op_threads: int = 1
    execution_provider: str = "CPUExecutionProvider"
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    execution_mode: str = "ORT_SEQUENTIAL"
    # Off, as finplan's runtime runs its parts (finplan.deploy.node_runtime.session_options): the
    # profile must time the parts the way they will run. onnxruntime's default (on) makes a part
    # faster when it runs alone back to back, and slower when several sessions share the cores.
    allow_spinning: bool = False

    @classmethod
    def default(cls, threads: int | None = None, provider: str = "CPUExecutionProvider") -> "SessionConfig":
        # onnxruntime's own default is one thread per physical core; we set that explicitly (not "0 =
        # default") so the profile says what was used.
        return cls(intra_op_threads=threads or default_threads(), execution_provider=provider)

    def to_dict(self) -> dict:
        import onnxruntime as ort

        return {**asdict(self), "onnxruntime_version": ort.__version__}

    def session_options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.graph_optimization_level)
        options.execution_mode = getattr(ort.ExecutionMode, self.execution_mode)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        options.log_severity_level = 3  # errors only: onnxruntime's warnings would break the one-line output
        return options


def check_provider(config: SessionConfig) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if config.execution_provider not in available:
        raise EnvironmentFault(f"--provider: execution provider {config.execution_provider!r} is not available in "
                               f"this onnxruntime (available: {', '.join(available)})",
                               check="the onnxruntime package installed (onnxruntime-gpu has CUDAExecutionProvider) "
                                     "and its drivers, or choose an available provider")


# What onnxruntime says when the system refuses it a thread (a process table exhausted by other runs).
THREAD_FAILURES = ("pthread_create", "Resource temporarily unavailable")


def make_session(model: onnx.ModelProto, config: SessionConfig, *, what: str, file=None):
    """An onnxruntime session for ``model``; FinplanInputError when onnxruntime cannot load it,
    EnvironmentFault when the machine would not give it the threads it asks for."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=config.session_options(),
                                    providers=[config.execution_provider])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if any(sign in str(exc) for sign in THREAD_FAILURES):  # the machine ran out of threads, not a bad model
            raise EnvironmentFault(f"onnxruntime could not start the threads of {what}: {first[:300]}",
                                   check="the thread limits (ulimit -u, the container's pids limit) and what else "
                                         "runs here; fewer --threads") from None
        raise FinplanInputError(f"onnxruntime cannot load {what}: {first[:300]}", file=file) from None


@dataclass
class PartTimes:
    """Per-call wall-clock seconds of one part."""

    wall_s: list[float] = field(default_factory=list)

    def summary(self) -> stats.Summary:
        return stats.summarize(self.wall_s)


def cpu_utilisation(run: Callable[[], object], *, window_s: float = 0.2, cpus: int | None = None,
                    clock: Callable[[], float] = time.perf_counter,
                    cpu_clock: Callable[[], float] = time.process_time) -> float:
    """Share of this machine's CPUs (0..1) that ``run`` keeps busy, over a window of back-to-back runs.

    Process CPU time counts every onnxruntime thread. Measured in its own window because
    reading the process CPU clock costs ~0.1 ms in some VMs: inside the timing loop it
    would slow the loop more than the parts it times.
    """
    cpus = cpus or available_cpus()
    c0, t0 = cpu_clock(), clock()
    while clock() - t0 < window_s:
        run()
    c1, t1 = cpu_clock(), clock()
    return float(min(max((c1 - c0) / max(t1 - t0, 1e-9) / cpus, 0.0), 1.0))


@dataclass
class TimingResult:
    times: dict[str, PartTimes]
    converged: dict[str, bool]
    rounds: int
    elapsed_s: float
    budget_s: float
    target_rel_ci: float

    def to_dict(self) -> dict:
        return {"rounds": self.rounds, "elapsed_s": round(self.elapsed_s, 3), "budget_s": self.budget_s,
                "target_rel_ci95_of_median": self.target_rel_ci, "all_converged": all(self.converged.values()),
                "interleaved": True}


def time_round_robin(runners: dict[str, Callable[[], object]], *, budget_s: float, warmup_runs: int = 3,
                     min_runs: int = 10, max_runs: int = 100_000, target_rel_ci: float = 0.02,
                     confidence: float = 0.95, seed: int = 0, check_every: int = 5, visit_runs: int = WARM_VISIT_RUNS,
                     self_timed: frozenset = frozenset(),
                     progress: Callable[[str, int, int], None] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> TimingResult:
    """Time every runner in interleaved rounds until each median is known to ``target_rel_ci``.

    Each round visits every part once, in a freshly shuffled (seeded) order; a visit runs the
    part ``visit_runs`` times back to back and times only the last run, so that each timed run
    finds its weights and code in cache as a runtime serving a stream of inputs does (the
    first run of a visit follows other parts that evicted them). A runner named in
    ``self_timed`` returns its own duration in seconds (what a runtime clocks), used instead of
    the wall time of the call. Stops when every
    part has at least ``min_runs`` samples and the half-width of its median's confidence
    interval is within ``target_rel_ci`` of the median, or when ``budget_s`` is spent
    (at least ``min_runs`` rounds always run, so a tiny budget still yields statistics).
    """
    names = list(runners)
    for name in names:  # warm-up: first runs allocate memory arenas and pick kernels
        for _ in range(warmup_runs):
            runners[name]()
    rng = np.random.default_rng(seed)
    times = {name: PartTimes() for name in names}
    converged = {name: False for name in names}
    start = clock()
    rounds = 0
    budget_units = max(int(round(budget_s * 10)), 1)
    while rounds < max_runs:
        for index in rng.permutation(len(names)):
            name = names[index]
            run = runners[name]
            for _ in range(visit_runs - 1):
                run()
            t0 = clock()
            reported = run()
            elapsed_s = clock() - t0
            times[name].wall_s.append(float(reported) if name in self_timed else elapsed_s)
        rounds += 1
        elapsed = clock() - start
        if rounds >= min_runs and rounds % check_every == 0:
            for name in names:  # re-check every part: more samples can also widen an interval
                converged[name] = stats.median_converged(times[name].wall_s, target_rel_ci, confidence)
            if all(converged.values()):
                break
        if progress is not None and rounds % check_every == 0:
            progress("timing parts", min(int(elapsed * 10), budget_units), budget_units)
        if rounds >= min_runs and elapsed >= budget_s:
            break
    for name in names:  # final verdict on all samples
        converged[name] = stats.median_converged(times[name].wall_s, target_rel_ci, confidence)
    if progress is not None:
        progress("timing parts", budget_units, budget_units)
    return TimingResult(times, converged, rounds, clock() - start, budget_s, target_rel_ci)


# A thread count within this share of the fastest counts as as fast (fewer threads then win:
# they leave cores to other work and vary less).
THREADS_TIE = 0.03


def thread_candidates(max_threads: int) -> list[int]:
    """1, powers of two below ``max_threads``, and ``max_threads``."""
    out = {1, max(int(max_threads), 1)}
    k = 2
    while k < max_threads:
        out.add(k)
        k *= 2
    return sorted(out)


def choose_threads(make_runner: Callable[[int], Callable[[], object]], candidates: list[int], *, budget_s: float,
                   min_runs: int = 5, seed: int = 0,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[int, dict[int, float]]:
    """The intra-op thread count that runs the whole model fastest, and every candidate's p50.

    ``make_runner(threads)`` returns one run of the whole model with that many threads; the
    candidates are timed in interleaved rounds (``time_round_robin``) within ``budget_s``.
    Why measure: at batch 1 a small model spends more time waking a thread pool than
    computing (measured on a 2-core VM: 61 us with 1 thread, 90 us with 2), while a large
    model gains from every core; only the device can tell.
    """
    runners = {str(c): make_runner(c) for c in candidates}
    result = time_round_robin(runners, budget_s=budget_s, min_runs=min_runs, seed=seed, clock=clock)
    p50 = {c: result.times[str(c)].summary().p50 for c in candidates}
    best = min(p50.values())
    return min(c for c in candidates if p50[c] <= best * (1 + THREADS_TIE)), p50
