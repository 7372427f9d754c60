"""``python -m training evaluate``: a model package measured on any labelled folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ctviewer.inference.calibration import sigmoid
from ctviewer.inference.model import load_classifier

from . import evaluate
from .dataset import decode_all, discover
from .augment import SliceBatches


def evaluate_folder(model_dir: str, data: str, out: str | None = None, block: int = 25) -> int:
    clf = load_classifier(model_dir)  # verifies the SHA-256 first
    card = clf.card
    ds = discover(data, block=block)
    if sorted(ds.classes) != sorted(card.classes):
        print(f"error: the data's classes {ds.classes} differ from the model's {card.classes}", file=sys.stderr)
        return 2
    dec = decode_all(ds, clf.params)
    labels = ds.labels[dec.keep]
    groups = ds.groups[dec.keep]
    pos_name = card.positive_class
    y = (np.array([ds.classes[i] for i in labels]) == pos_name).astype(int)
    x = SliceBatches(dec.images, dec.boxes, labels, clf.params.size, 64).inputs()
    scores = clf.raw_scores(x)
    p_raw, p_cal = sigmoid(scores), sigmoid(scores / card.temperature)
    metrics = evaluate.summarise(y, p_raw, p_cal, groups, card.threshold)
    metrics["temperature"] = card.temperature
    out_dir = Path(out) if out else Path(model_dir) / f"eval-{Path(data).resolve().name}"
    figures = evaluate.write_plots(out_dir, y, p_raw, p_cal, card.classes, pos_name)
    rep = evaluate.text_report(y, p_cal, card.classes, pos_name)
    (out_dir / "classification_report.txt").write_text(rep, encoding="utf-8")
    (out_dir / "metrics.json").write_text(evaluate.json.dumps(metrics, indent=2), encoding="utf-8")
    evaluate.write_html(out_dir, f"{card.title} on {data}", metrics, figures, rep, [
        f"{len(y)} slices, {len(ds.paths) - len(y)} unreadable files skipped.",
        "Every slice of the folder is evaluated: if the model was trained on part of it, these numbers are optimistic.",
    ])
    ci = metrics["ci95"]
    print(f"{card.title} on {data}: {len(y)} slices")
    for k in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        lo, hi = ci.get(k, [float("nan")] * 2)
        print(f"  {k:12s} {metrics[k]:.3f}  (95% {lo:.3f}-{hi:.3f})")
    print(f"  ECE {metrics['ece_before']:.3f} before, {metrics['ece_after']:.3f} after temperature {card.temperature:.3f}")
    print(f"report: {out_dir / 'report.html'}")
    return 0
