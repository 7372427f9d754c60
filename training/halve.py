"""``python -m training halve MODEL_DIR --data SOURCE...``: store a model package's weights in
float16, the same model rounded, after checking that nothing a user sees moves.

Why: the bundle's size (issue 24).  ResNet50's 23.5 M weights are 94 MB in float32 and 47 MB in
float16.  Only the *storage* is halved: each float16 initializer feeds a ``Cast`` to float32,
which ONNX Runtime folds into a constant when the session is created, so inference still runs
in float32 at the same speed, and Grad-CAM reads the same Dense kernel (rounded).

The check (refused otherwise, nothing written): on every slice of every ``--data`` source,
through the app's own path (``to_model_input``, the card's temperature and TTA), the largest
|Δ p(COVID)| <= ``MAX_DELTA_P`` and each source's AUC within ``MAX_DELTA_AUC``.  The card gets
the new SHA-256 and a ``file_history`` entry with the parity; ``python -m ctviewer.selftest
--write-expected`` comes next (docs/design.md, Shipping).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MAX_DELTA_P = 0.01
MAX_DELTA_AUC = 0.002
#: Initializers smaller than this stay float32 (shapes, scalars, per-channel vectors: nothing to save).
MIN_ELEMENTS = 256


def halve_bytes(data: bytes) -> bytes:
    """The ONNX model ``data`` with every float32 initializer of ``MIN_ELEMENTS`` or more stored
    as float16 behind a Cast to float32 (same names, same graph interface)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    kept, casts, halved = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < MIN_ELEMENTS:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if not np.all(np.isfinite(arr.astype(np.float16))):
            raise ValueError(f"initializer {init.name} does not fit float16")
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
        halved += 1
    if not halved:
        raise ValueError("no float32 weights to halve (already halved?)")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training halve", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="the model package (model-card.json and its ONNX file); changed in place")
    ap.add_argument("--data", required=True, nargs="+", help="labelled sources (class subfolders) to check parity on")
    ap.add_argument("--block", type=int, default=25)
    a = ap.parse_args(argv)

    from ctviewer.imaging import ImagingError, load_slices, to_model_input
    from ctviewer.inference.card import ModelCard
    from ctviewer.inference.model import OnnxClassifier, load_classifier

    from .dataset import discover, positive_class

    folder = Path(a.model_dir)
    old = load_classifier(folder)
    card = old.card
    path = card.weights_path(folder)
    data = path.read_bytes()
    t0 = time.time()
    half = halve_bytes(data)
    new = OnnxClassifier.from_bytes(card, half, folder)
    ds = discover(a.data, a.block)
    pos = ds.classes.index(positive_class(ds.classes))
    per_source, worst_dp, n = {}, 0.0, 0
    for src in ds.source_names:
        idx = np.flatnonzero(ds.sources == src)
        xs, ys = [], []
        for i in idx:
            try:
                xs.append(to_model_input(load_slices(ds.paths[i])[0], old.params))
            except ImagingError as exc:
                print(f"  skipped {exc}", file=sys.stderr)
                continue
            ys.append(int(ds.labels[i] == pos))
        x, y = np.stack(xs), np.array(ys)
        p_old, p_new = old.probabilities(x), new.probabilities(x)
        dp = float(np.max(np.abs(p_new - p_old)))
        auc_old, auc_new = _auc(y, p_old), _auc(y, p_new)
        per_source[src] = {"slices": len(y), "max_abs_delta_p": dp, "auc_float32": auc_old, "auc_float16": auc_new,
                           "delta_auc": auc_new - auc_old}
        worst_dp, n = max(worst_dp, dp), n + len(y)
        print(f"{src}: {len(y)} slices, max |dp| {dp:.5f}, AUC {auc_old:.5f} -> {auc_new:.5f}")
    bad = [s for s, r in per_source.items() if r["max_abs_delta_p"] > MAX_DELTA_P
           or abs(r["delta_auc"]) > MAX_DELTA_AUC]
    if bad:
        print(f"refused: {', '.join(bad)} moved more than |dp| {MAX_DELTA_P} or |dAUC| {MAX_DELTA_AUC}; "
              "nothing written", file=sys.stderr)
        return 1
    import hashlib

    digest = hashlib.sha256(half).hexdigest()
    raw = json.loads((folder / "model-card.json").read_text(encoding="utf-8"))
    raw.setdefault("file_history", []).append({
        "change": f"{card.weights_file}: weights stored in float16 (each behind a Cast to float32: inference still "
                  "runs in float32); the same model rounded, not a new model",
        "float32_sha256": card.sha256,
        "sha256": digest,
        "parity": {"slices": n, "max_abs_delta_p": worst_dp, "per_source": per_source,
                   "limits": {"max_abs_delta_p": MAX_DELTA_P, "max_abs_delta_auc": MAX_DELTA_AUC}},
        "commands": ["python -m training halve " + " ".join([str(folder), "--data", *a.data]),
                     "python -m ctviewer.selftest --write-expected"],
    })
    raw["sha256"] = digest
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(half)
    tmp.replace(path)
    (folder / "model-card.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    ModelCard.load(folder)  # the card still reads
    load_classifier(folder)  # and the package verifies
    print(f"{path}: {len(data) / 1e6:.1f} MB -> {len(half) / 1e6:.1f} MB, largest |dp| {worst_dp:.5f} on {n} "
          f"slices ({time.time() - t0:.0f} s); now run: python -m ctviewer.selftest --write-expected")
    return 0
