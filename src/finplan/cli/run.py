"""``finplan run``: execute a deployment and compare what it measures with the plan."""
from __future__ import annotations

import contextlib

import click
from rich.markup import escape
from rich.table import Table

from finplan.cli._console import foreign_output_to_stderr, print_json, progress_bar, stdout
from finplan.cli._types import FiniteNonNegative, Threads
from finplan.deploy.engines import engine_names


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "fraction":
        return f"{100 * value:.1f}%"
    if unit == "s":
        return f"{value * 1e3:.3f} ms"
    if unit == "J":
        return f"{value:.4g} J"
    if unit == "B":
        return f"{value:,.0f} B"
    return f"{value:.4g}"


def _us(seconds: float | None) -> str:
    """Link delays can be nanoseconds (the paper's links): significant digits, not fixed ms."""
    return "-" if seconds is None else f"{seconds * 1e6:.4g} us"


def _error(row) -> str:
    if row["unit"] == "fraction":
        return "-" if row["difference"] is None else f"{100 * row['difference']:+.1f} pt"
    return "-" if row["relative_error"] is None else f"{100 * row['relative_error']:+.0f}%"


@click.command("run")
@click.argument("folder", metavar="DEPLOY/", type=click.Path())
@click.option("--data", "source", required=True,
              help="Inputs: embedded, digits, fashion-mnist, an image folder, or a .npz with one array per graph input (named after it; x for a single-input model) and optionally y.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many inputs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inputs per batch (samples that exit leave the batch; the rest go on together).")
@click.option("--emulate-links", is_flag=True, help="Delay each transfer by bytes*8/bandwidth + latency from network.json.")
@click.option("--engine", type=click.Choice(engine_names()), default="local", show_default=True,
              help="local: this process; ray: the Serve application on a local Ray instance; ray-compiled: a Ray "
                   "Compiled Graph, one actor per plan node (per-hop engine cost beside the link model).")
@click.option("--threads", type=Threads(), default=None,
              help="onnxruntime intra-op threads per part, for every node (1 .. this machine's CPUs; default: each "
                   "node's profiled count, or for a node without a profile the source's).")
@click.option("--tolerance", type=FiniteNonNegative(), default=0.15, show_default=True,
              help="Warn when a prediction is off by more than this relative error.")
@click.option("--rate-tolerance", type=FiniteNonNegative(), default=0.02, show_default=True,
              help="Warn when an exit rate or the accuracy is off by more than this (fraction points).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data split and order.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(folder, source, limit, batch_size, emulate_links, engine, threads, tolerance, rate_tolerance, seed,
            as_json, quiet):
    """Run a deployment on inputs and print measured vs predicted.

    \b
    Examples:
      finplan run deploy/ --data embedded
      finplan run deploy/ --data digits --limit 200 --emulate-links --json
      finplan run deploy/ --data embedded --engine ray-compiled    (a Ray Compiled Graph, one actor per node)
    """
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.engines import get_engine
    from finplan.deploy.inputs import load_inputs
    from finplan.deploy.report import build_report

    deployment = load_deployment(folder)
    x, y, name = load_inputs(source, deployment.input_specs, limit=limit, seed=seed, num_classes=deployment.num_classes())
    with progress_bar(quiet or as_json) as report, \
            (foreign_output_to_stderr() if engine != "local" else contextlib.nullcontext()):
        measurements = get_engine(engine)(folder, x, y, batch_size=batch_size, emulate_links=emulate_links,
                                          threads=threads, progress=report)
    result = build_report(measurements, deployment, tolerance=tolerance, rate_tolerance=rate_tolerance)
    result["data"] = name
    if as_json:
        print_json(result)
        return
    latency, predicted = result["latency_s"], result["predicted_latency_s"]
    stdout.print(f"[bold]{folder}[/bold]: {result['samples']} inputs from {name}, engine {engine}, batch "
                 f"{batch_size}, links {'emulated' if emulate_links else 'not emulated'}")
    if result.get("engine_mode"):
        stdout.print(f"engine mode: {escape(result['engine_mode'])}")
    stdout.print(f"latency p50 {_fmt(latency['p50'], 's')}  p90 {_fmt(latency['p90'], 's')}  "
                 f"p99 {_fmt(latency['p99'], 's')}  mean {_fmt(latency['mean'], 's')} (measured)")
    stdout.print(f"latency p50 {_fmt(predicted['p50'], 's')}  p90 {_fmt(predicted['p90'], 's')}  "
                 f"p99 {_fmt(predicted['p99'], 's')}  mean {_fmt(predicted['mean'], 's')} (predicted)")
    emulation = result.get("link_emulation")
    if emulation is not None:
        actual = emulation["actual_delay_s_per_inference"]
        stdout.print(f"link emulation per inference: intended {_us(emulation['intended_delay_s_per_inference'])} "
                     f"(link model), actual {_us(actual)}"
                     + ("" if actual is None else f", excess {_us(emulation['excess_s_per_inference'])}"))
    # "this run", not "measured": energies are derived from the profiles or estimated, and say so
    table = Table(title="Predicted vs measured, derived or estimated (per inference)", title_justify="left")
    for column in ("metric", "predicted", "this run", "error", "how obtained"):
        # fold long metric names (bytes[device->cloud]) rather than cut them: the name is the key
        table.add_column(column, justify="left" if column in ("metric", "how obtained") else "right",
                         overflow="fold" if column == "metric" else "ellipsis")
    for row in result["comparison"]:
        style = "yellow" if row["warn"] else None
        table.add_row(escape(row["metric"]), _fmt(row["predicted"], row["unit"]), _fmt(row["measured"], row["unit"]),
                      _error(row), escape(row["how"]), style=style)
    stdout.print(table)
    if result.get("threads"):
        used = ", ".join(f"{node} {'default' if t['intra_op_threads'] is None else t['intra_op_threads']}"
                         + (f" ({t['how']})" if t.get("how") else "") for node, t in result["threads"].items())
        stdout.print(f"  intra-op threads: {escape(used)}")
    if result.get("conditions"):
        stdout.print(f"  conditions: {escape('; '.join(result['conditions']))}")
    notes = list(dict.fromkeys(row["note"] for row in result["comparison"] if row.get("note")))
    for note in notes:
        stdout.print(f"  note: {escape(note)}")
    if engine != "local":
        from finplan.cli.serve import print_engine_overhead

        print_engine_overhead(result)
    for event in result.get("engine_events") or []:
        click.echo(f"warning: {event}", err=True)
    for warning in result["warnings"]:  # one line each, so that logs can be grepped
        click.echo(f"warning: {warning}", err=True)
