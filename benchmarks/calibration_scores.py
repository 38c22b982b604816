"""Per-sample exit scores of the embedded digits model, for the dynamic-mode benchmark.

Source, in order: a model card given on the command line; the profiler's card shipped in
examples/profiles/b-alexnet-digits.card.json; else the scores are computed here by running
the embedded ONNX model (onnxruntime, whole model, batches of 64) on its calibration split,
with the profiler's own scoring function (max softmax, rounded like the card). The three
give the same numbers: the scores do not depend on the device.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import ROOT

SHIPPED_CARD = ROOT / "examples" / "profiles" / "b-alexnet-digits.card.json"


def load_scores(card_path: str | Path | None = None) -> dict:
    """{'source': text, 'labels': int array, 'exits': [{'name', 'confidence', 'predicted'}]}."""
    path = Path(card_path) if card_path else (SHIPPED_CARD if SHIPPED_CARD.is_file() else None)
    if path is not None:
        doc = json.loads(path.read_text())
        cal = doc.get("calibration") or {}
        if cal.get("labels") is None or not cal.get("exits"):
            raise SystemExit(f"{path}: the card has no per-sample calibration scores (calibration.labels/exits)")
        try:
            shown = path.resolve().relative_to(ROOT)
        except ValueError:
            shown = path
        return {"source": f"model card {shown} (calibration source: {cal.get('source', '?')}, "
                          f"{len(cal['labels'])} samples)",
                "labels": np.asarray(cal["labels"], dtype=np.int64),
                "exits": [{"name": e["name"], "confidence": np.asarray(e["confidence"], dtype=float),
                           "predicted": np.asarray(e["predicted"], dtype=np.int64)} for e in cal["exits"]]}
    return _compute()


def _compute() -> dict:
    import onnx
    import onnxruntime as ort

    from finplan.contract import read_contract
    from finplan.data import embedded_calibration_path, embedded_model_path
    from finplan.profiler.calibration import SCORE_DECIMALS, softmax_scores

    model_path = embedded_model_path()
    contract = read_contract(onnx.load(str(model_path)), model_path)
    data = np.load(embedded_calibration_path())
    x, y = data["x"], data["y"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    outputs = [e.output for e in contract.exits]
    parts = [[] for _ in outputs]
    for start in range(0, len(x), 64):
        for i, out in enumerate(session.run(outputs, {contract.input: x[start:start + 64]})):
            conf, _entropy, pred = softmax_scores(out)
            parts[i].append((conf, pred))
    exits = []
    for e, rows in zip(contract.exits, parts):
        exits.append({"name": e.name, "confidence": np.round(np.concatenate([r[0] for r in rows]), SCORE_DECIMALS),
                      "predicted": np.concatenate([r[1] for r in rows]).astype(np.int64)})
    return {"source": f"computed here from {model_path.relative_to(ROOT)} on its calibration split "
                      f"({len(y)} samples, onnxruntime CPU)",
            "labels": np.asarray(y, dtype=np.int64), "exits": exits}
