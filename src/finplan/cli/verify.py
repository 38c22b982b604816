"""``finplan verify``: the chained parts of a deployment equal the original model."""
from __future__ import annotations

import click

from finplan.cli._console import print_json, progress_bar, stdout
from finplan.cli._types import FiniteNonNegative


class VerifyFailed(click.ClickException):
    exit_code = 1


@click.command("verify")
@click.argument("folder", metavar="DEPLOY/", type=click.Path())
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="The original branchy ONNX model.")
@click.option("--data", "source", required=True,
              help="Inputs: embedded, digits, fashion-mnist, an image folder, or a .npz with one array per graph input (named after it; x for a single-input model) and optionally y.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many inputs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--atol", type=FiniteNonNegative(), default=1e-5, show_default=True,
              help="Largest allowed absolute difference (>= 0).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data split and order.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(folder, model_path, source, limit, batch_size, atol, seed, as_json, quiet):
    """Check that every input's exit outputs from the chained parts equal the original model's.

    Exit code 1 when the largest difference is above --atol or an exit decision differs.

    \b
    Example:
      finplan verify deploy/ --model model.onnx --data embedded
    """
    from finplan.deploy.deployment import load_deployment
    from finplan.deploy.inputs import load_inputs
    from finplan.deploy.verify import verify

    deployment = load_deployment(folder)
    x, _, name = load_inputs(source, deployment.input_specs, limit=limit, seed=seed, num_classes=deployment.num_classes())
    with progress_bar(quiet or as_json) as report:
        result = verify(folder, model_path, x, batch_size=batch_size, atol=atol, progress=report)
    if as_json:
        print_json({"data": name, **result.to_dict()})
    else:
        for exit_name, diff in result.max_abs_diff.items():
            stdout.print(f"  {exit_name:<12} max abs diff {diff:.3e} (every input through the chained parts)")
        stdout.print(f"  at the exit taken: max abs diff {result.max_abs_diff_at_exit:.3e}; "
                     f"exit decisions differing from the original model's: {result.decision_mismatches}")
        verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
        stdout.print(f"{verdict}: {result.samples} inputs from {name}, max abs diff {result.max_diff:.3e} "
                     f"(limit {atol:.0e})")
    if not result.passed:
        # a ClickException (not click's Exit) so that finplan's main() returns 1 in-process too
        raise VerifyFailed(f"the deployment differs from the model (max abs diff {result.max_diff:.3e}, "
                           f"{result.decision_mismatches} exit decisions differ)")
