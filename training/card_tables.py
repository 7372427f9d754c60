"""``python -m training tables SHIP_RUN [--loso RUN...] [--replaces EVAL_METRICS]``: put the
leave-one-source-out results and the replaced model's per-source numbers into the shipped
model's card and report.

Leave-one-source-out runs (``train --leave-out SOURCE``) each test on every slice of the one
source they never saw: that number predicts what a user at a new hospital meets.  They are
separate trainings, so their results are gathered here into ``metrics.leave_one_source_out``
of the model that ships (trained on every source).  ``--replaces`` takes the ``metrics.json``
that ``evaluate --split validation`` wrote for the previous model on the same validation
slices, so the card shows, source by source, what the new model replaces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctviewer.inference.card import ModelCard

from . import evaluate


def attach(ship: str, loso: list[str], replaces: str | None = None, replaced_card: str | None = None) -> ModelCard:
    folder = Path(ship)
    card = ModelCard.load(folder)
    out = {}
    for run in loso:
        c = ModelCard.load(run)
        for src, m in c.metrics.get("left_out", {}).items():
            m = {k: v for k, v in m.items() if k != "per_group"}  # per-group rows stay in the run's own card
            out[src] = {**m, "run": {"command": c.training.get("command"), "epochs": c.training.get("epochs_run"),
                                     "init": c.training.get("init"), "fit_seconds": c.training.get("fit_seconds")}}
    if out:
        card.metrics["leave_one_source_out"] = out
    if replaces:
        prev = json.loads(Path(replaces).read_text())
        old = ModelCard.load(replaced_card) if replaced_card else None
        card.extra["replaces"] = {
            "version": old.version if old else None,
            "sha256": old.sha256 if old else None,
            "same_validation_split": True,
            "metrics": {k: prev[k] for k in ("accuracy", "roc_auc", "sensitivity", "specificity")},
            "per_source": {k: {kk: vv for kk, vv in v.items() if kk != "per_group"} for k, v in prev["per_source"].items()},
            "measured_by": "python -m training evaluate --model OLD --data SOURCES... --split validation",
        }
    card.save(folder)
    tables = {}
    if out:
        tables["Leave one source out (trained without the source, tested on all of it)"] = out
    if replaces:
        tables["The model this one replaces, on the same validation slices"] = card.extra["replaces"]["per_source"]
    html_path = folder / "report.html"
    figures = {t: f for t, f in (("Accuracy and loss", "curves.png"), ("Confusion matrix", "confusion.png"),
                                 ("ROC", "roc.png"), ("Reliability diagram", "reliability.png")) if (folder / f).is_file()}
    rep = (folder / "classification_report.txt").read_text() if (folder / "classification_report.txt").is_file() else ""
    m = {**card.metrics["validation"], "per_source": card.metrics.get("per_source", {})}
    evaluate.write_html(folder, f"{card.title}: validation report", m, figures, rep, [
        f"Training command: {card.training.get('command')}",
        f"{card.training.get('epochs_run')} epochs, {card.training.get('fit_seconds', 0) / 60:.1f} min of training.",
        "Validation: whole groups (patients, studies, papers) held out of every source; temperature fitted on them.",
    ], tables)
    print(evaluate.source_table(card.metrics.get("per_source", {}), "validation, per source"))
    if out:
        print(evaluate.source_table(out, "left out of training"))
    print(f"wrote {folder / 'model-card.json'} and {html_path}", file=sys.stderr)
    return card
