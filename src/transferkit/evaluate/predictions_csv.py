"""Predictions of a saved model as a CSV: what ``transferkit predict`` writes, callable from Python.

One row per item: its index, its input (a path or text; empty for arrays), then for a single classifier the true
label (where the data's classes are the model's), the predicted class and its confidence; a model with several
heads, or a head on another field, writes one column per head instead (two for a classifier: class and
confidence).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from transferkit.evaluate.predict import predict_heads, predict_logits
from transferkit.runs import atomic_path, check_output_file


def write_predictions_csv(model: Any, ds: Any, out: str | Path, *, batch_size: int = 256,
                          progress: bool = True, overwrite: bool = True) -> None:
    """Write ``model``'s predictions on ``ds`` (prepared for it: ``model.prepare(ds)``) to ``out`` atomically.

    ``out`` is checked before predicting: an existing file is replaced only with ``overwrite`` (the CLI's
    ``--overwrite``), and a device, FIFO or folder never (:func:`transferkit.runs.check_output_file`)."""
    out = check_output_file(out, overwrite=overwrite)
    if len(model.tasks) > 1 or model.tasks[0].field != "label":
        _heads_csv(model, ds, out, batch_size, progress, overwrite)
        return
    logits, labels = predict_logits(model, ds, batch_size=batch_size, progress=progress)
    conf, pred = logits.softmax(1).max(1)
    with atomic_path(out, overwrite=overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "input", "label", "prediction", "confidence"])
        for i in range(len(ds)):
            src = ds.inputs[i] if not hasattr(ds.inputs, "shape") else ""
            lab = model.classes[int(labels[i])] if int(labels[i]) >= 0 and ds.classes == model.classes else ""
            w.writerow([i, src, lab, model.classes[int(pred[i])], f"{float(conf[i]):.6f}"])


def _heads_csv(model: Any, ds: Any, out: Path, batch_size: int, progress: bool, overwrite: bool) -> None:
    """One column per head (two for a classifier: its class and confidence): a model with ``model.heads``."""
    outs, _ = predict_heads(model, ds.unlabelled(), batch_size=batch_size, progress=progress)
    columns: list[tuple[str, list[str]]] = []
    for t in model.tasks:
        o = outs[t.name]
        if t.kind == "classification":
            conf, pred = o.softmax(1).max(1)
            columns += [(t.name, [t.classes[int(i)] for i in pred]), (f"{t.name}_confidence",
                                                                      [f"{float(c):.6f}" for c in conf])]
        elif t.kind == "multilabel":
            on = o.sigmoid() >= 0.5
            columns.append((t.name, ["|".join(c for c, b in zip(t.classes, row, strict=True) if b) for row in on]))
        else:
            values = t.decode(o)
            columns.append((t.name, [";".join(f"{float(v):.6g}" for v in row) for row in values]))
    with atomic_path(out, overwrite=overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "input", *(name for name, _ in columns)])
        for i in range(len(ds)):
            src = ds.inputs[i] if not hasattr(ds.inputs, "shape") else ""
            w.writerow([i, src, *(values[i] for _, values in columns)])
