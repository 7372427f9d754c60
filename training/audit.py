"""``python -m training audit --data DIR...``: what a model could learn instead of the disease.

For each source, each cue below is scored as a classifier of the label on its own (ROC AUC,
0.5 = no information; under 0.5 the cue points the other way, so the table gives
max(AUC, 1 - AUC) and the direction).  None of these cues is the disease: the chest wall's
grey level, the image's size or its file format do not depend on COVID.  A cue that
separates the classes well means the source's classes were scanned, reconstructed or
exported differently, and that validation numbers on that source reward a model for
learning it.  The image size and file format are decided per file; the grey levels are
measured on the 8-bit image as stored (``--raster-intensity none``, the default) or as the
model sees it after ``standardise8`` (``landmarks``), with the chest found
as ``standardise8`` finds it (``preprocess.chest_hull8``).

- ``air``, ``soft tissue``: ``intensity_landmarks`` (the standardisation's landmarks);
- ``chest wall``: median grey level of the tissue in the outer band of the chest's hull
  (8 % of the image's short side: ribs, muscle and fat, no lung);
- ``width``, ``height``, ``file format``: as stored (format = extension and PIL mode).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import load_slices
from ctviewer.imaging.preprocess import PreprocessParams, chest_hull8, display8, intensity_landmarks

from .compare import auc
from .dataset import discover, positive_class

CUES = ("air", "soft tissue", "chest wall", "width", "height", "file format")
RISK = 0.70  # a label-free cue at or above this AUC is reported as a shortcut risk


def cues(path: str, params: PreprocessParams) -> dict:
    out: dict = {}
    try:
        with Image.open(path) as im:
            out["file format"] = f"{Path(path).suffix.lower()} {im.mode}"
            out["width"], out["height"] = im.size
    except OSError:
        out["file format"] = Path(path).suffix.lower()
    img = display8(load_slices(path)[0], params)
    out.setdefault("width", img.shape[1])
    out.setdefault("height", img.shape[0])
    marks = intensity_landmarks(img)
    if marks:
        out["air"], out["soft tissue"] = marks
    chest = chest_hull8(img)
    if chest is not None:
        small, hull, t2 = chest
        k = max(3, int(0.08 * min(small.shape)))
        ring = (hull == 1) & (cv2.erode(hull, np.ones((k, k), np.uint8)) == 0) & (small > t2)
        if ring.any():
            out["chest wall"] = float(np.median(small[ring]))
    return out


def cue_auc(y: np.ndarray, values: list) -> tuple[float, str] | None:
    """(max(AUC, 1 - AUC), direction) of one cue over the slices that have it.  A categorical
    cue is scored through the share of positives per category (in-sample: an upper bound)."""
    keep = [i for i, v in enumerate(values) if v is not None]
    yy = y[keep]
    if len(keep) < 4 or len(np.unique(yy)) < 2:
        return None
    v = [values[i] for i in keep]
    if isinstance(v[0], str):
        share = {c: float(np.mean([yy[i] for i in range(len(v)) if v[i] == c])) for c in set(v)}
        if len(share) < 2:
            return None
        x = np.array([share[c] for c in v])
        return auc(yy, x), "category"
    a = auc(yy, np.asarray(v, float))
    return (a, "higher in positives") if a >= 0.5 else (1 - a, "lower in positives")


def audit(data: list[str], block: int = 25, raster_intensity: str = "none", log=print) -> dict:
    ds = discover(data, block=block)
    pos = ds.classes.index(positive_class(ds.classes))
    params = replace(PreprocessParams(), raster_intensity=raster_intensity)
    rows, bad = [], 0
    for p in ds.paths:
        try:
            rows.append(cues(p, params))
        except (ImagingError, OSError, ValueError) as exc:
            log(f"  skipped {p}: {exc}", file=sys.stderr)
            rows.append(None)
            bad += 1
    out = {"positive_class": ds.classes[pos], "raster_intensity": raster_intensity, "risk_threshold": RISK, "unreadable": bad, "per_source": {}}
    for src in ds.source_names:
        idx = [i for i in np.flatnonzero(ds.sources == src) if rows[i] is not None]
        y = (ds.labels[idx] == pos).astype(int)
        res = {}
        for cue in CUES:
            r = cue_auc(y, [rows[i].get(cue) for i in idx])
            if r:
                res[cue] = {"auc": r[0], "direction": r[1]}
        out["per_source"][src] = {"slices": len(idx), "positives": int(y.sum()), "cues": res,
                                  "risks": [c for c, m in res.items() if m["auc"] >= RISK]}
    return out


def table(result: dict) -> str:
    lines = ["| source | slices | " + " | ".join(CUES) + " |", "|---|---|" + "---|" * len(CUES)]
    for src, m in result["per_source"].items():
        cells = []
        for cue in CUES:
            c = m["cues"].get(cue)
            cells.append("–" if c is None else f"{c['auc']:.2f}" + (" **risk**" if c["auc"] >= RISK else ""))
        lines.append(f"| {src} | {m['slices']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(data: list[str], out: str | None = None, block: int = 25, raster_intensity: str = "none") -> int:
    result = audit(data, block, raster_intensity)
    print("AUC of each label-free cue alone, per source (0.5 = none; risk at >= "
          f"{RISK:.2f}: the classes differ in how they were scanned or exported):")
    print(table(result))
    for src, m in result["per_source"].items():
        for cue in m["risks"]:
            c = m["cues"][cue]
            print(f"{src}: {cue} alone separates the classes (AUC {c['auc']:.2f}, {c['direction']})")
    if out:
        Path(out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0
