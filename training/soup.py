"""``python -m training soup RUN_A RUN_B --alpha A --data DIR... --out OUT``: a model whose
weights are (1 - A) x RUN_A's + A x RUN_B's (WiSE-FT, Wortsman et al. 2022).

Two fine-tunes of the same model stay in one basin, so the straight line between them is a
line of working models: here one end fine-tuned on SARS-CoV-2 alone keeps what the starting
model knew about its own source, the other, fine-tuned on every source, knows the foreign ones.
Every weight is interpolated, BatchNorm statistics included.  The result is evaluated,
calibrated and exported exactly as ``train`` does (same split of ``--data``, ``--leave-out``
for a leave-one-source-out fold: then RUN_B should be that fold's run), and its card records
both runs, their commands and hashes, and the alpha.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from ctviewer.inference.card import ModelCard, sha256_file

from . import evaluate
from .dataset import decode_all, discover, positive_class, source_split
from .fit import WEIGHTS, calibrate_and_measure, licence_note, log, save_plain_weights, summary_text


def soup(run_a: str, run_b: str, alpha: float, data: list[str], out: str, seed: int = 0, val_fraction: float = 0.2,
         block: int = 25, leave_out: str | None = None, name: str | None = None, version: str = "1.0.0",
         command: str | None = None) -> ModelCard:
    from ctviewer.imaging.preprocess import PreprocessParams

    from .architecture import build_model
    from .export import export_run
    from .keras_model import KerasClassifier, load_keras_run

    if not 0.0 <= alpha <= 1.0:
        raise SystemExit(f"error: --alpha {alpha}: must be between 0 and 1")
    a, b = load_keras_run(run_a), load_keras_run(run_b)
    for what in ("architecture", "preprocessing", "classes", "positive_class"):
        if getattr(a.card, what) != getattr(b.card, what):
            raise SystemExit(f"error: the two runs differ in {what}: their weights cannot be averaged")
    wa, wb = a.model.get_weights(), b.model.get_weights()
    model = build_model(a.card.architecture)
    model.set_weights([((1.0 - alpha) * x + alpha * y).astype(x.dtype) for x, y in zip(wa, wb)])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS
    save_plain_weights(model, a.card.architecture, weights)

    params = PreprocessParams.from_dict(a.card.preprocessing)
    ds = discover(list(data), block=block)
    if leave_out is not None and leave_out not in ds.source_names:
        raise SystemExit(f"error: --leave-out {leave_out!r} is not one of the sources {ds.source_names}")
    if sorted(ds.classes) != sorted(a.card.classes):
        raise SystemExit(f"error: the data's classes {ds.classes} differ from the runs' {a.card.classes}")
    dec = decode_all(ds, params, log=log)
    labels, groups, sources = ds.labels[dec.keep], ds.groups[dec.keep], ds.sources[dec.keep]
    _, va = source_split(sources, groups, labels, val_fraction, seed)
    held_out = np.zeros(0, np.int64)
    if leave_out is not None:
        held_out = np.flatnonzero(sources == leave_out)
        va = va[sources[va] != leave_out]
    trained_on = sorted(set(_sources(a.card)) | set(_sources(b.card)))
    card = ModelCard(
        name=name or a.card.name, version=version, architecture=a.card.architecture,
        preprocessing=a.card.preprocessing, classes=a.card.classes, positive_class=a.card.positive_class,
        weights_file=WEIGHTS, sha256=sha256_file(weights),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), licence=licence_note(trained_on))
    card.extra["tta"] = a.card.extra.get("tta", [])
    pos = ds.classes.index(positive_class(ds.classes))
    y, p_raw, p_cal, metrics = calibrate_and_measure(
        KerasClassifier(card, model, out_dir), out_dir, [ds.paths[i] for i in dec.keep],
        lambda idx: dec.inputs(idx, params.size), va, held_out,
        leave_out, labels, groups, sources, pos, params.size)
    card.training = {
        "recipe": "soup",
        "command": command,
        "soup": {"alpha": alpha, "formula": "(1 - alpha) * run_a + alpha * run_b, every weight",
                 "runs": [{"folder": str(Path(r.folder)), "command": r.card.training.get("command"),
                           "keras_weights_sha256": sha256_file(Path(r.folder) / WEIGHTS),
                           "sources": _sources(r.card), "left_out": r.card.training.get("left_out")}
                          for r in (a, b)]},
        "data": [str(Path(d).resolve()) for d in data],
        "sources": {src: {c: int(np.sum((labels == i) & (sources == src))) for i, c in enumerate(ds.classes)}
                    for src in ds.source_names},
        "left_out": leave_out,
        "split": {"grouping": f"class/(file number // {block})", "val_fraction": val_fraction, "seed": seed,
                  "val_slices": int(len(va)), "val_groups": sorted(np.unique(groups[va]).tolist())},
        "imagenet_weights": any(bool(r.card.training.get("imagenet_weights")) for r in (a, b)),
        "epochs_run": sum(int(r.card.training.get("epochs_run", 0)) for r in (a, b)),
        "fit_seconds": round(sum(float(r.card.training.get("fit_seconds", 0)) for r in (a, b)), 1),
    }
    card.limitations = list(b.card.limitations) + [
        f"The weights are a fixed interpolation (alpha {alpha}) of two fine-tunes; alpha was chosen on the same "
        "validation slices that these metrics are reported on."]
    card.save(out_dir)
    classes = ds.classes
    figures = evaluate.write_plots(out_dir, y, p_raw, p_cal, classes, classes[pos])
    rep = evaluate.text_report(y, p_cal, classes, classes[pos])
    (out_dir / "classification_report.txt").write_text(rep, encoding="utf-8")
    evaluate.write_html(out_dir, f"{card.title}: validation report", metrics, figures, rep, [
        f"Weight soup: (1 - {alpha}) x {Path(a.folder).name} + {alpha} x {Path(b.folder).name}.",
        f"Validation: {len(va)} slices in {metrics['n_groups']} held-out groups.",
        f"Temperature {card.temperature:.3f} fitted on validation.",
    ])
    card = export_run(out_dir)
    log(summary_text(card))
    return card


def _sources(card: ModelCard) -> list[str]:
    srcs = list((card.training or {}).get("sources", {}))
    left = (card.training or {}).get("left_out")
    return [s for s in srcs if s != left]
