"""The ``finplan`` entry point.

Subcommands are imported lazily, so ``finplan --help`` and every command except
``finplan exits`` work without torch (and without ray) installed.
"""
from __future__ import annotations

import importlib
import sys

import click

from finplan import __version__
from finplan.errors import FinplanError

# name -> (module under finplan.cli, one-line help shown by `finplan --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "Show the blocks and exits of a branchy ONNX model."),
    "cuts": ("cuts", "List every candidate cut of an ONNX graph and what would cross it."),
    "annotate": ("annotate", "Write a validated block/exit contract into a copy of an ONNX model."),
    "exits": ("exits", "Build, train and export branchy models (needs the [torch] extra)."),
    "profile": ("profile", "Measure every block and exit of a model on this device."),
    "profiles": ("profiles", "Compare hardware profiles side by side."),
    "plan": ("plan", "Place a model's blocks on a network with FIN, the optimum or a baseline."),
    "show": ("show", "Summarise or draw a plan."),
    "emit": ("emit", "Write per-node ONNX parts and manifests for a plan."),
    "verify": ("verify", "Check that a deployment's chained parts equal the original model."),
    "run": ("run", "Execute a deployment and compare measured with predicted."),
    "serve": ("serve", "Serve a deployment on Ray Serve (needs the [ray] extra)."),
    "infer": ("infer", "Send inputs to a served deployment and report latency."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"finplan.cli.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx, formatter):
        # Show help lines without importing every module (keeps --help fast and torch-free).
        rows = [(name, help_line) for name, (_, help_line) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="finplan")
def cli():
    """finplan: profile early-exit DNNs and plan where each block runs.

    \b
    A day with finplan:
      finplan profile model.onnx --calib calib.npz -o phone.profile.json --card model.card.json   (on each device)
      finplan plan scenario.yaml -o plan.json
      finplan emit plan.json --model model.onnx -o deploy/
      finplan run deploy/ --data digits
    """


def main(argv: list[str] | None = None) -> int:
    try:
        # standalone_mode=False hands back the command's return value: an int is its exit code.
        returned = cli.main(args=argv, prog_name="finplan", standalone_mode=False)
    except FinplanError as exc:
        # Two kinds, one line each, no traceback: an InputError (the user's files or options; the
        # line names the file, the field and what was expected) exits 2, an EnvironmentFault (the
        # machine: a counter, a provider, a missing package; the line says what to check) exits 1.
        click.echo(f"finplan: error: {_lines_joined(str(exc))}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("finplan: aborted", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:
        # a bare `finplan` or `finplan profiles`: the help it asks for, as help (not an error line)
        click.echo(exc.ctx.get_help())
        return 0
    except click.UsageError as exc:
        # click's own form is three lines (Usage / Try / Error); finplan's bad-input rule is one
        click.echo(f"finplan: error: {_one_line(exc.format_message())}{_help_hint(exc.ctx)}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"finplan: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("finplan: interrupted", err=True)
        return 130
    return returned if isinstance(returned, int) else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _lines_joined(text: str) -> str:
    """The message on one line; unlike ``_one_line`` its spacing is kept (the library wrote it)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _help_hint(ctx: click.Context | None) -> str:
    return f" (see: {ctx.command_path} --help)" if ctx is not None else ""


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
