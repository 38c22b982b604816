"""``finplan plan``: place a model's blocks on a network (FIN, the optimum or a baseline)."""
from __future__ import annotations

from pathlib import Path

import click

from finplan.cli._console import print_json, stdout
from finplan.errors import FinplanInputError
from finplan.fileio import atomic_write_json, atomic_write_text, require_writable

SOLVER_CHOICES = ("fin", "fin-sequential", "exhaustive", "milp", "mcp", "device-only", "cloud-only", "single-cut",
                  "min-latency")


# How plan's messages name solve()'s parameters: by their options.
FIELDS = {"solver": "--solver", "gamma": "--gamma", "lam": "--lambda", "epsilon": "--epsilon",
          "time_limit_s": "--time-limit"}


def _number(value, convert):
    """``value`` (an option's text) as ``convert`` reads it, or the text itself when it does not
    read, so that FIN's one parameter check refuses it by the option's name."""
    try:
        return convert(str(value))
    except ValueError:
        return value


def _parameters(gamma, lam, epsilon):
    """--gamma, --lambda and --epsilon as numbers, checked by FIN's own parameter check."""
    from finplan.partition.fin import DEFAULT_EPSILON, check_epsilon, check_parameters

    gamma = None if gamma is None else _number(gamma, int)
    lam = _number(lam, float)
    epsilon = DEFAULT_EPSILON if epsilon is None else _number(epsilon, float)
    check_parameters(gamma, lam, gamma_field=FIELDS["gamma"], lambda_field=FIELDS["lam"])
    check_epsilon(epsilon, FIELDS["epsilon"])
    return gamma, lam, epsilon


def _load(scenario, model, network, source, max_latency, min_accuracy, rate, mode, raw_offload, non_strict):
    from finplan.partition.documents import load_scenario, parse_duration_s, parse_fraction, single_application
    from finplan.partition.problem import Options

    shortcut = [model, network, source, max_latency, min_accuracy]
    if scenario is not None:
        if any(v is not None for v in shortcut + [rate, mode]) or raw_offload or non_strict:
            raise FinplanInputError("give either a SCENARIO file or --model/--network/--source/--max-latency/"
                                    "--min-accuracy (and --mode etc.), not both", field="SCENARIO")
        return load_scenario(scenario)
    names = ["--model", "--network", "--source", "--max-latency", "--min-accuracy"]
    missing = [n for n, v in zip(names, shortcut) if v is None]
    if missing:
        raise FinplanInputError(f"missing {', '.join(missing)}; give a SCENARIO file or all of {', '.join(names)}",
                                field=missing[0])
    options = Options(mode or "static", not raw_offload, not non_strict)
    rate_hz = None
    if rate is not None:
        from finplan.fileio import finite_number

        try:
            rate_hz = finite_number(float(rate), file=None, field="--rate", positive=True)
        except ValueError:
            raise FinplanInputError(f"is {rate!r}; expected a number > 0", field="--rate") from None
    return single_application(model, network, source, parse_duration_s(max_latency, field="--max-latency"),
                              parse_fraction(min_accuracy, field="--min-accuracy"), rate_hz=rate_hz, options=options,
                              source_field="--source")


def _time_limit(value):
    if value is None:
        return None
    from finplan.partition.documents import parse_duration_s

    return parse_duration_s(value, field="--time-limit")


def _compare(scenario, gamma, lam, time_limit_s=None, epsilon=None):
    """Every solver on the scenario: (rows for the comparison table and the plan file, each
    solver's total solve time in seconds, measured in this run, and with several applications
    one totals row per solver: served, energy and gap to the lower bound)."""
    from finplan.partition.solve import SOLVERS, solve

    rows = []
    results = {}
    times = {}
    for name in SOLVERS:
        try:
            results[name] = solve(scenario, name, gamma=gamma, lam=lam, time_limit_s=time_limit_s, fields=FIELDS,
                                  **({} if epsilon is None else {"epsilon": epsilon}))
            times[name] = results[name].solve_time_s
        except FinplanInputError as exc:  # exhaustive refuses large instances: say so in the table
            results[name] = exc
    fin = results["fin"]
    for name in SOLVERS:
        res = results[name]
        if isinstance(res, FinplanInputError):
            rows.append({"solver": name, "skipped": res.detail})
            continue
        for app_res, fin_res in zip(res.apps, fin.apps):
            ev = app_res.evaluation
            row = {"solver": name, "application": app_res.app.name, "feasible": app_res.feasible,
                   "energy_j": ev.energy_j if ev else None, "latency_s": ev.latency_s if ev else None,
                   "accuracy": ev.accuracy if ev else None,
                   "placement": ",".join(ev.placement) if ev else None, "final_exit": ev.final_exit if ev else None,
                   "fin_saving": None, "reason": app_res.reason if not app_res.feasible else None}
            if ev and fin_res.feasible and ev.energy_j > 0:
                row["fin_saving"] = (ev.energy_j - fin_res.evaluation.energy_j) / ev.energy_j
            if app_res.notes:
                row["notes"] = list(app_res.notes)
            rows.append(row)
    totals = []
    if len(scenario.applications) > 1:
        for name in SOLVERS:  # one row per solver: served, energy, gap to the lower bound
            res = results[name]
            if isinstance(res, FinplanInputError):
                continue
            bound = res.extra.get("lower_bound") or {}
            totals.append({"solver": name, "served": sum(r.feasible for r in res.apps), "applications": len(res.apps),
                           "energy_j": res.energy_j, "lower_bound_j": bound.get("energy_j"),
                           "gap": bound.get("gap"), "served_at_most": bound.get("served_at_most")})
    return rows, times, totals


@click.command("plan")
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the plan (finplan.plan/1) here.")
@click.option("--solver", type=click.Choice(SOLVER_CHOICES), default="fin", show_default=True,
              help="fin (several applications: planned jointly), fin-sequential (one by one on the capacity left), "
                   "the exact optimum (exhaustive, milp) or a baseline.")
@click.option("--gamma", default=None,
              help="FIN on the paper's discretised graph with this many latency units (integer > 0; no energy bound). "
                   "Default: exact latencies.")
@click.option("--epsilon", default=None,
              help="FIN's bound where a frontier of exact labels is trimmed: energy <= (1 + epsilon) x the optimum "
                   "(>= 0; 0: always exact).  [default: 0.001]")
@click.option("--lambda", "lam", default="0", show_default=True, help="FIN proximity pruning (>= 0; 0 prunes nothing).")
@click.option("--time-limit", "time_limit", default=None,
              help="Stop the MILP after this long (e.g. 30s, 500ms); its best plan is then marked not proven optimal.")
@click.option("--compare", is_flag=True, help="Also run the optimum and every baseline; print one table.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan document on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but warnings and errors (stderr); with -o for scripts.")
@click.option("--export-graph", type=click.Path(dir_okay=False), help="Write FIN's feasible inference graph (GraphML).")
@click.option("--fail-infeasible", is_flag=True, help="Exit with code 1 when an application has no feasible plan.")
@click.option("--timings", is_flag=True,
              help="Write the measured solve times into the plan (and --json); without it they are null, so equal "
                   "inputs give equal bytes.")
@click.option("--model", help="Shortcut: model card (finplan.model/1).")
@click.option("--network", help="Shortcut: network (finplan.network/1).")
@click.option("--source", help="Shortcut: node where the input arrives.")
@click.option("--max-latency", help="Shortcut: latency bound, e.g. 5ms, 500us, 0.005.")
@click.option("--min-accuracy", help="Shortcut: accuracy target, e.g. 0.8 or 80%.")
@click.option("--rate", help="Shortcut: requests per second (enables utilisation limits).")
@click.option("--mode", type=click.Choice(["static", "dynamic"]), default=None, help="Shortcut: exit mode [static].")
@click.option("--raw-offload", is_flag=True, help="Shortcut: allow sending the raw input before block 1.")
@click.option("--non-strict", is_flag=True, help="Shortcut: latency <= max and accuracy >= min (default strict <, >).")
def command(scenario, output, solver, gamma, epsilon, lam, time_limit, compare, as_json, quiet, export_graph, fail_infeasible,
            timings, model, network, source, max_latency, min_accuracy, rate, mode, raw_offload, non_strict):
    """Place each application's blocks on the network, minimising energy.

    \b
    Examples:
      finplan plan examples/paper/scenario.yaml -o plan.json
      finplan plan examples/paper/latency-sweep.yaml --compare
      finplan plan --model examples/paper/b-alexnet.json --network examples/paper/network.yaml \\
                   --source device --max-latency 5ms --min-accuracy 0.8
      finplan plan examples/multi/scenario.yaml --solver milp --json

    An application whose constraints nothing can meet is reported (feasible false, with the
    reason) and the exit code stays 0 unless --fail-infeasible is given.

    The plan file's solve times are null unless --timings is given, so equal inputs give equal
    bytes; paths in it are relative to the plan file's folder (to the current folder when the
    plan is only printed with --json).
    """
    from finplan.partition.graphml import feasible_inference_graph
    from finplan.partition.binding import add_binding
    from finplan.partition.plan import cost_warnings, plan_document, validate_plan
    from finplan.partition.solve import solve

    gamma, lam, epsilon = _parameters(gamma, lam, epsilon)
    time_limit_s = _time_limit(time_limit)
    for path in (output, export_graph):
        if path:
            require_writable(path)
    scen = _load(scenario, model, network, source, max_latency, min_accuracy, rate, mode, raw_offload, non_strict)
    from finplan.cli._outputs import refuse_outputs_over_inputs, scenario_inputs

    inputs = scenario_inputs(scen)
    refuse_outputs_over_inputs({"-o": output, "--export-graph": export_graph}, inputs)
    for line in cost_warnings(scen):
        click.echo(f"finplan: warning: {line}", err=True)
    if time_limit_s is not None and solver != "milp" and not compare:
        click.echo(f"finplan: warning: --time-limit only bounds MILP runs (--solver milp, --compare); --solver "
                   f"{solver} does not use it", err=True)
    result = solve(scen, solver, gamma=gamma, lam=lam, time_limit_s=time_limit_s, epsilon=epsilon, fields=FIELDS)
    add_binding(scen, result, gamma)
    base_dir = Path(output).parent if output else None
    doc = plan_document(scen, result, timings=timings, base_dir=base_dir)
    rows = times = totals = None
    if compare:
        rows, times, totals = _compare(scen, gamma, lam, time_limit_s, epsilon)
        doc["comparison"] = [r if "skipped" in r else dict(r, solve_time_s=times.get(r["solver"]) if timings else None)
                             for r in rows]
        if totals:
            doc["comparison_totals"] = [dict(t, solve_time_s=times.get(t["solver"]) if timings else None)
                                        for t in totals]
    validate_plan(doc)
    graphs = []
    if export_graph:
        import networkx as nx

        from finplan.partition.context import contexts

        ctxs = contexts(scen)
        for ctx in ctxs:
            graph = feasible_inference_graph(ctx, gamma, lam, field="--export-graph", gamma_field="--gamma")
            target = Path(export_graph)
            if len(ctxs) > 1:
                target = target.with_name(f"{target.stem}-{ctx.app.name}{target.suffix}")
            graphs.append((target, "\n".join(nx.generate_graphml(graph)) + "\n"))
        # one graph per application has a derived name: it too may not land on an input
        refuse_outputs_over_inputs({f"--export-graph ({t.name})": t for t, _ in graphs}, inputs)
    if output:
        atomic_write_json(output, doc)
    for target, text in graphs:
        atomic_write_text(target, text)
    if as_json:
        print_json(doc)
    elif not quiet:
        from finplan.cli.show import print_comparison, print_comparison_totals, print_summary

        print_summary(doc, solve_time_s=result.solve_time_s)
        if rows:
            stdout.print()
            print_comparison(rows, times)
            if totals:
                stdout.print()
                print_comparison_totals(totals, times)
        if output:
            stdout.print(f"\nplan written to {output}")
        for target, _ in graphs:
            stdout.print(f"feasible inference graph written to {target}")
    if fail_infeasible and not all(a["feasible"] for a in doc["applications"]):
        # main() drops click's return code in non-standalone mode, so leave through SystemExit.
        import sys

        sys.stdout.flush()
        sys.exit(1)
