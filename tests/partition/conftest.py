"""Fixtures of the partition tests: the paper's system, shipped in examples/paper."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

# The helpers module sits next to this file; test modules import it by name too.
sys.path.insert(0, str(Path(__file__).parent))

from finplan.partition.documents import load_card_file, load_network
from partition_helpers import DATA, MODELS, PAPER


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((DATA / "paper_optima.json").read_text())


@pytest.fixture(scope="session")
def paper_network():
    return load_network(PAPER / "network.yaml")


@pytest.fixture(scope="session")
def paper_cards():
    return {m: load_card_file(PAPER / f"{m}.json") for m in MODELS}


@pytest.fixture
def paper(tmp_path):
    """A private copy of examples/paper (tests edit files)."""
    target = tmp_path / "paper"
    shutil.copytree(PAPER, target)
    return target
