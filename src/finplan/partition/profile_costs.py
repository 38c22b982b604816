"""A node's costs of a model card: from its matching hardware profile, else from its compute.

``node_block_costs`` and ``node_stage_overhead_s`` feed the cost tables (``costs.py``);
``cost_source`` says in a plan where each node's costs came from.
"""
from __future__ import annotations

from finplan.errors import FinplanInputError
from finplan.partition.problem import ModelCard, Node

# A profile's median, not its mean: on a shared machine a few preempted runs (tens of ms) can
# multiply the mean of a 15 us block by ten, while the median is what the profiler converges
# (95% CI within 2%) and what a block costs when it is not interrupted.
PROFILE_LATENCY_STATISTIC = "p50"


def _matching_profile(node: Node, card: ModelCard) -> tuple[str, dict] | None:
    for ppath, pdoc in node.profiles:
        if card.hash is not None and pdoc["model"]["hash"] == card.hash:
            return ppath, pdoc
        if card.hash is None and pdoc["model"]["name"] == card.name:
            return ppath, pdoc
    return None


def node_stage_overhead_s(node: Node, card: ModelCard) -> float:
    """Seconds one runtime stage costs on ``node`` beyond its parts' own compute.

    A stage is a run of consecutive blocks on one node, cut at every active exit and every node
    change; the runtime pays this once per stage (one session call, the exit scoring, its
    bookkeeping).

    Parameters
    ----------
    node : Node
        The node.
    card : ModelCard
        The model whose profile on the node is looked up.

    Returns
    -------
    float
        The node's ``stage_overhead_s`` when given by hand (e.g. an engine's per-hop cost), else
        the matching profile's measured ``stage_overhead_s.value``, else 0 (analytic nodes: the
        paper's model has no per-stage cost).

    Notes
    -----
    Complexity: O(profiles).
    """
    if node.stage_overhead_s is not None:
        return float(node.stage_overhead_s)
    profile = _matching_profile(node, card)
    if profile is not None:
        measured = profile[1].get("stage_overhead_s")
        if isinstance(measured, dict) and measured.get("value") is not None:
            return float(measured["value"])
    return 0.0


def _part_call_overhead_s(node: Node, profile: dict) -> float:
    """onnxruntime's per-call cost inside each profiled part's latency, to take out of the
    parts when the profile's measured stage overhead (which counts one call per stage) is used;
    0 for older profiles and when the node's stage_overhead_s is given by hand."""
    measured = profile.get("stage_overhead_s")
    if node.stage_overhead_s is not None or not isinstance(measured, dict):
        return 0.0
    return float(measured.get("part_call_overhead_s") or 0.0)


def cost_source(node: Node, card: ModelCard) -> dict:
    """Where ``node_block_costs`` takes the costs of ``card`` on ``node`` from.

    Parameters
    ----------
    node : Node
        The node.
    card : ModelCard
        The model.

    Returns
    -------
    dict
        ``{"from": "profile", "profile": PATH, "latency": "measured", "energy": "measured" |
        "estimated" | "mixed", "energy_methods": [...]}`` (``energy`` from the profile's
        per-part ``energy_j.measured`` flags), or ``{"from": "compute", "estimate": "flops /
        ops_per_s; power_w x time"}``, with ``"profile_mismatch": {"profile", "profile_hash",
        "card_hash"}`` added when the node has profiles but none of this model (then the compute
        estimate is used instead of measurements; callers should say so). ``PATH`` is as
        resolved when the network was read.

    Notes
    -----
    Complexity: O(profiles + parts).
    """
    profile = _matching_profile(node, card)
    if profile is not None:
        ppath, pdoc = profile
        parts = list(pdoc.get("blocks", [])) + list(pdoc.get("exits", []))
        flags = {bool((part.get("energy_j") or {}).get("measured")) for part in parts}
        methods = sorted({str((part.get("energy_j") or {}).get("method")) for part in parts
                          if (part.get("energy_j") or {}).get("method")})
        energy = "mixed" if len(flags) > 1 else ("measured" if flags == {True} else "estimated")
        return {"from": "profile", "profile": ppath, "latency": "measured", "energy": energy,
                "energy_methods": methods}
    out: dict = {"from": "compute", "estimate": "flops / ops_per_s; power_w x time"}
    if node.profiles:
        ppath, pdoc = node.profiles[0]
        out["profile_mismatch"] = {"profile": ppath, "profile_hash": pdoc["model"].get("hash"),
                                   "profile_model": pdoc["model"].get("name"), "card_hash": card.hash}
    return out


def node_block_costs(node: Node, card: ModelCard, network_path: str | None = None):
    """Per-block and per-exit (time_s, energy_j) of ``card`` on ``node``.

    From a matching hardware profile when the node has one (time: latency_s.p50, less the
    profile's ``stage_overhead_s.part_call_overhead_s`` when present, since the runtime fuses a
    stage's parts into one call and ``node_stage_overhead_s`` counts that call once; energy:
    energy_j.value), otherwise from ``compute`` (time = flops / ops_per_s, energy = power_w x
    time), also when the node's profiles are of another model (``cost_source`` records that
    fallback, and ``finplan plan`` warns about it).

    Parameters
    ----------
    node : Node
        The node.
    card : ModelCard
        The model.
    network_path : str or None, optional
        The network file, named in messages.

    Returns
    -------
    tuple of four lists of float
        (block_time_s, block_energy_j, exit_time_s, exit_energy_j).

    Raises
    ------
    FinplanInputError
        When the node's only profiles are of another model and it has no ``compute``, or its
        profile lacks a block or a head of the card.

    Notes
    -----
    Complexity: O(B + H + profiles).
    """
    profile = _matching_profile(node, card)
    if profile is None and node.profiles and node.ops_per_s is None:
        ppath, pdoc = node.profiles[0]
        if card.hash is not None:
            msg = (f"profile {ppath} is of model hash {pdoc['model']['hash']!r} but card {card.path} has hash "
                   f"{card.hash!r}; profile the same model or fix the card")
        else:
            msg = (f"profile {ppath} is of model {pdoc['model']['name']!r} but card {card.path} is {card.name!r} "
                   "(and has no hash)")
        raise FinplanInputError(msg, file=network_path, field=f"nodes[{node.name}].profile")
    if profile is not None:
        ppath, pdoc = profile
        pblocks = {b["name"]: b for b in pdoc["blocks"]}
        pexits = {e["name"]: e for e in pdoc["exits"]}
        call_s = _part_call_overhead_s(node, pdoc)

        def work_s(part: dict) -> float:  # the part's own work: a runtime stage fuses parts into one call
            return max(float(part["latency_s"][PROFILE_LATENCY_STATISTIC]) - call_s, 0.0)

        bt, be, et, ee = [], [], [], []
        for block in card.blocks:
            if block.name not in pblocks:
                raise FinplanInputError(f"has no block {block.name!r} of card {card.path}", file=ppath, field="blocks")
            bt.append(work_s(pblocks[block.name]))
            be.append(float(pblocks[block.name]["energy_j"]["value"]))
        for exit_ in card.exits:
            if exit_.name in pexits:
                et.append(work_s(pexits[exit_.name]))
                ee.append(float(pexits[exit_.name]["energy_j"]["value"]))
            elif exit_.flops == 0:
                et.append(0.0)
                ee.append(0.0)
            else:
                raise FinplanInputError(f"has no exit {exit_.name!r} of card {card.path}", file=ppath, field="exits")
        return bt, be, et, ee
    bt = [b.flops / node.ops_per_s for b in card.blocks]
    et = [e.flops / node.ops_per_s for e in card.exits]
    return bt, [node.power_w * t for t in bt], et, [node.power_w * t for t in et]
