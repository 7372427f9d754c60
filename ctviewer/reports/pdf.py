"""PDF report of one study: header and verdict, suspicious slices, model card.

Decisions:

- A4 portrait pages drawn on ``matplotlib.figure.Figure`` objects saved with
  ``PdfPages`` (no pyplot, no ``matplotlib.use``: safe inside the Qt app).
- Pages, always in this order, so the count is known in advance
  (``page_count``): 1) patient/study header, the verdict in large type with its
  confidence, score, counts and rule sentence, and p(COVID) along the slice
  position; 2..) the thumbnails, ``THUMBS_PER_PAGE`` per page (one page saying
  "none" when there are none); last) the model card summary.  Every page has
  the footer: software version, model name and version, creation time (UTC),
  page k/n and "Research use only — not for diagnosis".
- The plot's x axis is the slice position (mm) when every classified slice
  has one (a refused slice without one is left off the plot), else the slice
  index in ``result.slices`` order.  Lung slices are dots
  coloured by label (COVID red, other blue), slices without lung grey crosses
  "no lung (excluded)", refused slices small grey ticks at the bottom; the
  threshold is a dashed line.
- Heatmaps: jet colours over the grey slice, alpha growing with the value
  (0 where the heatmap is 0, ``HEAT_ALPHA`` at 1).
- ``anonymize``: the patient block reads "anonymised" (no name, ID, birth
  date, sex), thumbnails have no file names, "folder:" study keys are
  pseudonymised, and the PDF metadata carries no patient data in any mode.
- Compression and font type follow matplotlib's rcParams (``pdf.compression``,
  ``pdf.fonttype``): tests render inside ``rc_context({"pdf.compression": 0})``
  to search the page text; production output is compressed as usual.
"""

from __future__ import annotations

import math
import os
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from ctviewer.inference.card import ModelCard
from ctviewer.reports import RESEARCH_ONLY, atomic_path, pseudonym, software_version as _sw
from ctviewer.studies import StudyResult, Thumbnail

A4 = (8.27, 11.69)
THUMBS_PER_PAGE = 6
HEAT_ALPHA = 0.6
COLOURS = {"COVID": "#c62828", "non-COVID": "#1565c0", "indeterminate": "#616161"}


def page_count(n_thumbnails: int) -> int:
    """Pages of a report with ``n_thumbnails`` thumbnails."""
    return 2 + max(1, math.ceil(n_thumbnails / THUMBS_PER_PAGE))


def heat_rgba(heatmap) -> np.ndarray:
    """(H, W, 4) float RGBA: jet colours, alpha = HEAT_ALPHA x value."""
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    rgba = colormaps["jet"](h)
    rgba[..., 3] = HEAT_ALPHA * h
    return rgba


def write_pdf(result: StudyResult, dest, card: ModelCard, thumbnails: Sequence[Thumbnail] = (),
              anonymize: bool = False, software_version: str | None = None) -> Path:
    """Write the study report to ``dest`` (atomically) and return its path."""
    dest = Path(dest)
    if anonymize and not result.deidentified:
        from ctviewer.privacy import Deidentifier

        d = Deidentifier()
        result = d.study_result(result)
        thumbnails = d.thumbnails(list(thumbnails), result)
    version = software_version or _sw()
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    thumbs = list(thumbnails)
    total = page_count(len(thumbs))
    footer = f"CT Viewer {version} · model {card.name} {card.version} · created {created}"
    pages = [_page_summary(result, card, anonymize)]
    for start in range(0, max(1, len(thumbs)), THUMBS_PER_PAGE):
        pages.append(_page_thumbnails(thumbs[start:start + THUMBS_PER_PAGE], anonymize))
    pages.append(_page_card(card))
    meta = {"Title": "CT Viewer study report (AI second opinion)", "Creator": f"CT Viewer {version}",
            "Subject": RESEARCH_ONLY}
    with atomic_path(dest, ".pdf") as tmp:
        with PdfPages(tmp, metadata=meta) as pdf:
            for number, fig in enumerate(pages, start=1):
                fig.text(0.06, 0.025, footer, fontsize=7, color="#444444")
                fig.text(0.94, 0.025, f"page {number}/{total}", fontsize=7, color="#444444", ha="right")
                fig.text(0.06, 0.012, RESEARCH_ONLY, fontsize=7, color="#444444")
                pdf.savefig(fig)
    return dest


def _wrap(text: str, width: int = 95) -> str:
    return "\n".join(textwrap.wrap(text, width)) or ""


def _page_summary(result: StudyResult, card: ModelCard, anonymize: bool) -> Figure:
    fig = Figure(figsize=A4)
    fig.text(0.06, 0.955, "CT Viewer — AI second opinion, study report", fontsize=15, weight="bold")
    p, st = result.patient, result.study
    if anonymize:
        patient = [f"Patient: anonymised ({p.patient_id}; dates shifted, descriptions removed)"]
    else:
        patient = [f"Patient: {p.name or '—'}", f"Patient ID: {p.patient_id or '—'}",
                   f"Birth date: {p.birth_date or '—'}   Sex: {p.sex or '—'}"]
    study = [f"Study date: {st.date or '—'}", f"Study description: {st.description or '—'}",
             f"Study UID: {pseudonym(st.uid, anonymize)}"]
    y = 0.915
    for line in patient + study:
        fig.text(0.06, y, line, fontsize=9.5)
        y -= 0.02
    v = result.verdict
    y -= 0.015
    if v is None:
        fig.text(0.06, y - 0.02, "No verdict (study not classified)", fontsize=22, weight="bold",
                 color=COLOURS["indeterminate"])
        y -= 0.05
    else:
        fig.text(0.06, y - 0.025, f"Verdict: {v.label}", fontsize=26, weight="bold",
                 color=COLOURS.get(v.label, "black"))
        fig.text(0.06, y - 0.06, f"Confidence {v.confidence:.0%}   ·   score {v.score:.3f}", fontsize=13)
        counts = (f"{v.n_lung} lung slices classified, {v.n_positive} called COVID; "
                  f"{v.n_excluded} not judged (no lung, not axial); {v.n_refused} refused")
        fig.text(0.06, y - 0.085, counts, fontsize=9.5)
        fig.text(0.06, y - 0.1, _wrap("Rule: " + v.rule), fontsize=9, va="top", style="italic")
        y -= 0.17
    if result.cancelled:
        fig.text(0.06, y, "Incomplete: the batch was cancelled before every slice was classified.",
                 fontsize=9.5, color="#c62828")
    fig.text(0.06, y - 0.025, f"Model: {result.model or card.title}", fontsize=9)
    if result.model_sha256 and result.model_sha256 != card.sha256:
        fig.text(0.06, y - 0.045, "Warning: these results were computed with another model than "
                 "the card below describes.", fontsize=9, color="#c62828")
    ax = fig.add_axes((0.1, 0.1, 0.84, y - 0.19))
    _plot_along(ax, result)
    return fig


def plot_x(result: StudyResult) -> tuple[list[float | None], str]:
    """x values for ``result.slices`` and the axis label.

    Positions (mm) when every classified slice has one (refused slices without
    a position get None: not plotted), else 1-based indices in slice order.
    """
    ok = [s for s in result.slices if s.ok]
    if ok and all(s.position is not None for s in ok):
        return [None if s.position is None else float(s.position) for s in result.slices], "slice position (mm)"
    return [float(i + 1) for i in range(len(result.slices))], "slice index"


def _plot_along(ax, result: StudyResult) -> None:
    xs, xlabel = plot_x(result)
    groups = {"COVID": ([], []), "other": ([], []), "nolung": ([], []), "refused": ([], [])}
    for x, s in zip(xs, result.slices):
        if x is None:
            continue
        if not s.ok:
            key = "refused"
        elif not s.judged:
            key = "nolung"
        else:
            key = "COVID" if s.label == "COVID" else "other"
        groups[key][0].append(x)
        groups[key][1].append(float(s.p_covid) if s.judged else 0.0)
    ax.scatter(*groups["COVID"], s=18, color=COLOURS["COVID"], label="lung slice, COVID", zorder=3)
    ax.scatter(*groups["other"], s=18, color=COLOURS["non-COVID"], label="lung slice, non-COVID", zorder=3)
    ax.scatter(*groups["nolung"], s=22, marker="x", color="#9e9e9e", label="not judged (no lung, not axial)", zorder=2)
    if groups["refused"][0]:
        ax.scatter(*groups["refused"], s=22, marker="|", color="#757575", label="refused", zorder=2)
    ax.axhline(result.threshold, color="black", linestyle="--", linewidth=0.8,
               label=f"threshold {result.threshold:g}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("p(COVID)")
    ax.set_title("p(COVID) along the slice position", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right", framealpha=0.85)


def _caption(t: Thumbnail, anonymize: bool) -> str:
    s = t.slice
    parts = [] if anonymize else [os.path.basename(s.path)]
    if s.frame is not None:
        parts.append(f"frame {s.frame + 1}")
    if s.position is not None:
        parts.append(f"pos {s.position:.1f} mm")
    elif s.instance_number is not None:
        parts.append(f"instance {s.instance_number}")
    parts.append("p(COVID) " + ("—" if s.p_covid is None else f"{s.p_covid:.3f}"))
    return "\n".join([" · ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


def _page_thumbnails(thumbs: Sequence[Thumbnail], anonymize: bool) -> Figure:
    fig = Figure(figsize=A4)
    fig.text(0.06, 0.955, "Most suspicious slices", fontsize=15, weight="bold")
    fig.text(0.06, 0.935, "Grey: the slice in the lung window; colours: where the model looked "
             "(Grad-CAM heatmap, red = most), not a lesion outline.", fontsize=8.5)
    if not thumbs:
        fig.text(0.06, 0.88, "No thumbnails in this report.", fontsize=11)
        return fig
    for i, t in enumerate(thumbs):
        row, col = divmod(i, 2)
        ax = fig.add_axes((0.08 + col * 0.45, 0.64 - row * 0.29, 0.4, 0.25))
        ax.imshow(np.asarray(t.image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if t.heatmap is not None:
            ax.imshow(heat_rgba(t.heatmap), interpolation="bilinear")
        ax.set_axis_off()
        ax.set_title(_caption(t, anonymize), fontsize=8)
    return fig


def _page_card(card: ModelCard) -> Figure:
    fig = Figure(figsize=A4)
    fig.text(0.06, 0.955, "Model card summary", fontsize=15, weight="bold")
    lines = [f"Model: {card.name} {card.version}   SHA-256 {card.sha256[:16]}…",
             f"Card date: {card.date or '—'}   threshold {card.threshold:g}   classes {', '.join(card.classes)}"]
    val = card.metrics.get("validation", {}) if isinstance(card.metrics, dict) else {}
    ci = val.get("ci95", {}) or {}
    lines.append("")
    n = val.get("n_slices")
    lines.append("Validation" + (f" ({n} slices, {val.get('n_groups', '?')} groups)" if n else "") + ":")
    for key, name in (("accuracy", "Accuracy"), ("roc_auc", "ROC AUC"),
                      ("sensitivity", "Sensitivity"), ("specificity", "Specificity")):
        if key in val:
            lo_hi = ci.get(key)
            interval = f"  (95% CI {lo_hi[0]:.3f}–{lo_hi[1]:.3f})" if lo_hi and len(lo_hi) == 2 else ""
            lines.append(f"    {name}: {val[key]:.3f}{interval}")
    if not val:
        lines.append("    no validation metrics in the card")
    lines += ["", card.transfer_note()]  # what a reader at another hospital can expect (issue 21)
    lines += ["", "Known limits:"]
    for item in card.limitations or ["none stated"]:
        wrapped = textwrap.wrap(item, 92)
        lines += ["  • " + wrapped[0]] + ["    " + w for w in wrapped[1:]]
    lines += ["", "Licence:"] + ["    " + w for w in textwrap.wrap(card.licence or "not stated", 92)]
    fig.text(0.06, 0.92, "\n".join(lines), fontsize=9, va="top", linespacing=1.5)
    fig.text(0.06, 0.1, RESEARCH_ONLY, fontsize=16, weight="bold", color="#c62828")
    return fig
