"""``finplan infer``: send inputs to a deployment served by ``finplan serve`` and report what came back."""
from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from finplan.cli._console import print_json, progress_bar, stdout
from finplan.units import ms


@click.command("infer")
@click.argument("url")
@click.option("--data", "source", required=True,
              help="Inputs: embedded, digits, fashion-mnist, an image folder, or a .npz with one array per graph input "
                   "(named after it; x for a single-input model) and optionally y.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many inputs.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True, help="Requests in flight.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Inputs per request.")
@click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Per-request timeout on the client side.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data split and order.")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True, help="Print this many predictions.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(url, source, limit, concurrency, batch_size, timeout_s, seed, show, as_json, quiet):
    """Send inputs to URL (printed by finplan serve); print predictions, exits and latency.

    \b
    Examples:
      finplan infer http://127.0.0.1:8000/digits --data embedded --limit 100
      finplan infer http://127.0.0.1:8000/digits --data inputs.npz --concurrency 16 --json
    """
    from finplan.deploy.inputs import load_inputs
    from finplan.deploy.ray_serve.client import describe, infer_many, input_specs_of

    info = describe(url, timeout_s=timeout_s)
    specs = input_specs_of(info)
    classes = info.get("num_classes")  # labels out of range are refused, as `run` refuses them
    inputs, y, name = load_inputs(source, specs, limit=limit, seed=seed,
                                  num_classes=classes if isinstance(classes, int) and classes > 0 else None)
    # one input travels as a .npy, several as a .npz of named arrays
    x = inputs if len(specs) > 1 else inputs[specs[0].name]
    with progress_bar(quiet or as_json) as progress:
        report = infer_many(url, x, y, concurrency=concurrency, batch_size=batch_size, timeout_s=timeout_s,
                            progress=progress)
    summary = report.summary()
    summary["data"] = name
    summary["application"] = info.get("application")
    if as_json:
        summary["predictions"] = [{"exit": e, "prediction": p, "confidence": c}
                                  for e, p, c in zip(report.exit_names, report.predictions, report.confidences)]
        print_json(summary)
    else:
        lat = summary["latency_s"]
        stdout.print(f"[bold]{escape(url)}[/bold]: {report.samples} inputs from {escape(name)} in {report.requests} "
                     f"requests, concurrency {concurrency}")
        stdout.print(f"answered {report.answered}, failed {report.failed}; latency p50 {ms(lat['p50'], '.2f')}  "
                     f"p90 {ms(lat['p90'], '.2f')}  p99 {ms(lat['p99'], '.2f')} ({lat['how']}); "
                     f"throughput {summary['throughput_samples_per_s'] or 0:.1f} inputs/s")
        if summary["accuracy"] is not None:
            stdout.print(f"accuracy {100 * summary['accuracy']:.1f}% over the answered inputs")
        exits = Table(title="Exits taken", title_justify="left")
        exits.add_column("exit")
        exits.add_column("inputs", justify="right")
        exits.add_column("share", justify="right")
        answered = max(sum(summary["exit_counts"].values()), 1)
        for exit_name, count in summary["exit_counts"].items():
            exits.add_row(escape(exit_name), str(count), f"{100 * count / answered:.1f}%")
        stdout.print(exits)
        if show:
            table = Table(title=f"First {min(show, report.samples)} inputs", title_justify="left")
            for column in ("#", "exit", "prediction", "confidence") + (("label",) if y is not None else ()):
                table.add_column(column, justify="right")
            for i in range(min(show, report.samples)):
                row = [str(i), escape(str(report.exit_names[i] or "error")), str(report.predictions[i]),
                       "-" if report.confidences[i] is None else f"{report.confidences[i]:.3f}"]
                if y is not None:
                    row.append(str(int(y[i])))
                table.add_row(*row)
            stdout.print(table)
    for message, count in summary["errors"].items():  # one line each; also in --json
        click.echo(f"error: {count} request(s): {message}", err=True)
    if report.failed:
        raise click.exceptions.Exit(1)
