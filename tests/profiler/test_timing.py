"""Interleaving and stopping rules of the timing loop, on fake runners and a fake clock."""
import numpy as np

from finplan.profiler.timing import SessionConfig, cpu_utilisation, time_round_robin


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _runners(clock, order, durations, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)

    def make(name):
        def run():
            order.append(name)
            clock.now += durations[name] * (1 + jitter * rng.standard_normal())
        return run
    return {name: make(name) for name in durations}


def test_every_round_runs_every_part_once_in_shuffled_order():
    clock, order = FakeClock(), []
    durations = {"a": 1e-3, "b": 2e-3, "c": 5e-4}
    result = time_round_robin(_runners(clock, order, durations), budget_s=1.0, warmup_runs=2, min_runs=10,
                              clock=clock, check_every=5, visit_runs=1)
    timed = order[2 * 3:]  # after warm-up
    rounds = [timed[i:i + 3] for i in range(0, len(timed), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # not always the same order: drift is spread across parts
    assert result.rounds == len(rounds)
    for name, duration in durations.items():
        assert np.median(result.times[name].wall_s) == np.float64(duration) or \
            abs(np.median(result.times[name].wall_s) - duration) < 1e-12


def test_stops_early_when_every_median_is_tight():
    clock, order = FakeClock(), []
    durations = {"a": 1e-3, "b": 2e-3}
    result = time_round_robin(_runners(clock, order, durations, jitter=0.001), budget_s=100.0, min_runs=10,
                              clock=clock)
    assert all(result.converged.values())
    assert result.elapsed_s < 1.0  # far below the 100 s budget


def test_budget_ends_a_noisy_run_and_says_not_converged():
    clock, order = FakeClock(), []
    durations = {"a": 1e-2, "b": 1e-2}
    result = time_round_robin(_runners(clock, order, durations, jitter=0.9), budget_s=0.5, min_runs=10, clock=clock)
    assert not all(result.converged.values())
    assert 0.5 <= result.elapsed_s < 0.5 + 0.2  # stopped within one round of the budget
    assert result.to_dict()["all_converged"] is False


def test_min_runs_even_with_a_tiny_budget():
    clock, order = FakeClock(), []
    result = time_round_robin(_runners(clock, order, {"a": 1.0}), budget_s=1e-6, min_runs=7, clock=clock)
    assert len(result.times["a"].wall_s) == 7


def test_cpu_utilisation_is_a_share_of_the_machine():
    clock, cpu = FakeClock(), FakeClock()

    def run():  # 2 CPUs busy for every second of wall time
        clock.now += 0.01
        cpu.now += 0.02
    assert cpu_utilisation(run, window_s=0.1, cpus=4, clock=clock, cpu_clock=cpu) == 0.5
    assert cpu_utilisation(run, window_s=0.1, cpus=1, clock=clock, cpu_clock=cpu) == 1.0  # clipped


def test_session_options_are_recorded():
    doc = SessionConfig.default(threads=3).to_dict()
    assert doc["intra_op_threads"] == 3 and doc["execution_provider"] == "CPUExecutionProvider"
    assert doc["graph_optimization_level"] == "ORT_ENABLE_ALL" and "onnxruntime_version" in doc


def test_a_visit_runs_a_part_back_to_back_and_times_only_the_warm_run():
    """The first run of a visit pays for a cold cache (here 10x); only the last run is timed."""
    clock, order = FakeClock(), []
    durations = {"a": 1e-3, "b": 2e-3}

    def make(name):
        def run():
            cold = not order or order[-1] != name
            order.append(name)
            clock.now += durations[name] * (10.0 if cold else 1.0)
        return run
    result = time_round_robin({n: make(n) for n in durations}, budget_s=1.0, warmup_runs=1, min_runs=10,
                              clock=clock, visit_runs=2)
    timed = order[2:]
    assert all(timed[i] == timed[i + 1] for i in range(0, len(timed), 2))  # visits are pairs
    for name, duration in durations.items():
        assert max(result.times[name].wall_s) < 1.0001 * duration


def test_a_self_timed_runner_reports_its_own_duration():
    clock, order = FakeClock(), []
    runners = _runners(clock, order, {"a": 1e-3})
    runners["probe"] = lambda: (clock.__setattr__("now", clock.now + 5e-3), 1e-4)[1]
    result = time_round_robin(runners, budget_s=1.0, min_runs=10, clock=clock, self_timed=frozenset({"probe"}))
    assert set(result.times["probe"].wall_s) == {1e-4}
    assert np.median(result.times["a"].wall_s) == np.float64(1e-3) or \
        abs(np.median(result.times["a"].wall_s) - 1e-3) < 1e-12


def test_thread_candidates():
    from finplan.profiler.timing import thread_candidates

    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(6) == [1, 2, 4, 6]
    assert thread_candidates(16) == [1, 2, 4, 8, 16]


def test_choose_threads_takes_the_fastest_and_fewer_threads_on_a_tie():
    from finplan.profiler.timing import choose_threads

    clock = FakeClock()

    def runner_for(durations):
        def make(threads):
            def run():
                clock.now += durations[threads]
            return run
        return make
    chosen, p50 = choose_threads(runner_for({1: 3e-4, 2: 1.6e-4, 4: 1e-4}), [1, 2, 4], budget_s=1.0, clock=clock)
    assert chosen == 4 and p50 == {1: 3e-4, 2: 1.6e-4, 4: 1e-4} or abs(p50[4] - 1e-4) < 1e-12
    chosen, _ = choose_threads(runner_for({1: 1.02e-4, 2: 1e-4}), [1, 2], budget_s=1.0, clock=clock)
    assert chosen == 1  # within 3% of the fastest: fewer threads win
    chosen, _ = choose_threads(runner_for({1: 1.5e-4, 2: 1e-4}), [1, 2], budget_s=1.0, clock=clock)
    assert chosen == 2
