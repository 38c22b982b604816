"""The closed-loop report: what a run measured, beside what the plan predicted.

Engine-independent: ``build_report(measurements, deployment)`` takes the ``Measurements`` of
any engine (local executor, Ray Serve) and the deployment folder's plan, network and
profiles. Every row says how its value was obtained: ``basis`` is ``measured`` (timed or
counted in this run), ``derived`` (measured counts times the profiles' per-block/exit energies,
with the profiles' method and measured flag) or ``estimated`` (an analytic node's power_w times
the busy time measured on this machine, or the link model's joules per bit times measured
bytes); ``estimate`` is true when the value rests on any energy that was not measured (a
``derived`` row from profiles whose energy is ``measured: false``, e.g. codecarbon's TDP x load
model, is an estimate too); ``how`` says it in words.

Latency: measured mean and p50/p90/p99 beside the plan's, where the predicted percentiles are
those of the plan's per-exit path latencies mixed by its exit rates (``report_latency``).

Comparisons: fractions (exit rates, accuracy) are compared by their difference in percentage
points against ``rate_tolerance``; every other number by its relative error against
``tolerance``. A row beyond its tolerance carries ``warn: true`` and a line in ``warnings``.
"""
from __future__ import annotations

import numpy as np

from finplan.deploy.deployment import Deployment
from finplan.deploy.executor import Measurements, link_key
from finplan.deploy.report_latency import finite_number as _num, mixture_percentile, predicted_latency

REPORT_SCHEMA = "finplan.run-report/1"
DEFAULT_TOLERANCE = 0.15
DEFAULT_RATE_TOLERANCE = 0.02
# Link emulation's own error (waiting longer than the link model says) is worth a warning when
# it adds more than this share of the measured mean latency: the latency rows then compare the
# plan partly with the emulator.
EMULATION_WARN_SHARE = 0.01
LATENCY_PERCENTILES = (50, 90, 99)


def relative_error(measured: float | None, predicted: float | None) -> float | None:
    if measured is None or predicted is None:
        return None
    if predicted == 0:
        return 0.0 if measured == 0 else None
    return (measured - predicted) / abs(predicted)


class _Rows:
    def __init__(self, tolerance: float, rate_tolerance: float):
        self.rows: list[dict] = []
        self.warnings: list[str] = []
        self.tolerance = tolerance
        self.rate_tolerance = rate_tolerance

    def add(self, metric: str, unit: str, measured, predicted, basis: str, *, fraction: bool = False,
            note: str | None = None, estimate: bool = False, how: str | None = None,
            conditions: list[str] | None = None) -> dict:
        measured, predicted = _num(measured), _num(predicted)
        rel = relative_error(measured, predicted)
        diff = None if measured is None or predicted is None else measured - predicted
        if fraction:
            warn = diff is not None and abs(diff) > self.rate_tolerance
        else:
            warn = (rel is None and measured is not None and predicted == 0 and measured != 0) or (
                rel is not None and abs(rel) > self.tolerance)
        row = {"metric": metric, "unit": unit, "measured": measured, "predicted": predicted, "relative_error": rel,
               "difference": diff, "basis": basis, "estimate": bool(estimate),
               "how": how or basis, "warn": bool(warn)}
        if note:
            row["note"] = note
        self.rows.append(row)
        if warn:
            # an estimate is never called a measurement, not even in a warning
            seen = "estimated" if estimate else ("derived" if basis == "derived" else "measured")
            if fraction:
                text = f"{metric}: {seen} {measured:.3f} vs predicted {predicted:.3f} ({100 * diff:+.1f} points, " \
                       f"tolerance {100 * self.rate_tolerance:.0f})"
            elif rel is None:
                text = f"{metric}: {seen} {measured:.4g} {unit} where the plan predicted 0"
            else:
                text = f"{metric}: {seen} {measured:.4g} {unit} vs predicted {predicted:.4g} ({100 * rel:+.0f}%, " \
                       f"tolerance {100 * self.tolerance:.0f}%)"
            # a warning line stands alone in logs: it carries the run's conditions that explain it
            context = "; ".join([note] * bool(note) + list(conditions or []))
            self.warnings.append(text + (f" [{context}]" if context else ""))
        return row


def threads_used(m) -> dict[str, dict]:
    """node -> {intra_op_threads (None: onnxruntime's default), how it was chosen}: the count each
    node ran with is part of what a latency means (the planner's hold for the profiled count)."""
    per_node = m.threads if isinstance(m.threads, dict) else {}
    how = getattr(m, "threads_how", None) or {}
    nodes = list(dict.fromkeys(list(per_node) + list(how)))
    return {node: {"intra_op_threads": m.threads if isinstance(m.threads, int) else per_node.get(node),
                   "how": how.get(node)} for node in nodes}


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _profile_for(deployment: Deployment, node: str) -> tuple[str, dict] | None:
    """The profile of the deployed model on ``node`` (by hash, else by model name)."""
    candidates = deployment.profiles.get(node, [])
    for path, doc in candidates:
        if deployment.model_hash is not None and doc["model"]["hash"] == deployment.model_hash:
            return path, doc
    for path, doc in candidates:
        if doc["model"]["name"] == deployment.index["model"]["name"]:
            return path, doc
    return None


def node_energy(deployment: Deployment, m: Measurements, node: str) -> dict:
    """Energy of ``node`` over the whole run, and how it was obtained."""
    profile = _profile_for(deployment, node)
    if profile is not None:
        path, doc = profile
        blocks = {b["name"]: b for b in doc["blocks"]}
        exits = {e["name"]: e for e in doc["exits"]}
        total, methods, measured_flags, missing = 0.0, set(), set(), []
        for name, count in m.block_samples.get(node, {}).items():
            if name not in blocks:
                missing.append(name)
                continue
            total += count * float(blocks[name]["energy_j"]["value"])
            methods.add(blocks[name]["energy_j"]["method"])
            measured_flags.add(bool(blocks[name]["energy_j"]["measured"]))
        for name, count in m.exit_samples.get(node, {}).items():
            if name not in exits:
                missing.append(name)
                continue
            total += count * float(exits[name]["energy_j"]["value"])
            methods.add(exits[name]["energy_j"]["method"])
            measured_flags.add(bool(exits[name]["energy_j"]["measured"]))
        if measured_flags:
            profile_measured = measured_flags == {True}
        else:  # nothing counted on this node: the profile's own summary says how its energy was obtained
            summary = doc.get("energy") or {}
            profile_measured = summary["measured"] if isinstance(summary.get("measured"), bool) else None
            methods.update([summary["method"]] if summary.get("method") else [])
        method = ",".join(sorted(methods)) or None
        # a product of measured counts and per-run energies is only as measured as those energies
        estimate = profile_measured is not True
        how = "derived: the profile's energy per block/exit run x the runs counted here"
        how += (f"; ESTIMATE: the profile's energy is not measured (method {method})" if estimate
                else f"; the profile's energy is measured (method {method})")
        label = "derived: profile J x counts" + (f"; ESTIMATE ({method})" if estimate else f" ({method})")
        return {"energy_j": total, "basis": "derived", "estimate": estimate, "label": label, "source": path,
                "method": method, "profile_measured": profile_measured, "missing": missing or None, "how": how}
    compute = deployment.network_node(node).get("compute") or {}
    power = _num(compute.get("power_w"))
    if power is not None:
        return {"energy_j": power * m.node_busy_s.get(node, 0.0), "basis": "estimated", "estimate": True,
                "label": "ESTIMATE: power_w x busy", "source": "network.json", "method": "power-model", "profile_measured": False,
                "how": "ESTIMATE: the node's compute.power_w x busy time measured on this machine (an analytic node; "
                       "this machine stands in for it)"}
    return {"energy_j": None, "basis": "unknown", "estimate": True, "label": "unknown", "source": None, "method": None,
            "profile_measured": None, "how": "no matching profile and no compute.power_w for this node"}


def build_report(m: Measurements, deployment: Deployment, *, tolerance: float = DEFAULT_TOLERANCE,
                 rate_tolerance: float = DEFAULT_RATE_TOLERANCE) -> dict:
    """The predicted-vs-measured report as a JSON-ready dict (see the module docstring)."""
    app = deployment.application
    predicted = app.get("predicted") or {}
    n = max(m.n_samples, 1)
    rows = _Rows(tolerance, rate_tolerance)
    analytic = {node for node in deployment.nodes if _profile_for(deployment, node) is None}

    # accuracy and exits
    accuracy = None
    if m.labels is not None and m.n_samples:
        accuracy = float(np.mean(m.predictions == m.labels))
    rows.add("accuracy", "fraction", accuracy, predicted.get("accuracy"), "measured", fraction=True,
             note=None if m.labels is not None else "the data has no labels")
    exit_counts: dict[str, int] = {}
    for name in m.exit_names:
        exit_counts[name] = exit_counts.get(name, 0) + 1
    predicted_rates = predicted.get("exit_rates") or {}
    exit_order = [e["name"] for e in deployment.index.get("active_exits", [])]
    exit_order += [e for e in list(predicted_rates) + list(exit_counts) if e not in exit_order]
    exit_rates = {}
    for name in exit_order:
        rate = exit_counts.get(name, 0) / n
        exit_rates[name] = rate
        rows.add(f"exit_rate[{name}]", "fraction", rate, predicted_rates.get(name, 0.0), "measured", fraction=True)

    # latency
    lat = np.asarray(m.latency_s, dtype=float)
    transfers = app.get("transfers") or []
    expected_transfer_s = sum(_num(t.get("probability", 1.0)) * _transfer_time(deployment, t) for t in transfers)
    worst_transfer_s = sum(_transfer_time(deployment, t) for t in transfers)
    pred_mean = _num(predicted.get("expected_latency_s"))
    pred_worst = _num(predicted.get("latency_s"))
    distribution = predicted_latency(deployment)
    per_exit_s = distribution.per_exit_s
    if not m.emulate_links:
        # without link emulation nothing waits for the network: compare with the compute part only
        pred_mean = None if pred_mean is None else pred_mean - expected_transfer_s
        pred_worst = None if pred_worst is None else pred_worst - worst_transfer_s
        per_exit_s = distribution.without_transfers(deployment, lambda t: _transfer_time(deployment, t))
    link_note = "links emulated" if m.emulate_links else "links not emulated: predictions without transfer time"
    analytic_note = (f"analytic nodes {', '.join(sorted(analytic))}: this machine stands in for them"
                     if analytic else None)
    # the run's conditions apply to every latency row: said once (report["conditions"]), not per row
    conditions = [x for x in (link_note, analytic_note, f"batch size {m.batch_size}" if m.batch_size > 1 else None) if x]
    latency = {"mean": float(lat.mean()) if lat.size else None, "p50": _percentile(lat, 50), "p90": _percentile(lat, 90),
               "p99": _percentile(lat, 99), "max": float(lat.max()) if lat.size else None}
    predicted_latency_s = {
        "mean": pred_mean, **{f"p{q}": mixture_percentile(per_exit_s, distribution.exit_rates, q)
                               for q in LATENCY_PERCENTILES},
        "max": pred_worst, "per_exit": per_exit_s, "exit_rates": distribution.exit_rates,
        "method": distribution.method, "not_predicted_because": distribution.reason,
        "includes_transfers": bool(m.emulate_links),
    }
    rows.add("latency_mean", "s", latency["mean"], pred_mean, "measured",
             note="the plan's expected_latency_s (exit rates x per-exit path latencies)", conditions=conditions)
    if distribution.method is not None:
        percentile_note = f"predicted: the plan's per-exit path latencies ({distribution.method}) mixed by its exit rates"
    else:
        percentile_note = f"not predicted: {distribution.reason}"
    for q in LATENCY_PERCENTILES:
        rows.add(f"latency_p{q}", "s", latency[f"p{q}"], predicted_latency_s[f"p{q}"], "measured", note=percentile_note,
                 conditions=conditions)
    final_exit = deployment.index.get("final_exit")
    final_lat = lat[[name == final_exit for name in m.exit_names]] if lat.size else lat
    final_mean = float(final_lat.mean()) if final_lat.size else None
    rows.add(f"latency_mean[{final_exit}]", "s", final_mean, pred_worst, "measured",
             note="inputs that reach the final exit; the plan's latency_s (slowest path)", conditions=conditions)

    # nodes
    per_node_pred = app.get("per_node") or {}
    nodes = {}
    for node in deployment.nodes:
        busy = m.node_busy_s.get(node, 0.0) / n
        pred = per_node_pred.get(node) or {}
        busy_note = "analytic node: busy time measured on this machine" if node in analytic else None
        rows.add(f"busy_s[{node}]", "s", busy, pred.get("busy_s"), "measured", note=busy_note)
        energy = node_energy(deployment, m, node)
        per_inference = None if energy["energy_j"] is None else energy["energy_j"] / n
        rows.add(f"energy_j[{node}]", "J", per_inference, pred.get("energy_j"), energy["basis"],
                 estimate=energy["estimate"], how=energy["label"], note=energy["how"])
        nodes[node] = {"busy_s_per_inference": busy, "busy_s_total": m.node_busy_s.get(node, 0.0),
                       "calls": m.node_calls.get(node, 0), "blocks": m.block_samples.get(node, {}),
                       "exits": m.exit_samples.get(node, {}), "energy": {**energy, "energy_j_per_inference": per_inference},
                       "predicted": pred}

    # links
    links = {}
    predicted_link_bytes: dict[str, float] = {}
    for t in transfers:
        key = link_key(t.get("from"), t.get("to"))
        predicted_link_bytes[key] = predicted_link_bytes.get(key, 0.0) + float(t.get("bytes", 0)) * float(t.get("probability", 1.0))
    transfer_energy = 0.0
    for key in list(dict.fromkeys(list(predicted_link_bytes) + list(m.link_bytes))):
        measured_bytes = m.link_bytes.get(key, 0) / n
        rows.add(f"bytes[{key}]", "B", measured_bytes, predicted_link_bytes.get(key, 0.0), "measured")
        src, dst = key.split("->", 1)
        link = deployment.links.get((src, dst))
        energy = None if link is None else link.energy_j(m.link_bytes.get(key, 0)) / n
        transfer_energy += energy or 0.0
        intended = m.link_delay_s.get(key, 0.0)
        actual = None if m.link_delay_actual_s is None else m.link_delay_actual_s.get(key, 0.0)
        links[key] = {"bytes_per_inference": measured_bytes, "bytes_total": m.link_bytes.get(key, 0),
                      "samples": m.link_samples.get(key, 0),
                      "intended_delay_s_total": intended, "actual_delay_s_total": actual,
                      "emulation_error_s_total": None if actual is None else actual - intended,
                      "energy_j_per_inference": energy, "energy_basis": "estimated (link model x measured bytes)"}
        sent = m.link_samples.get(key, 0)
        if sent:  # per sample that crossed: what the live set's bytes per sample predict, tensor by tensor
            links[key]["bytes_per_sample_sent"] = m.link_bytes.get(key, 0) / sent
            links[key]["tensor_bytes_per_sample_sent"] = {
                name: total / sent for name, total in m.link_tensor_bytes.get(key, {}).items()}
        planned = {float(t.get("bytes", 0)) for t in transfers if link_key(t.get("from"), t.get("to")) == key}
        links[key]["predicted_bytes_per_sample"] = planned.pop() if len(planned) == 1 else None
    emulation = _emulation_summary(m, latency["mean"], rows)

    # energy totals
    node_values = [nodes[node]["energy"]["energy_j_per_inference"] for node in nodes]
    compute_energy = None if any(v is None for v in node_values) else sum(node_values)
    bases = sorted({nodes[node]["energy"]["basis"] for node in nodes})
    compute_estimate = any(nodes[node]["energy"]["estimate"] for node in nodes)
    rows.add("compute_energy_j", "J", compute_energy, predicted.get("compute_energy_j"), "+".join(bases),
             estimate=compute_estimate, how="sum of nodes" + ("; ESTIMATE" if compute_estimate else ""))
    rows.add("transfer_energy_j", "J", transfer_energy, predicted.get("transfer_energy_j"), "estimated", estimate=True,
             how="ESTIMATE: link J/bit x bytes", note="the link model's joules per bit x the bytes counted here")
    total = None if compute_energy is None else compute_energy + transfer_energy
    rows.add("energy_j", "J", total, predicted.get("energy_j"), "+".join(sorted(set(bases) | {"estimated"})),
             estimate=True, how="ESTIMATE: compute + transfer")

    return {
        "schema": REPORT_SCHEMA,
        "engine": m.engine,
        "application": m.application,
        "model": deployment.index.get("model"),
        "samples": m.n_samples,
        "batch_size": m.batch_size,
        "links_emulated": m.emulate_links,
        "conditions": conditions,
        "tolerance": tolerance,
        "rate_tolerance": rate_tolerance,
        "wall_s": m.wall_s,
        "accuracy": accuracy,
        "exit_counts": exit_counts,
        "exit_rates": exit_rates,
        "latency_s": latency,
        "predicted_latency_s": predicted_latency_s,
        "nodes": nodes,
        "links": links,
        "link_emulation": emulation,
        "energy_j_per_inference": {"total": total, "compute": compute_energy, "transfer": transfer_energy},
        "engine_overhead_s": m.engine_overhead_s,
        "engine_mode": m.engine_mode,
        "engine_events": list(m.engine_events),
        "threads": threads_used(m),
        "comparison": rows.rows,
        "warnings": rows.warnings,
    }


def _emulation_summary(m: Measurements, latency_mean_s: float | None, rows: _Rows) -> dict | None:
    """How far link emulation waited beyond the link model, per inference; a warning when that
    is a noticeable share of the measured mean latency. None without emulation."""
    if not m.emulate_links:
        return None
    n = max(m.n_samples, 1)
    intended = sum(m.link_delay_s.values()) / n
    if m.link_delay_actual_s is None:  # e.g. the Ray engine: it records only what it asked for
        return {"intended_delay_s_per_inference": intended, "actual_delay_s_per_inference": None,
                "excess_s_per_inference": None, "excess_share_of_latency_mean": None,
                "note": f"the {m.engine} engine does not record the delay that actually elapsed"}
    actual = sum(m.link_delay_actual_s.values()) / n
    excess = actual - intended
    share = excess / latency_mean_s if latency_mean_s else None
    if share is not None and share > EMULATION_WARN_SHARE:
        rows.warnings.append(
            f"link emulation: waited {excess * 1e6:.3g} us per inference beyond the link model's {intended * 1e6:.3g} us, "
            f"{100 * share:.1f}% of the measured mean latency (the latency rows include it)")
    return {"intended_delay_s_per_inference": intended, "actual_delay_s_per_inference": actual,
            "excess_s_per_inference": excess, "excess_share_of_latency_mean": share}


def _transfer_time(deployment: Deployment, transfer: dict) -> float:
    """Seconds of one transfer: the plan's own figure when given, else the link model's."""
    if _num(transfer.get("time_s")) is not None:
        return float(transfer["time_s"])
    link = deployment.links.get((transfer.get("from"), transfer.get("to")))
    return 0.0 if link is None else link.time_s(float(transfer.get("bytes", 0)))
