"""The files each command reads, so that none of them is ever an output (see
``finplan.fileio.refuse_outputs_over_inputs``). Names printed are the command line's."""
from __future__ import annotations

from pathlib import Path

from finplan.fileio import refuse_outputs_over_inputs


def existing(path) -> str | None:
    """``path`` when it names something on disk (``--calib digits`` names a dataset, not a file)."""
    return str(path) if path is not None and Path(str(path)).exists() else None


def scenario_inputs(scenario) -> dict[str, str]:
    """Every file a loaded scenario was read from: itself, its network, cards and profiles."""
    found: dict[str, str] = {}
    if scenario.path:
        found["SCENARIO"] = scenario.path
    if scenario.network.path:
        found["the network"] = scenario.network.path
    for app in scenario.applications:
        if app.card.path:
            found[f"the model card of {app.name}"] = app.card.path
    for node in scenario.network.nodes:
        for i, (path, _doc) in enumerate(node.profiles):
            found[f"the profile of node {node.name}" + (f" [{i}]" if len(node.profiles) > 1 else "")] = path
    return found


def plan_inputs(plan_path) -> dict[str, str]:
    """The plan and the files it names that ``emit`` reads: each application's card and every
    node's profile (absolute, or relative to the plan's folder or the current folder)."""
    from finplan.fileio import load_document

    found = {"PLAN.json": str(plan_path)}
    try:
        plan = load_document(plan_path, "plan")
    except Exception:  # noqa: BLE001 (emit reads it again and names what is wrong)
        return found
    refs: list[tuple[str, object]] = []
    for app in plan.get("applications") or []:
        if isinstance(app, dict) and isinstance(app.get("model"), dict):
            refs.append((f"the model card of {app.get('name')}", app["model"].get("card")))
    network = plan.get("network") if isinstance(plan.get("network"), dict) else {}
    for node in network.get("nodes") or []:
        if isinstance(node, dict):
            listed = node.get("profile")
            for ref in listed if isinstance(listed, list) else [listed]:
                refs.append((f"the profile of node {node.get('name')}", ref))
    for label, ref in refs:
        if not isinstance(ref, str) or not ref:
            continue
        candidate = Path(ref)
        bases = [None] if candidate.is_absolute() else [Path(plan_path).parent, Path.cwd()]
        for base in bases:
            path = candidate if base is None else base / candidate
            if path.exists():
                found.setdefault(label, str(path))
                if label in found and found[label] != str(path):
                    found[f"{label} ({path})"] = str(path)
    return found


__all__ = ["existing", "plan_inputs", "refuse_outputs_over_inputs", "scenario_inputs"]
