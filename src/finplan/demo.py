"""``make demo``: the whole finplan day on the embedded B-AlexNet, on this machine.

inspect -> profile (this machine) -> plan (the paper's 3-tier network, this machine standing
in for the device) -> emit -> verify -> run, each step through the real ``finplan`` CLI.
Everything is written under ``demo-out/`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from finplan.cli.main import main as finplan
from finplan.data import embedded_model_path
from finplan.fileio import atomic_write_text

console = Console(highlight=False)

# The FIN paper's edge and cloud servers and links (section 2 of the FIN paper (Singhal et al., INFOCOM 2024)); the device is this machine.
PAPER_EDGE = {"name": "edge", "tier": "edge", "compute": {"ops_per_s": 153.4e9, "power_w": 140.0}}
PAPER_CLOUD = {"name": "cloud", "tier": "cloud", "compute": {"ops_per_s": 312e9, "power_w": 400.0}}
PAPER_LINKS = [
    {"from": "device", "to": "edge", "bandwidth_bps": 1 / 1.78e-12, "latency_s": 0.0, "energy_j_per_bit": 67e-9},
    {"from": "device", "to": "cloud", "bandwidth_bps": 1 / 0.22e-12, "latency_s": 0.0, "energy_j_per_bit": 42.6e-9},
    {"from": "edge", "to": "cloud", "bandwidth_bps": 1 / 0.22e-12, "latency_s": 0.0, "energy_j_per_bit": 49.6e-9},
]


def _step(title: str, *argv: str) -> None:
    console.print(Rule(f"[bold]{title}"))
    console.print("[dim]$ finplan " + " ".join(argv) + "[/dim]")
    code = finplan(list(argv))
    if code != 0:
        console.print(f"[red]step failed with exit code {code}[/red]")
        sys.exit(code)


def _write_network_and_scenario(out: Path, profile_path: Path, card_path: Path) -> tuple[float, Path]:
    profile = json.loads(profile_path.read_text())
    # A latency bound the device cannot meet alone, so the plan has to use the network.
    device_s = sum(b["latency_s"]["mean"] for b in profile["blocks"])
    max_latency_s = round(0.6 * device_s, 6)
    network = {
        "schema": "finplan.network/1",
        "nodes": [{"name": "device", "tier": "mobile", "profile": profile_path.name}, PAPER_EDGE, PAPER_CLOUD],
        "links": PAPER_LINKS,
    }
    scenario = {
        "schema": "finplan.scenario/1",
        "network": "network.json",
        "applications": [{"name": "digits", "model": card_path.name, "source": "device",
                          "max_latency_s": max_latency_s, "min_accuracy": 0.95}],
        "options": {"mode": "dynamic", "first_block_at_source": True, "strict": True},
    }
    atomic_write_text(out / "network.json", json.dumps(network, indent=2) + "\n")
    scenario_path = out / "scenario.json"
    atomic_write_text(scenario_path, json.dumps(scenario, indent=2) + "\n")
    return max_latency_s, scenario_path


def run_demo(out: Path, *, quick: bool = False) -> None:
    model = str(embedded_model_path())
    out.mkdir(parents=True, exist_ok=True)
    profile, card = out / "this-machine.profile.json", out / "b-alexnet-digits.card.json"
    budget = ["--budget-s", "2", "--limit", "200"] if quick else ["--budget-s", "10"]

    _step("1. The embedded model: a B-AlexNet trained on digits, 5 blocks, 3 exits", "inspect", model)
    _step("2. Profile every block and exit on this machine", "profile", model, "--calib", "embedded",
          "-o", str(profile), "--card", str(card), "--energy", "auto", *budget)
    max_latency_s, scenario = _write_network_and_scenario(out, profile, card)
    console.print(Rule("[bold]3. Plan"))
    console.print(
        "Network: the FIN paper's 3-tier system. The [bold]device[/bold] is this machine (its measured profile); "
        "[bold]edge[/bold] and [bold]cloud[/bold] are the paper's analytic servers (ops/s and watts, not measured). "
        f"Targets: latency < {max_latency_s * 1e3:.3f} ms (60% of this machine's time for all blocks), "
        "accuracy > 0.95, early exits active (dynamic mode).")
    _step("3. Plan with FIN, compared with the optimum and the baselines", "plan", str(scenario),
          "-o", str(out / "plan.json"), "--compare")
    deploy = out / "deploy"
    if deploy.exists():
        shutil.rmtree(deploy)
    _step("4. Emit one folder per node", "emit", str(out / "plan.json"), "--model", model, "-o", str(deploy))
    _step("5. Verify: chained parts equal the whole model", "verify", str(deploy), "--model", model,
          "--data", "embedded", "--quiet")
    console.print(Rule("[bold]6. Run"))
    # the analytic nodes' folders carry no profile, hence no thread count: run every node with
    # the threads the profiler chose for this machine, so the stand-ins run as the device does
    threads = json.loads(profile.read_text())["session_options"].get("intra_op_threads")
    console.print("All nodes run here, on this machine: edge and cloud parts take this machine's time, not the "
                  "analytic servers', so their busy times differ from the plan by design; links are emulated.")
    _step("6. Run the deployment and compare measured with predicted", "run", str(deploy), "--data", "embedded",
          "--emulate-links", "--quiet", *(["--threads", str(threads)] if threads else []),
          *(["--limit", "100"] if quick else []))
    console.print(Rule())
    console.print(f"Everything is in {out}/ (profile, card, network, scenario, plan, deployment).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finplan.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    parser.add_argument("--quick", action="store_true", help="short measurement budgets (for tests)")
    args = parser.parse_args(argv)
    run_demo(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
