"""``finplan profile``: measure every block and exit of a branchy model on this device."""
from __future__ import annotations

from pathlib import Path

import click
from rich import box
from rich.table import Table

from finplan.cli._console import print_json, progress_bar, stderr, stdout
from finplan.errors import FinplanInputError
from finplan.cli._types import Threads
from finplan.cli._outputs import existing, refuse_outputs_over_inputs
from finplan.fileio import require_writable
from finplan.units import grouped, si

ENERGY_CHOICES = ("auto", "rapl", "nvml", "codecarbon", "power-model", "external")

# ProfileOptions' options -> this command's flags, the names its messages print
OPTION_FLAGS = {"budget_s": "--budget-s", "threads": "--threads", "limit": "--limit",
                "min_window_s": "--energy-window-s", "batch_size": "--batch-size", "calib": "--calib",
                "need_card": "--card"}


@click.command("profile")
@click.argument("model_path", metavar="MODEL.onnx")
@click.option("--block", "blocks", multiple=True, metavar="[NAME=]TENSOR",
              help="Block boundary tensor, in order (for models without a finplan contract).")
@click.option("--exit", "exits", multiple=True, metavar="NAME=BLOCK:TENSOR", help="Exit head output after a block.")
@click.option("-o", "--output", "output", metavar="PROFILE.json",
              help="Write the hardware profile (finplan.profile/1) here.")
@click.option("--card", "card_path", metavar="CARD.json",
              help="Also write the model card (finplan.model/1) with the calibration scores; needs --calib.")
@click.option("--calib", metavar="DATA", help="Calibration data: embedded | digits | fashion-mnist | FILE.npz | FOLDER.")
@click.option("--limit", type=int, default=1000, show_default=True, help="Calibration samples to use at most.")
@click.option("--energy", type=click.Choice(ENERGY_CHOICES), default="auto", show_default=True,
              help="Energy backend; auto = first measuring one available (rapl, nvml), else an estimate.")
@click.option("--power-w", type=float, help="power-model: constant power in watts.")
@click.option("--idle-w", type=float, help="power-model: idle watts (with --busy-w).")
@click.option("--busy-w", type=float, help="power-model: extra watts at full CPU utilisation.")
@click.option("--energy-file", help="external: JSON/CSV of joules per block and exit.")
@click.option("--energy-window-s", type=float, default=1.0, show_default=True,
              help="Shortest energy window per part (RAPL/NVML counters tick every 1-100 ms; codecarbon windows are raised to 1 s).")
@click.option("--threads", type=Threads(), help="onnxruntime intra-op threads (default: of 1, 2, 4 .. the physical "
              "cores, the fastest for the whole model, measured; the deployment runs with the same).")
@click.option("--budget-s", type=float, default=None, help="Time budget for latency repetitions [default: 15].")
@click.option("--device-name", help="Name of this device in the profile (default: from the CPU model, no hostname).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def command(model_path, blocks, exits, output, card_path, calib, limit, energy, power_w, idle_w, busy_w, energy_file,
            energy_window_s, threads, budget_s, device_name, quiet, as_json):
    """Measure every block and exit of MODEL.onnx on this device: FLOPs, latency, energy, exit scores.

    \b
    Examples:
      finplan profile src/finplan/embedded/b-alexnet-digits.onnx --calib embedded \\
          -o this-machine.profile.json --card b-alexnet-digits.card.json
      finplan profile model.onnx --calib calib.npz --energy power-model --idle-w 3 --busy-w 9 -o phone.profile.json
      finplan profile model.onnx --energy external --energy-file lab-meter.csv -o board.profile.json
    """
    from finplan.profiler import DEFAULT_BUDGET_S, ProfileOptions, prepare_profile
    from finplan.hardware_profiles import save_card, save_profile

    # Check where results go before measuring anything.
    for path in (output, card_path):
        if path:
            require_writable(path)
    if output and card_path and Path(output).resolve() == Path(card_path).resolve():
        raise FinplanInputError("-o and --card name the same file; give two paths", file=output)
    refuse_outputs_over_inputs({"-o": output, "--card": card_path},
                               {"MODEL.onnx": model_path, "--calib": existing(calib), "--energy-file": energy_file})
    options = ProfileOptions(blocks=list(blocks), exits=list(exits), calib=calib, limit=limit, energy=energy,
                             power_w=power_w, idle_w=idle_w, busy_w=busy_w, energy_file=energy_file, threads=threads,
                             min_window_s=energy_window_s,
                             budget_s=DEFAULT_BUDGET_S if budget_s is None else budget_s, device_name=device_name,
                             need_card=bool(card_path), names=OPTION_FLAGS)
    if energy == "power-model" and power_w is None and idle_w is None and busy_w is None:
        from finplan.profiler.energy.power_model import DEFAULT_WATTS_PER_CPU

        stderr.print(f"finplan: warning: --energy power-model without --power-w or --idle-w/--busy-w: energy is "
                     f"ESTIMATED at a default {DEFAULT_WATTS_PER_CPU:g} W per busy CPU, not your device's (the "
                     "summary and the profile's note say so)", soft_wrap=True)
    job = prepare_profile(model_path, options)
    with progress_bar(quiet or as_json) as report:
        result = job.run(report)
    _warn_fallbacks(result.summary["energy"])
    if output:
        save_profile(result.profile, output)
    if card_path:
        save_card(result.card, card_path)
    if as_json:
        print_json({"profile": result.profile, "summary": result.summary,
                    "files": {"profile": output, "card": card_path}})
        return
    _print_human(model_path, result, output, card_path)


def _warn_fallbacks(energy: dict) -> None:
    """On stderr (even with --json or --quiet): the parts whose energy the backend could not resolve."""
    fallbacks = energy.get("fallbacks") or []
    if not fallbacks:
        return
    stderr.print(f"finplan: warning: {energy['method']} could not resolve the energy of {len(fallbacks)} part(s); "
                 f"they got a labelled ESTIMATE instead ({energy.get('fallback_estimate')} x the part's CPU-seconds "
                 f"per run; method power-model, fallback_from {energy['method']} in the profile):", soft_wrap=True)
    for line in fallbacks:
        stderr.print(f"  {line}", soft_wrap=True)


def _threads(count: int) -> str:
    return f"{count} intra-op thread" + ("" if count == 1 else "s")


def _threads_note(profile: dict) -> str:
    choice = profile["session_options"].get("threads_choice")
    if not choice:
        return ""
    tried = ", ".join(f"{k}: {si(v, 's')}" for k, v in choice["whole_model_p50_s"].items())
    return f", the fastest of {tried}"


def _print_human(model_path, result, output, card_path) -> None:
    profile, summary = result.profile, result.summary
    device = profile["device"]
    stdout.print(f"[bold]{model_path}[/bold]  {profile['model']['hash'][:19]}…")
    stdout.print(f"device {device['name']}: {device['cpu']}, {device['cores']} cores / {device['threads']} threads, "
                 f"{device['execution_provider']} (onnxruntime {device['onnxruntime_version']}, "
                 f"{_threads(profile['session_options']['intra_op_threads'])}{_threads_note(profile)})")
    for title, rows in (("Blocks", profile["blocks"]), ("Exits", profile["exits"])):
        if not rows:
            continue
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1),
                      collapse_padding=True, pad_edge=False)
        # Short headers: the table must fit 80 columns when piped.
        columns = ["name"] + (["after"] if title == "Exits" else []) + [
            "FLOPs", "params B", "out B", "p50", "±CI95", "n", "J/run", "method"]
        for column in columns:
            table.add_column(column, justify="left" if column in ("name", "after", "method") else "right",
                             no_wrap=True)
        for row in rows:
            latency = row["latency_s"]
            ci = latency.get("ci95_p50")
            ci_text = f"±{(ci[1] - ci[0]) / 2 / latency['p50'] * 100:.1f}%" if ci and latency["p50"] > 0 else "-"
            energy = row["energy_j"]
            method = (energy["method"] + ("" if energy["measured"] else "*")
                      + ("!" if energy.get("fallback_from") else ""))
            cells = [row["name"]] + ([row["after"]] if title == "Exits" else []) + [
                si(row["flops"], "", ""), grouped(row["params_bytes"]), grouped(row["output_bytes"]),
                si(latency["p50"], "s", ""), ci_text, str(latency["n"]), si(energy["value"], "J", ""), method]
            table.add_row(*cells)
        stdout.print(table)
        if any(not row["energy_j"]["measured"] for row in rows):
            stdout.print("  * energy ESTIMATED, not measured (see the energy line below)")
        fell_back = [row["name"] for row in rows if row["energy_j"].get("fallback_from")]
        if fell_back:
            stdout.print(f"  ! {summary['energy']['method']} could not resolve {', '.join(fell_back)}: estimated "
                         "instead (see stderr and each part's note)")
        if title == "Blocks":  # "out B" is what crosses the cut after the block: say which tensors when several
            for row in rows:
                live = row.get("live_set") or []
                if len(live) > 1:
                    stdout.print(f"  {row['name']}: out B = " + " + ".join(
                        f"{t['tensor']} ({t['dtype']}) {t['bytes']:,}" for t in live), soft_wrap=True)
        for row in rows:
            if row.get("unknown_ops"):
                stdout.print(f"  {row['name']}: FLOPs exclude unknown ops {', '.join(row['unknown_ops'])}")
    whole = profile["whole_model"]
    stdout.print(f"whole model p50 {si(whole['latency_s']['p50'], 's')}; sum of blocks {si(whole['sum_of_blocks_p50_s'], 's')}, "
                 f"sum of blocks and exits {si(whole['sum_of_parts_p50_s'], 's')} "
                 f"({whole['parts_over_whole']:.2f}x the whole, {whole['parts_over_whole_overhead_corrected']:.2f}x without "
                 f"the extra per-call overheads of {si(whole['call_overhead_p50_s'], 's')}); "
                 f"split check max |diff| {whole['split_check_max_abs_diff']:.2g}")
    timing = summary["timing"]
    stdout.print(f"timing input: {summary['timing_input']}", soft_wrap=True)
    stdout.print(f"timing: {timing['rounds']} interleaved rounds in {timing['elapsed_s']:.1f} s "
                 f"(budget {timing['budget_s']:g} s); medians within ±2% (95% CI): "
                 f"{'all' if timing['all_converged'] else 'NOT all (budget ended first)'}")
    calibration = summary.get("calibration")
    if calibration:
        if calibration.get("accuracy"):
            accuracy = ", ".join(f"{name} {value:.3f}" for name, value in calibration["accuracy"].items())
            stdout.print(f"calibration: {calibration['samples']} samples of {calibration['source']}; "
                         f"accuracy if every sample left at: {accuracy}")
        table = Table(title="Default exit policy (first exit with confidence >= threshold)", title_justify="left")
        table.add_column("threshold", justify="right")
        exit_names = list(calibration["table"][0]["exit_rates"]) if calibration["table"] else []
        for name in exit_names:
            table.add_column(f"{name} rate", justify="right")
        table.add_column("accuracy", justify="right")
        table.add_column("expected FLOPs", justify="right")
        for row in calibration["table"]:
            table.add_row(f"{row['threshold']:g}", *[f"{row['exit_rates'][n]:.3f}" for n in exit_names],
                          f"{row['accuracy']:.3f}" if "accuracy" in row else "-", si(row.get("expected_flops"), "FLOP"))
        stdout.print(table)
    energy = summary["energy"]
    if energy.get("fallbacks"):
        parts = len(profile["blocks"]) + len(profile["exits"]) + ("energy_j" in profile["whole_model"])
        stdout.print(f"[bold]energy: {len(energy['fallbacks'])} of {parts} parts (the whole model counted) ESTIMATED "
                     f"by the fallback power model[/bold], which {energy['method']} could not resolve; "
                     f"{energy['method']} for the rest:")
    if energy["measured"]:
        idle_w = profile["energy"].get("idle_power_w")
        stdout.print(f"energy: measured ({energy['method']}: {energy['reason']}); "
                     + ("no idle power subtracted (none known)" if idle_w is None else f"idle power {idle_w:.2f} W subtracted"))
    else:
        stdout.print(f"[bold]energy: ESTIMATED (method {energy['method']})[/bold], not measured: {energy['note']}")
        for skipped in energy["skipped"]:
            stdout.print(f"  not used: {skipped}")
    for label, path in (("profile", output), ("model card", card_path)):
        if path:
            stdout.print(f"wrote {label} {path}")
