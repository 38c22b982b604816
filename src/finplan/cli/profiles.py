"""``finplan profiles show``: several devices' profiles of one model, side by side."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from finplan.cli._console import print_json, stdout
from finplan.errors import FinplanInputError
from finplan.units import si


def compare(paths: list[str]) -> dict:
    """Load profiles of one model; FinplanInputError naming both files when the model hashes differ."""
    from finplan.hardware_profiles import load_profile

    profiles = [load_profile(path) for path in paths]
    first_hash = profiles[0]["model"]["hash"]
    for path, profile in zip(paths[1:], profiles[1:]):
        if profile["model"]["hash"] != first_hash:
            raise FinplanInputError(
                f"profiles different models: {paths[0]} has {profiles[0]['model']['name']} ({first_hash[:19]}…), "
                f"{path} has {profile['model']['name']} ({profile['model']['hash'][:19]}…); compare profiles of one model",
                file=path, field="model.hash")
    labels = []
    for path, profile in zip(paths, profiles):
        label = profile["device"]["name"]
        labels.append(label if label not in labels else f"{label} ({Path(path).name})")
    parts = [(kind, row["name"]) for kind in ("blocks", "exits") for row in profiles[0][kind]]
    rows = []
    for kind, name in parts:
        cells = {}
        for label, profile in zip(labels, profiles):
            match = next((r for r in profile[kind] if r["name"] == name), None)
            if match is not None:
                cells[label] = {"p50_s": match["latency_s"]["p50"], "energy_j": match["energy_j"]["value"],
                                "energy_method": match["energy_j"]["method"], "measured": match["energy_j"]["measured"]}
        rows.append({"kind": kind[:-1], "name": name, "devices": cells})
    return {
        "model": {"name": profiles[0]["model"]["name"], "hash": first_hash},
        "devices": [{"label": label, "file": str(path), **{k: profile["device"].get(k) for k in
                     ("cpu", "cores", "threads", "execution_provider", "onnxruntime_version", "gpu")},
                     "intra_op_threads": (profile.get("session_options") or {}).get("intra_op_threads"),
                     "stage_overhead_s": (profile.get("stage_overhead_s") or {}).get("value"),
                     "energy": profile["energy"]} for label, path, profile in zip(labels, paths, profiles)],
        "parts": rows,
    }


@click.group("profiles")
def command():
    """Compare hardware profiles."""


@command.command("show")
@click.argument("files", nargs=-1, required=True, metavar="PROFILE.json...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def show(files, as_json):
    """Show several devices' profiles of the same model side by side (p50 latency, energy per run).

    \b
    Example:
      finplan profiles show examples/profiles/this-machine-2core.profile.json \\
          examples/profiles/h200-host-16core.profile.json
    """
    summary = compare(list(files))
    if as_json:
        print_json(summary)
        return
    stdout.print(f"[bold]{summary['model']['name']}[/bold]  {summary['model']['hash'][:19]}…")
    devices = Table(title="Devices", title_justify="left")
    for column in ("device", "cpu", "cores/threads", "provider", "intra-op threads", "stage cost", "energy"):
        devices.add_column(column)
    for device in summary["devices"]:
        energy = device["energy"]
        stage = device["stage_overhead_s"]
        devices.add_row(device["label"], device["cpu"], f"{device['cores']}/{device['threads']}",
                        device["execution_provider"], str(device["intra_op_threads"] or "-"),
                        si(stage, "s"),
                        f"{energy['method']} ({'measured' if energy['measured'] else 'ESTIMATED'})")
    stdout.print(devices)
    table = Table(title="p50 latency | energy per run", title_justify="left")
    table.add_column("part")
    for device in summary["devices"]:
        table.add_column(device["label"], justify="right")
    for row in summary["parts"]:
        cells = []
        for device in summary["devices"]:
            cell = row["devices"].get(device["label"])
            cells.append("-" if cell is None else
                         f"{si(cell['p50_s'], 's')} | {si(cell['energy_j'], 'J')}{'' if cell['measured'] else '*'}")
        table.add_row(f"{row['kind']} {row['name']}", *cells)
    stdout.print(table)
    if any(not d["energy"]["measured"] for d in summary["devices"]):
        stdout.print("* energy ESTIMATED, not measured (see each profile's energy.note)")
