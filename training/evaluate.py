"""Metrics with group-bootstrap intervals, evaluation plots and the HTML report."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from ctviewer.inference.calibration import expected_calibration_error


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, ROC AUC, sensitivity and specificity of the positive class (1)."""
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
    }


def bootstrap_intervals(y, p, groups, threshold=0.5, n=1000, seed=0) -> dict:
    """95 % intervals from resampling whole groups (patients, roughly) with replacement."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    samples: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.choice(uniq, len(uniq), replace=True)])
        if len(np.unique(y[idx])) < 2:
            continue
        for k, v in point_metrics(y[idx], p[idx], threshold).items():
            samples.setdefault(k, []).append(v)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in samples.items()}


def per_group(y, p, groups, threshold=0.5) -> list[dict]:
    """Accuracy and mean p(positive) of every group, weakest first: where the model fails is
    usually a few whole patients, which one accuracy number hides."""
    rows = []
    for g in np.unique(groups):
        m = groups == g
        rows.append({
            "group": str(g),
            "n": int(m.sum()),
            "positive": float(np.mean(y[m])),
            "accuracy": float(np.mean((p[m] >= threshold).astype(int) == y[m])),
            "mean_p": float(np.mean(p[m])),
        })
    return sorted(rows, key=lambda r: (r["accuracy"], r["group"]))


def summarise(y, p_raw, p_cal, groups, threshold=0.5) -> dict:
    """All reported numbers for one evaluation set."""
    m = point_metrics(y, p_cal, threshold)
    return {
        **m,
        "ci95": bootstrap_intervals(y, p_cal, groups, threshold),
        "ece_before": expected_calibration_error(p_raw, y),
        "ece_after": expected_calibration_error(p_cal, y),
        "n_slices": int(len(y)),
        "n_groups": int(len(np.unique(groups))),
        "n_positive": int(np.sum(y == 1)),
        # p(COVID) deciles 1, 5, 9 by true class: per source, a model that learned the source
        # rather than the disease shows shifted distributions for both classes alike
        "p_quantiles": {name: [float(q) for q in np.quantile(p_cal[y == c], [0.1, 0.5, 0.9])] if np.any(y == c) else None
                        for name, c in (("positive", 1), ("negative", 0))},
        "per_group": per_group(y, p_cal, groups, threshold),
    }


def per_source(y, p_raw, p_cal, groups, sources, threshold=0.5) -> dict:
    """``summarise`` for each source on its own (a mixed number hides the weakest hospital)."""
    out = {}
    for src in dict.fromkeys(np.asarray(sources).tolist()):
        m = np.asarray(sources) == src
        out[src] = summarise(y[m], p_raw[m], p_cal[m], groups[m], threshold)
    return out


def source_table(per_src: dict, title: str = "source") -> str:
    """A Markdown table of ``per_source`` results: slices, accuracy, AUC with its interval,
    sensitivity, specificity and calibration error, one row per source."""
    lines = [f"| {title} | slices (COVID) | accuracy | AUC (95% interval) | sensitivity | specificity | ECE "
             "| median p(COVID): COVID / non-COVID |",
             "|---|---|---|---|---|---|---|---|"]
    for src, m in per_src.items():
        lo, hi = m.get("ci95", {}).get("roc_auc", [float("nan")] * 2)
        q = m.get("p_quantiles") or {}
        med = " / ".join(f"{q[k][1]:.2f}" if q.get(k) else "–" for k in ("positive", "negative")) if q else ""
        lines.append(f"| {src} | {m['n_slices']} ({m['n_positive']}) | {m['accuracy']:.3f} | {m['roc_auc']:.3f} "
                     f"({lo:.2f}–{hi:.2f}) | {m['sensitivity']:.3f} | {m['specificity']:.3f} | {m['ece_after']:.3f} | {med} |")
    return "\n".join(lines)


def _html_table(heading: str, per_src: dict) -> str:
    rows = []
    for src, m in per_src.items():
        lo, hi = m.get("ci95", {}).get("roc_auc", [float("nan")] * 2)
        rows.append(f"<tr><td>{html.escape(str(src))}</td><td>{m['n_slices']} ({m['n_positive']})</td>"
                    f"<td>{m['accuracy']:.3f}</td><td>{m['roc_auc']:.3f} ({lo:.2f}–{hi:.2f})</td>"
                    f"<td>{m['sensitivity']:.3f}</td><td>{m['specificity']:.3f}</td><td>{m['ece_after']:.3f}</td></tr>")
    return (f"<h2>{html.escape(heading)}</h2><table><tr><th>source</th><th>slices (COVID)</th><th>accuracy</th>"
            "<th>AUC (95% group bootstrap)</th><th>sensitivity</th><th>specificity</th><th>ECE</th></tr>"
            + "".join(rows) + "</table>")


def write_plots(out: Path, y, p_raw, p_cal, class_names: list[str], pos_name: str, history: dict | None = None) -> dict:
    """Save the evaluation figures as PNG; return {title: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    neg_name = [c for c in class_names if c != pos_name][0]
    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("accuracy", "loss")):
            ep = np.arange(1, len(history[key]) + 1)
            ax.plot(ep, history[key], label="training")
            if f"val_{key}" in history:
                ax.plot(ep, history[f"val_{key}"], label="validation")
            ax.set_xlabel("epoch"), ax.set_ylabel(key), ax.set_title(key.capitalize()), ax.legend(), ax.grid(alpha=0.3)
        fig.tight_layout(), fig.savefig(out / "curves.png", dpi=110), plt.close(fig)
        files["Accuracy and loss"] = "curves.png"
    pred = (p_cal >= 0.5).astype(int)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ConfusionMatrixDisplay(
        confusion_matrix(y, pred, labels=[0, 1], normalize="true"), display_labels=[neg_name, pos_name]
    ).plot(ax=ax, cmap="Blues", values_format=".2f", colorbar=False)
    ax.set_title("Normalised confusion matrix")
    fig.tight_layout(), fig.savefig(out / "confusion.png", dpi=110), plt.close(fig)
    files["Confusion matrix"] = "confusion.png"
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p_cal)
        fig, ax = plt.subplots(figsize=(4.6, 4))
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(y, p_cal):.3f}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("1 - specificity"), ax.set_ylabel("sensitivity"), ax.set_title(f"ROC ({pos_name} positive)")
        ax.legend(loc="lower right"), ax.grid(alpha=0.3)
        fig.tight_layout(), fig.savefig(out / "roc.png", dpi=110), plt.close(fig)
        files["ROC"] = "roc.png"
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for p, name in ((p_raw, "before"), (p_cal, "after")):
        frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
        ax.plot(mean, frac, "o-", label=f"{name} (ECE {expected_calibration_error(p, y):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel(f"predicted p({pos_name})"), ax.set_ylabel("observed fraction"), ax.set_title("Reliability (temperature scaling)")
    ax.legend(loc="upper left"), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "reliability.png", dpi=110), plt.close(fig)
    files["Reliability diagram"] = "reliability.png"
    return files


def text_report(y, p_cal, class_names: list[str], pos_name: str) -> str:
    neg_name = [c for c in class_names if c != pos_name][0]
    return classification_report(y, (p_cal >= 0.5).astype(int), labels=[0, 1], target_names=[neg_name, pos_name], digits=3, zero_division=0)


def write_html(out: Path, title: str, metrics: dict, figures: dict, report_text: str, notes: list[str],
               tables: dict | None = None) -> Path:
    """One self-contained HTML page (figures embedded).  ``tables``: {heading: per-source dict}
    shown as tables (``per_source`` of ``metrics`` is always shown when present)."""
    rows = []
    for k in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        ci = metrics.get("ci95", {}).get(k)
        rows.append(f"<tr><td>{k}</td><td>{metrics[k]:.3f}</td><td>{'' if not ci else f'{ci[0]:.3f} – {ci[1]:.3f}'}</td></tr>")
    for k in ("ece_before", "ece_after", "temperature", "n_slices", "n_groups"):
        if k in metrics:
            v = metrics[k]
            rows.append(f"<tr><td>{k}</td><td>{v:.3f}</td><td></td></tr>" if isinstance(v, float) else f"<tr><td>{k}</td><td>{v}</td><td></td></tr>")
    groups = "".join(
        f"<tr><td>{html.escape(r['group'])}</td><td>{r['n']}</td><td>{r['positive']:.2f}</td>"
        f"<td>{r['accuracy']:.3f}</td><td>{r['mean_p']:.3f}</td></tr>"
        for r in metrics.get("per_group", [])
    )
    group_table = (
        "<h2>Per group, weakest first</h2><table><tr><th>group</th><th>slices</th><th>positive fraction</th>"
        f"<th>accuracy</th><th>mean p(positive)</th></tr>{groups}</table>" if groups else ""
    )
    tables = dict(tables or {})
    if metrics.get("per_source"):
        tables = {"Per source (validation groups held out of each source)": metrics["per_source"], **tables}
    source_tables = "".join(_html_table(head, per) for head, per in tables.items())
    imgs = "".join(
        f"<figure><img src='data:image/png;base64,{base64.b64encode((out / f).read_bytes()).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
        for t, f in figures.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px}}
figure{{display:inline-block;margin:8px}}img{{max-width:520px}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>{html.escape(title)}</h1><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>95% interval (group bootstrap)</th></tr>{''.join(rows)}</table>
{source_tables}
{group_table}
<h2>Classification report</h2><pre>{html.escape(report_text)}</pre><h2>Figures</h2>{imgs}
<h2>Raw numbers</h2><pre>{html.escape(json.dumps(metrics, indent=2))}</pre></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
