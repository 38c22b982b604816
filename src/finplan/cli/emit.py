"""``finplan emit``: per-node ONNX parts and manifests for one application of a plan."""
from __future__ import annotations

import click

from finplan.cli._console import print_json, stdout


@click.command("emit")
@click.argument("plan_path", metavar="PLAN.json", type=click.Path(dir_okay=False))
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="The branchy ONNX model the plan was made for (its hash is checked).")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Deployment folder to create (refused if it exists, unless --force).")
@click.option("--application", default=None, help="Which application of the plan (needed when it has several).")
@click.option("--force", is_flag=True, help="Replace an existing output folder (atomically).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but warnings and errors (stderr).")
def command(plan_path, model_path, out, application, force, as_json, quiet):
    """Write one folder per node with its ONNX parts and manifest.json.

    \b
    Examples:
      finplan emit plan.json --model model.onnx -o deploy/
      finplan emit plan.json --model model.onnx -o deploy-app2/ --application app2
    """
    from finplan.cli._outputs import plan_inputs, refuse_outputs_over_inputs
    from finplan.deploy.emit import emit

    refuse_outputs_over_inputs({"-o": out}, {**plan_inputs(plan_path), "--model": model_path})
    result = emit(plan_path, model_path, out, application=application, force=force)
    summary = {"folder": str(result.folder), "application": result.application,
               "model": {"name": result.model_name, "hash": result.model_hash},
               "nodes": result.nodes, "warnings": result.warnings}
    if as_json:
        print_json(summary)
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if quiet:
        return
    stdout.print(f"[bold]{result.folder}[/bold]: application {result.application!r}, model {result.model_name} "
                 f"{result.model_hash[:19]}…")
    for node in result.nodes:
        for stage in node["stages"]:
            exits = ", ".join(f"{name} ({'final' if t is None else f'>= {t:.3g}'})" for name, t in stage["exits"]) or "none"
            stdout.print(f"  {node['node']:<12} {stage['part']:<34} blocks {', '.join(stage['blocks'])}; exits {exits}")
