"""``finplan show``: summarise a plan and draw its placement."""
from __future__ import annotations

import click

from finplan.cli._console import print_json, stdout
from finplan.fileio import atomic_write_bytes, load_document, refuse_outputs_over_inputs, require_writable
from finplan.units import decimal_bytes, duration, ms


def print_summary(doc: dict, solve_time_s: float | None = None) -> None:
    """Human summary of a finplan.plan/1 document: one table of blocks per application.

    ``solve_time_s``: the time measured in this run (plan files hold one only with --timings).
    """
    from rich.table import Table

    solver = doc["solver"]
    params = ", ".join(f"{k}={v}" for k, v in solver["parameters"].items())
    if solve_time_s is None:
        solve_time_s = solver.get("solve_time_s")
    took = "" if solve_time_s is None else f" in {duration(solve_time_s)}"
    stdout.print(f"[bold]Plan[/bold] by {solver['name']}" + (f" ({params})" if params else "") + took
                 + f", mode {doc['options']['mode']}")
    for app in doc["applications"]:
        cons = app["constraints"]
        op = "<" if cons["strict"] else "<="
        head = (f"\n[bold]{app['name']}[/bold]: {app['model']['name']} from {app['source']}, "
                f"latency {op} {ms(cons['max_latency_s'])}, accuracy {'>' if cons['strict'] else '>='} {cons['min_accuracy']:g}")
        if app.get("rate_hz"):
            head += f", {app['rate_hz']:g} Hz"
        stdout.print(head)
        if not app["feasible"]:
            stdout.print(f"  [red]infeasible[/red]: {app.get('reason', 'no plan')}")
            if not app["placement"]:
                continue
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("block", "node", "exit", "sent after"):
            table.add_column(col)
        sent = {t["after_block"]: t for t in app["transfers"]}
        exits_at = {}
        for ex in app["active_exits"]:
            exits_at.setdefault(ex["after"], []).append(f"{ex['name']} (>= {ex['threshold']:.3g})")
        if "input" in sent:
            t = sent["input"]
            table.add_row("input", app["source"], "", f"{decimal_bytes(t['bytes'])} -> {t['to']}")
        for i, p in enumerate(app["placement"]):
            ex = list(exits_at.get(p["block"], []))
            if i == len(app["placement"]) - 1:
                ex.append(f"{app['final_exit']} (final)")
            t = sent.get(p["block"])
            table.add_row(p["block"], p["node"], ", ".join(ex),
                          f"{decimal_bytes(t['bytes'])} -> {t['to']}" + (f" (p={t['probability']:.2f})" if t["probability"] < 1 else "")
                          if t else "")
        stdout.print(table)
        pred = app["predicted"]
        if pred:
            stdout.print(f"  energy {pred['energy_j']:.5g} J (compute {pred['compute_energy_j']:.5g} J, transfer "
                         f"{pred['transfer_energy_j']:.5g} J), latency {ms(pred['latency_s'])}"
                         + (f" (expected {ms(pred['expected_latency_s'])})" if doc["options"]["mode"] == "dynamic" else "")
                         + f", accuracy {pred['accuracy']:.4f}")
            basis = _energy_basis(app)
            if basis:
                stdout.print("  " + basis)
            if app["feasible"]:
                stdout.print("  " + _binding_line(app, solver["name"]))
            if app.get("guarantee"):
                stdout.print("  " + guarantee_line(app["guarantee"]))
        for note in app.get("notes", []):
            stdout.print(f"  note: {note}")
    totals = doc.get("totals")
    if totals and totals["applications"] > 1:
        stdout.print(f"\n{totals['feasible_applications']} of {totals['applications']} applications planned, "
                     f"total energy {totals['energy_j']:.5g} J")
        bound = doc["solver"].get("lower_bound")
        if bound and bound.get("energy_j") is not None:
            stdout.print(bound_line(bound))
        joint = doc["solver"].get("joint_optimum")
        if joint and joint.get("gap") is not None:
            stdout.print(f"gap to the joint optimum (MILP, {joint['energy_j']:.5g} J): {joint['gap']:.2%}")
        elif joint:
            stdout.print(f"joint optimum (MILP) serves {joint['served']} applications with {joint['energy_j']:.5g} J")


def guarantee_line(guarantee: dict) -> str:
    """A plan's ``guarantee`` (solver fin) in one line: exact, within a bound, or no bound and why."""
    if guarantee["exact"]:
        return f"optimality: exact, the optimum of the model ({guarantee['basis']})"
    if guarantee["epsilon"] is not None:
        return (f"optimality: within {guarantee['epsilon']:.3g} of the optimum, energy <= (1 + {guarantee['epsilon']:.3g})"
                f" x optimum ({guarantee['basis']})")
    return f"optimality: no bound ({guarantee['basis']})"


def bound_line(bound: dict) -> str:
    """The plan's ``solver.lower_bound`` in words: gap to the bound, and whether more could be served."""
    gap = "" if bound.get("gap") is None else f": gap {bound['gap']:.3%}"
    line = (f"lower bound (Lagrangian relaxation of the shared capacities) {bound['energy_j']:.5g} J for "
            f"{bound['served']} served{gap}")
    most = bound.get("served_at_most")
    if most is not None:
        line += ("; no plan serves more applications" if most <= bound["served"] else
                 f"; the bound does not rule out serving up to {most}")
    return line


def _binding_line(app: dict, solver: str) -> str:
    tags = ", ".join(app["binding"]) or "none"
    if app.get("binding_basis") == "at_limit":
        # a baseline's plan is not an optimum: do not call its tight constraints "binding"
        return (f"at a limit (>= 99% used): {tags} ({solver} is a baseline; which constraints bind the "
                "minimum-energy plan is not computed for it)")
    return f"binding: {tags}"


def _compact(placement: str | None) -> str:
    """device,device,device,cloud,cloud -> device x3, cloud x2 (keeps the table narrow)."""
    from finplan.partition.explain import compact_placement

    return compact_placement(placement.split(",")) if placement else "-"


def print_comparison(rows: list[dict], times: dict | None = None) -> None:
    """The --compare table: one row per solver and application.

    ``times``: each solver's total solve time measured in this run (seconds); without it, the
    rows' own solve_time_s (plans written with --timings), else none. With several
    applications the time is shown once per solver (it is the solver's total). Notes and the
    reasons of plans that are infeasible or missing become numbered footnotes.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    several = len({r.get("application") for r in rows if "application" in r}) > 1
    table = Table(title="Comparison (FIN saves: energy saved by FIN against that solver)", header_style="bold",
                  box=box.SIMPLE_HEAD)
    cols = ["solver"] + (["app"] if several else []) + ["energy J", "latency", "acc.", "placement", "exit",
                                                         "FIN saves", "time (solver total)" if several else "time"]
    for col in cols:
        table.add_column(col, overflow="fold")
    # footnotes: text -> the rows it belongs to, as (solver, application or None); a text said
    # for several rows is printed once and marked in each of them
    notes: dict[str, list[tuple]] = {}

    def mark(solver: str, text: str, application: str | None = None) -> str:
        labels = notes.setdefault(text, [])
        if (solver, application) not in labels:
            labels.append((solver, application))
        return f"({list(notes).index(text) + 1})"

    seen = set()
    for r in rows:
        if "skipped" in r:
            cells = [r["solver"]] + ([""] if several else []) + ["skipped " + mark(r["solver"], r["skipped"])]
            table.add_row(*(cells + [""] * (len(cols) - len(cells))))
            continue
        seconds = (times or {}).get(r["solver"], r.get("solve_time_s"))
        first = r["solver"] not in seen
        seen.add(r["solver"])
        took = duration(seconds)
        if not first:
            took = ""
        app = r["application"] if several else None
        marks = [mark(r["solver"], note, app) for note in r.get("notes", [])]
        if r["energy_j"] is None:
            energy = "no plan " + mark(r["solver"], r.get("reason") or "no plan found", app)
        else:
            energy = f"{r['energy_j']:.5g}"
            if not r["feasible"]:
                energy += " infeasible " + mark(r["solver"], r.get("reason") or "infeasible", app)
        saving = "-" if r["fin_saving"] is None or not r["feasible"] else f"{r['fin_saving']:.1%}"
        table.add_row(*([r["solver"] + (" " + " ".join(marks) if marks else "")]
                        + ([r["application"]] if several else []) + [
            energy, ms(r["latency_s"]),
            "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}", _compact(r["placement"]),
            r["final_exit"] or "-", saving, took]))
    # Piped output gets rich's 80 columns by default, which folds every cell; a file or a
    # pager handles long lines better than folded ones.
    console = stdout if stdout.is_terminal else Console(width=150, highlight=False, soft_wrap=True)
    console.print(table)
    for i, (note, labels) in enumerate(notes.items(), 1):
        console.print(f"({i}) {_labels(labels)}: {note}")


def print_comparison_totals(totals: list[dict], times: dict | None = None) -> None:
    """With several applications: per solver, the applications served, the total energy, the
    gap to the lower bound (``solver.lower_bound``) and the solve time, side by side."""
    from rich import box
    from rich.table import Table

    table = Table(title="All applications", header_style="bold", box=box.SIMPLE_HEAD)
    for col in ("solver", "served", "energy J", "lower bound J", "gap", "time"):
        table.add_column(col, no_wrap=True)
    for t in totals:
        seconds = (times or {}).get(t["solver"], t.get("solve_time_s"))
        most = t.get("served_at_most")
        served = f"{t['served']} / {t['applications']}" + (f" (<= {most})" if most is not None and most > t["served"]
                                                           else "")
        table.add_row(t["solver"], served, f"{t['energy_j']:.6g}",
                      "-" if t.get("lower_bound_j") is None else f"{t['lower_bound_j']:.6g}",
                      "-" if t.get("gap") is None else f"{t['gap']:.3%}", duration(seconds))
    stdout.print(table)


def _labels(labels: list[tuple]) -> str:
    """[(fin, a), (fin, b), (milp, a)] -> "fin (a, b), milp (a)"."""
    grouped: dict[str, list] = {}
    for solver, app in labels:
        grouped.setdefault(solver, [])
        if app is not None:
            grouped[solver].append(app)
    return ", ".join(solver + (f" ({', '.join(apps)})" if apps else "") for solver, apps in grouped.items())


@click.command("show")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--png", "png", type=click.Path(dir_okay=False), help="Draw the placement to this PNG file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan document instead of the summary.")
def command(plan, png, as_json):
    """Summarise a plan and optionally draw it.

    \b
    Example:
      finplan plan examples/paper/scenario.yaml -o plan.json
      finplan show plan.json --png plan.png
    """
    from finplan.partition.draw import plan_png
    from finplan.partition.plan import validate_plan

    if png:
        require_writable(png)
        refuse_outputs_over_inputs({"--png": png}, {"PLAN": plan})
    doc = validate_plan(load_document(plan, "plan"), plan)
    if as_json:
        print_json(doc)
    else:
        print_summary(doc)
        if doc.get("comparison"):
            stdout.print()
            print_comparison(doc["comparison"])
    if png:
        atomic_write_bytes(png, plan_png(doc))
        if not as_json:
            stdout.print(f"drawing written to {png}")


def _energy_basis(app: dict) -> str | None:
    """Where the energy figure of ``app`` comes from, node by node: an estimate is never shown as
    a measurement (the plan's ``costs``; plans written before it have none)."""
    costs = app.get("costs") or {}
    used = list(dict.fromkeys(p["node"] for p in app.get("placement") or []))
    parts, estimate = [], False
    for node in used:
        cost = costs.get(node)
        if not cost:
            continue
        if cost.get("from") == "profile" and cost.get("energy") == "measured":
            parts.append(f"{node} measured ({', '.join(cost.get('energy_methods') or [])})")
        elif cost.get("from") == "profile":
            estimate = True
            parts.append(f"{node} profile estimate ({', '.join(cost.get('energy_methods') or []) or 'estimated'})")
        else:
            estimate = True
            parts.append(f"{node} compute model (power_w x flops / ops_per_s)")
    if not parts:
        return None
    if app.get("transfers"):
        parts.append("transfers: link J/bit model")
    return ("energy basis: ESTIMATE: " if estimate else "energy basis: ") + "; ".join(parts)
