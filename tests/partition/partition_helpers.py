"""Paths and builders shared by the partition tests (fixtures live in conftest.py)."""
from __future__ import annotations

from pathlib import Path

from finplan.partition.context import contexts
from finplan.partition.problem import Application, Options, Scenario

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "examples" / "paper"
MULTI = ROOT / "examples" / "multi"
DATA = Path(__file__).parent / "data"
MODELS = ("b-alexnet", "b-resnet", "b-lenet")


def paper_ctx(network, card, max_latency_s, min_accuracy, options=None, rate_hz=None):
    app = Application("app", card, f"{card.name}.json", "device", max_latency_s, min_accuracy, rate_hz)
    return contexts(Scenario(network, (app,), options or Options()))[0]
