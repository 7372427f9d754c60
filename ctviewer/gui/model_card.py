""""About the model": the model card a user needs before trusting a prediction:
what it was trained on, how well it did on held-out patients (with intervals),
its limits, its evaluation plots, and that it is for research only."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QScrollArea, QTabWidget, QTextBrowser, QVBoxLayout, QWidget

PLOTS = (("curves.png", "Training curves"), ("confusion.png", "Confusion matrix"), ("roc.png", "ROC"),
         ("reliability.png", "Reliability"))
DISCLAIMER = "Research use only, not for diagnosis. A slice-level second opinion, not a medical device."


def card_html(card) -> str:
    from ctviewer.inference.runtime import describe

    """The card as HTML: identity, validation metrics with 95 % intervals, data, limits, licence."""
    e = html.escape
    v = card.metrics.get("validation", {})
    ci = v.get("ci95", {})
    rows = []
    for key, name in (("accuracy", "Accuracy"), ("roc_auc", "ROC AUC"), ("sensitivity", "Sensitivity"),
                      ("specificity", "Specificity")):
        if key in v:
            lo_hi = ci.get(key)
            interval = f"{lo_hi[0]:.3f} – {lo_hi[1]:.3f}" if lo_hi else ""
            rows.append(f"<tr><td>{name}</td><td><b>{v[key]:.3f}</b></td><td>{interval}</td></tr>")
    split = ""
    if "n_slices" in v:
        split = (f"<p>Validation: {v['n_slices']} slices from {v.get('n_groups', '?')} held-out patient groups "
                 f"(whole groups held out, never single slices). Intervals: 95 % bootstrap over groups.</p>")
    ece = ""
    if "ece_before" in v:
        ece = (f"<p>Calibration: temperature {card.temperature:.3f}; expected calibration error "
               f"{v['ece_before']:.3f} before, {v['ece_after']:.3f} after.</p>")
    limits = "".join(f"<li>{e(str(x))}</li>" for x in card.limitations)
    training = card.training or {}
    return f"""
<h2>{e(card.name)} {e(card.version)}</h2>
<p style="color:#c0392b"><b>{e(DISCLAIMER)}</b></p>
<p>Date {e(card.date)} · architecture {e(str(card.architecture.get('trunk', '?')))}
({e(str(card.architecture.get('head', '')))} head), {card.preprocessing.get('size', '?')}×{card.preprocessing.get('size', '?')} input ·
model window W{card.preprocessing.get('window_width', '?'):g} / L{card.preprocessing.get('window_center', '?'):g} ·
decision threshold p(COVID) ≥ {card.threshold:.2f} · SHA-256 {e(card.sha256[:16])}…<br>
Runs on {e(describe(card))}.</p>
<h3>Validation</h3>
<table cellpadding="4"><tr><th align="left">Metric</th><th align="left">Value</th><th align="left">95 % interval</th></tr>
{''.join(rows)}</table>
{split}{ece}
<p><b>{e(card.transfer_note())}</b></p>
<h3>Training</h3>
<p>Recipe {e(str(training.get('recipe', '?')))}, {e(str(training.get('epochs_run', '?')))} epochs,
ImageNet weights: {e(str(training.get('imagenet_weights', '?')))}.</p>
<h3>Known limits</h3><ul>{limits}</ul>
<h3>Licence</h3><p>{e(card.licence)}</p>
"""


class ModelCardDialog(QDialog):
    def __init__(self, card, folder: str | Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"About the model — {card.title}")
        self.resize(760, 640)
        tabs = QTabWidget()
        text = QTextBrowser()
        text.setOpenExternalLinks(False)
        text.setHtml(card_html(card))
        tabs.addTab(text, "Card")
        folder = Path(folder)
        for name, title in PLOTS:
            path = folder / name
            if path.is_file():
                label = QLabel()
                label.setPixmap(QPixmap(str(path)))
                label.setAlignment(Qt.AlignmentFlag.AlignCenter)
                area = QScrollArea()
                area.setWidget(label)
                area.setWidgetResizable(True)
                tabs.addTab(area, title)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(tabs)
        lay.addWidget(buttons)
        self.tabs = tabs


def plot_count(dialog: QWidget) -> int:
    return dialog.tabs.count() - 1
