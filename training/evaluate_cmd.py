"""``python -m training evaluate``: a model package measured on labelled folders, per source.

With several ``--data`` folders each is a source (as in ``train``).  ``--split validation``
evaluates only the slices that a training run with the same ``--seed``/``--val-fraction``
held out of every source (``dataset.source_split``): that is how two models are compared on
the same validation slices, e.g. a new model against the one it replaces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ctviewer.inference.calibration import sigmoid
from ctviewer.inference.model import load_classifier

from . import evaluate
from .augment import SliceBatches
from .compare import SCORES, write_scores
from .dataset import decode_all, discover, source_split


def evaluate_folder(model_dir: str, data, out: str | None = None, block: int = 25, split: str = "all",
                    seed: int = 0, val_fraction: float = 0.2) -> int:
    clf = load_classifier(model_dir)  # verifies the SHA-256 first
    card = clf.card
    data_dirs = [data] if isinstance(data, str) else list(data)
    ds = discover(data_dirs, block=block)
    if sorted(ds.classes) != sorted(card.classes):
        print(f"error: the data's classes {ds.classes} differ from the model's {card.classes}", file=sys.stderr)
        return 2
    dec = decode_all(ds, clf.params)
    labels, groups, sources = ds.labels[dec.keep], ds.groups[dec.keep], ds.sources[dec.keep]
    idx = np.arange(len(labels))
    if split == "validation":
        idx = source_split(sources, groups, labels, val_fraction, seed)[1]
    pos_name = card.positive_class
    y = (np.array([ds.classes[i] for i in labels[idx]]) == pos_name).astype(int)
    x = SliceBatches([dec.images[i] for i in idx], dec.boxes[idx], labels[idx], clf.params.size, 64).inputs()
    scores = clf.raw_scores(x)
    p_raw, p_cal = sigmoid(scores), sigmoid(scores / card.temperature)
    metrics = evaluate.summarise(y, p_raw, p_cal, groups[idx], card.threshold)
    metrics["temperature"] = card.temperature
    metrics["per_source"] = evaluate.per_source(y, p_raw, p_cal, groups[idx], sources[idx], card.threshold)
    metrics["split"] = {"kind": split, "seed": seed, "val_fraction": val_fraction}
    name = "+".join(Path(d).resolve().name for d in data_dirs)
    out_dir = Path(out) if out else Path(model_dir) / f"eval-{name}"
    figures = evaluate.write_plots(out_dir, y, p_raw, p_cal, card.classes, pos_name)
    rep = evaluate.text_report(y, p_cal, card.classes, pos_name)
    (out_dir / "classification_report.txt").write_text(rep, encoding="utf-8")
    write_scores(out_dir / SCORES, [ds.paths[i] for i in dec.keep[idx]], sources[idx], groups[idx], y, p_raw, p_cal)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    evaluate.write_html(out_dir, f"{card.title} on {name}", metrics, figures, rep, [
        f"{len(y)} slices ({split}), {len(ds.paths) - len(dec.keep)} unreadable files skipped.",
        "With --split all every slice is evaluated: if the model was trained on part of it, these numbers are optimistic.",
    ])
    ci = metrics["ci95"]
    print(f"{card.title} on {name} ({split}): {len(y)} slices")
    for k in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        lo, hi = ci.get(k, [float("nan")] * 2)
        print(f"  {k:12s} {metrics[k]:.3f}  (95% {lo:.3f}-{hi:.3f})")
    print(f"  ECE {metrics['ece_before']:.3f} before, {metrics['ece_after']:.3f} after temperature {card.temperature:.3f}")
    print(evaluate.source_table(metrics["per_source"]))
    print(f"report: {out_dir / 'report.html'}")
    return 0
