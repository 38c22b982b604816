"""The planning problem's types: model cards, the network, the scenario.

Plain frozen data. ``documents.py`` builds them from the files a person writes (validated
there, once, at the boundary; every error a FinplanInputError naming the file and the field);
``profile_costs.py`` reads a node's costs of a card off its profiles. Past those the solvers
trust the data (finite positive numbers, known names, unique names) and work on numbers only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from finplan.links import Link

MODES = ("static", "dynamic")


@dataclass(frozen=True)
class Block:
    name: str
    flops: float
    output_bytes: float  # what a transfer after this block carries per sample: its live set's sum
    params_bytes: float
    live_set: tuple[tuple[str, float], ...] = ()  # (tensor, bytes per sample) when the card lists them


@dataclass(frozen=True)
class Exit:
    name: str
    after: int  # 0-based index of the block this exit head follows
    flops: float
    params_bytes: float
    accuracy: float


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-sample exit scores (``labels`` plus, per exit, confidence and prediction),
    or a precomputed ``table`` of threshold settings."""
    labels: np.ndarray | None
    confidence: Mapping[str, np.ndarray]
    predicted: Mapping[str, np.ndarray]
    table: tuple[dict, ...] = ()


@dataclass(frozen=True, eq=False)
class ModelCard:
    name: str
    hash: str | None
    input_bytes: float
    blocks: tuple[Block, ...]
    exits: tuple[Exit, ...]
    calibration: Calibration | None
    path: str | None  # where it was read from (for error messages)

    def exit_index(self, name: str) -> int:
        for index, exit_ in enumerate(self.exits):
            if exit_.name == name:
                return index
        raise KeyError(name)


@dataclass(frozen=True, eq=False)
class Node:
    name: str
    tier: str
    ops_per_s: float | None
    power_w: float | None
    profiles: tuple[tuple[str, dict], ...]  # (resolved path, profile document)
    memory_bytes: float | None
    max_utilization: float
    doc: dict  # as written, with profile paths resolved
    stage_overhead_s: float | None = None  # given by hand (e.g. an engine's per-hop cost); None: from the profile


@dataclass(frozen=True, eq=False)
class Network:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    path: str | None
    doc: dict  # the document with profile paths resolved, for self-contained plans

    def __post_init__(self):
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})
        object.__setattr__(self, "_links", {(l.src, l.dst): l for l in self.links})
        # read many times per evaluation: built once (the dataclass is frozen)
        object.__setattr__(self, "_names", tuple(n.name for n in self.nodes))

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def index(self, name: str) -> int:
        return self._index[name]

    def node(self, name: str) -> Node:
        return self.nodes[self._index[name]]

    def link(self, src: str, dst: str) -> Link | None:
        return self._links.get((src, dst))

    def successors(self, name: str) -> list[str]:
        return [l.dst for l in self.links if l.src == name]


@dataclass(frozen=True)
class Options:
    mode: str = "static"
    first_block_at_source: bool = True
    strict: bool = True

    def to_dict(self) -> dict:
        return {"mode": self.mode, "first_block_at_source": self.first_block_at_source, "strict": self.strict}


@dataclass(frozen=True, eq=False)
class Application:
    name: str
    card: ModelCard
    card_ref: str  # the card path as written in the scenario
    source: str
    max_latency_s: float
    min_accuracy: float
    rate_hz: float | None = None


@dataclass(frozen=True, eq=False)
class Scenario:
    network: Network
    applications: tuple[Application, ...]
    options: Options = field(default_factory=Options)
    path: str | None = None
