"""``python -m training heatmaps --model PKG``: do the model's explanations point at the disease?

On ``../shared/data/lung-masks`` (real COVID slices with expert lung and infection masks) each
slice goes through the app's own path (``inference.gradcam.slice_heatmap``: exactly what the
viewer overlays), and the heatmap's peak is looked up in
the experts' masks.  Reported: the share of slices whose peak lies inside the lungs and inside
the infection, and for reference the share of the slice's area (the chance of a random peak)
that lungs and infection cover.  ``--write-card`` stores the result in the card's
``heatmaps`` block (the card's SHA-256 of the model file is unchanged).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np


def measure(model_dir: str, data: str, limit: int | None = None) -> dict:
    from ctviewer.imaging.io import load_slices
    from ctviewer.inference.gradcam import slice_heatmap
    from ctviewer.inference.model import load_classifier

    clf = load_classifier(model_dir)
    root = Path(data)
    files = sorted((root / "ct").glob("*.png"))[:limit]
    if not files:
        raise SystemExit(f"error: no slices under {root / 'ct'}")
    in_lung, in_inf, lung_area, inf_area, p = [], [], [], [], []
    for f in files:
        s = load_slices(f)[0]
        lungs = cv2.imread(str(root / "lungs" / f.name), cv2.IMREAD_GRAYSCALE) > 127
        inf = cv2.imread(str(root / "infection" / f.name), cv2.IMREAD_GRAYSCALE) > 127
        cam, x = slice_heatmap(clf, s, with_input=True)
        y, xx = np.unravel_index(int(np.argmax(cam)), cam.shape)
        in_lung.append(bool(lungs[y, xx]))
        in_inf.append(bool(inf[y, xx]))
        lung_area.append(float(lungs.mean()))
        inf_area.append(float(inf.mean()))
        p.append(float(clf.probabilities(x[None])[0]))
    return {
        "data": str(root.resolve().name), "slices": len(files),
        "peak_in_lungs": float(np.mean(in_lung)), "peak_in_infection": float(np.mean(in_inf)),
        "lungs_share_of_slice": float(np.mean(lung_area)), "infection_share_of_slice": float(np.mean(inf_area)),
        "sensitivity_at_threshold": float(np.mean(np.array(p) >= clf.card.threshold)),
        "model": clf.card.title,
    }


def text(r: dict) -> str:
    return (f"{r['model']} on {r['slices']} expert-masked COVID slices ({r['data']}): Grad-CAM peak inside the "
            f"lungs {100 * r['peak_in_lungs']:.1f} % (lungs cover {100 * r['lungs_share_of_slice']:.1f} % of a slice), "
            f"inside the infection {100 * r['peak_in_infection']:.1f} % (infection covers "
            f"{100 * r['infection_share_of_slice']:.1f} %); called COVID {100 * r['sensitivity_at_threshold']:.1f} %")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training heatmaps", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a model package (model-card.json + model.onnx)")
    ap.add_argument("--data", default="../shared/data/lung-masks", help="ct/, lungs/, infection/ PNG folders")
    ap.add_argument("--limit", type=int, default=None, help="only the first N slices")
    ap.add_argument("--write-card", action="store_true", help="store the result in the card's heatmaps block")
    a = ap.parse_args(argv)
    r = measure(a.model, a.data, a.limit)
    print(text(r))
    if a.write_card:
        path = Path(a.model) / "model-card.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        card["heatmaps"] = r
        path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        print(f"wrote the heatmaps block into {path}", file=sys.stderr)
    return 0
