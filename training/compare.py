"""``python -m training compare OLD NEW``: is a new model better than the one it replaces, source
by source, and by more than the validation's noise?

Both arguments are ``scores.csv`` files (or folders holding one) written by ``train`` (its
validation slices) or ``evaluate``: one row per slice with its source, group, label and
p(COVID).  The two are joined on the file, so they must score the same slices (the same
``--seed``/``--val-fraction`` split).  For each source: both AUCs, their difference, and a
paired group bootstrap of the difference (the same resampled groups score both models, so
what the two share does not count as noise): its 95 % interval and how often the new model
came out ahead.  The project ships a model only when it is better on every source; with 20
SARS-CoV-2 validation groups an AUC difference of a few hundredths is inside the noise, and
this table says so instead of leaving it to the reader.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

SCORES = "scores.csv"
COLUMNS = ["file", "source", "group", "label", "p_raw", "p_cal"]


def write_scores(path: Path, files, sources, groups, y, p_raw, p_cal) -> Path:
    """One row per scored slice (label 1 = the positive class), for ``compare``."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in zip(files, sources, groups, y, p_raw, p_cal):
            w.writerow([str(Path(row[0]).resolve()), row[1], row[2], int(row[3]), f"{float(row[4]):.6g}",
                        f"{float(row[5]):.6g}"])
    return path


def read_scores(path: str | Path) -> dict[str, dict]:
    path = Path(path)
    if path.is_dir():
        path = path / SCORES
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such scores file (train and evaluate write {SCORES})")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"error: {path}: not a scores file (missing columns {sorted(missing)})")
        out = {}
        for r in reader:
            out[r["file"]] = {"source": r["source"], "group": r["group"], "label": int(r["label"]),
                              "p": float(r["p_cal"])}
    return out


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): the same number as
    sklearn's roc_auc_score, without its per-call checks that dominate thousands of resamples."""
    r = rankdata(p)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _group_bootstrap(y: np.ndarray, groups: np.ndarray, stat, n: int, seed: int) -> np.ndarray:
    """``stat(idx)`` over ``n`` resamples of whole groups (resamples with one class only skipped)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in uniq]
    out = []
    for _ in range(n):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        if len(np.unique(y[idx])) == 2:
            out.append(stat(idx))
    return np.asarray(out)


def _difference(y, groups, old: float, new: float, d: np.ndarray) -> dict:
    return {"auc_old": float(old), "auc_new": new, "delta": new - old,
            "delta_ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "p_new_ahead": float(np.mean(d > 0)), "n_slices": int(len(y)), "n_groups": int(len(np.unique(groups))),
            "bootstraps": int(len(d))}


def paired_auc_difference(y, p_old, p_new, groups, n: int = 2000, seed: int = 0) -> dict:
    """AUC(new) - AUC(old) with a paired bootstrap over whole groups."""
    y, p_old, p_new, groups = map(np.asarray, (y, p_old, p_new, groups))
    d = _group_bootstrap(y, groups, lambda i: auc(y[i], p_new[i]) - auc(y[i], p_old[i]), n, seed)
    return _difference(y, groups, auc(y, p_old), auc(y, p_new), d)


def compare(old: str | Path, new: str | Path, n: int = 2000, seed: int = 0) -> dict:
    a, b = read_scores(old), read_scores(new)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("error: the two score files share no slice (another split, or other data?)")
    for f in common:
        if a[f]["label"] != b[f]["label"]:
            raise SystemExit(f"error: {f} has label {a[f]['label']} in one file and {b[f]['label']} in the other")
    out = {"only_old": len(set(a) - set(b)), "only_new": len(set(b) - set(a)), "per_source": {}}
    sources = list(dict.fromkeys(a[f]["source"] for f in common))
    for src in sources:
        fs = [f for f in common if a[f]["source"] == src]
        y = [a[f]["label"] for f in fs]
        if len(set(y)) < 2:
            continue
        out["per_source"][src] = paired_auc_difference(
            y, [a[f]["p"] for f in fs], [b[f]["p"] for f in fs], [a[f]["group"] for f in fs], n, seed)
    per = out["per_source"]
    out["better_on_every_source"] = bool(per) and all(m["delta"] > 0 for m in per.values())
    out["surely_better_on_every_source"] = bool(per) and all(m["delta_ci95"][0] > 0 for m in per.values())
    return out


def table(result: dict) -> str:
    lines = ["| source | slices (groups) | AUC old | AUC new | difference (95% paired group bootstrap) | new ahead in |",
             "|---|---|---|---|---|---|"]
    for src, m in result["per_source"].items():
        lo, hi = m["delta_ci95"]
        lines.append(f"| {src} | {m['n_slices']} ({m['n_groups']}) | {m['auc_old']:.3f} | {m['auc_new']:.3f} | "
                     f"{m['delta']:+.3f} ({lo:+.3f} to {hi:+.3f}) | {100 * m['p_new_ahead']:.0f}% |")
    return "\n".join(lines)


# --- the replace rule (issue 21, docs/design.md "The replace rule") ----------------------------

#: In-source validation AUC a candidate needs on every source.
MIN_IN_SOURCE_AUC = 0.85


def unpaired_auc_difference(y, p_new, groups, reference: float, n: int = 2000, seed: int = 0) -> dict:
    """AUC(new) - a fixed reference AUC, with a group bootstrap of the new model's AUC: for a
    left-out source where the bundled model has no score of its own (it trained on it)."""
    y, p_new, groups = map(np.asarray, (y, p_new, groups))
    d = _group_bootstrap(y, groups, lambda i: auc(y[i], p_new[i]) - reference, n, seed)
    return {**_difference(y, groups, reference, auc(y, p_new), d), "reference": "a fixed figure (unpaired)"}


def left_out_comparison(source: str, old: str, new: str, n: int = 2000) -> dict:
    """One left-out source: the candidate's fold (trained without ``source``, scored on all of
    it) against the bundled model on the same slices (``old`` a scores file), or against a fixed
    figure (``old`` a number: the bundled model's AUC on sources it never saw)."""
    left = Path(new) / "scores-left-out.csv"
    b = read_scores(left if Path(new).is_dir() and left.is_file() else new)
    rows = [r for r in b.values() if r["source"] == source]
    if not rows:
        raise SystemExit(f"error: {new} has no slice of {source}")
    try:
        reference = float(old)
    except ValueError:
        reference = None
    if reference is not None:
        return unpaired_auc_difference([r["label"] for r in rows], [r["p"] for r in rows],
                                       [r["group"] for r in rows], reference, n)
    a = read_scores(old)
    common = sorted(f for f in set(a) & set(b) if b[f]["source"] == source)
    if len(common) < len(rows):
        raise SystemExit(f"error: {old} lacks {len(rows) - len(common)} of the {len(rows)} {source} slices of {new}")
    return paired_auc_difference([b[f]["label"] for f in common], [a[f]["p"] for f in common],
                                 [b[f]["p"] for f in common], [b[f]["group"] for f in common], n)


def in_source_aucs(files: list[str]) -> dict[str, dict]:
    """Per source, the AUC of each scores file that has the source (k-fold runs: one per fold) and
    their mean."""
    per: dict[str, list[float]] = {}
    for f in files:
        rows = read_scores(f).values()
        for src in dict.fromkeys(r["source"] for r in rows):
            y = np.array([r["label"] for r in rows if r["source"] == src])
            if len(np.unique(y)) == 2:
                per.setdefault(src, []).append(auc(y, np.array([r["p"] for r in rows if r["source"] == src])))
    return {src: {"aucs": v, "mean": float(np.mean(v)), "runs": len(v)} for src, v in per.items()}


def replace_rule(left_out: list[tuple[str, str, str]], in_source: list[str], n: int = 2000) -> dict:
    """The replace rule: a candidate replaces the bundled model when
    (1) its mean leave-one-source-out AUC is higher than the bundled model's, no left-out source
    is worse, and for at least one the paired group bootstrap's 95 % lower bound is above 0; and
    (2) its in-source validation AUC is >= ``MIN_IN_SOURCE_AUC`` on every source (k-fold runs
    averaged).  ``left_out``: (source, bundled scores or a fixed AUC, candidate fold scores)."""
    folds = {src: left_out_comparison(src, old, new, n) for src, old, new in left_out}
    ins = in_source_aucs(in_source)
    mean_old = float(np.mean([m["auc_old"] for m in folds.values()]))
    mean_new = float(np.mean([m["auc_new"] for m in folds.values()]))
    checks = {
        "mean left-out AUC higher": mean_new > mean_old,
        "no left-out source worse": all(m["delta"] >= 0 for m in folds.values()),
        "one left-out source better beyond the noise": any(m["delta_ci95"][0] > 0 for m in folds.values()),
        f"in-source AUC >= {MIN_IN_SOURCE_AUC} on every source": bool(ins) and all(
            v["mean"] >= MIN_IN_SOURCE_AUC for v in ins.values()),
    }
    missing = sorted(set(ins) - set(folds))
    if missing:
        checks[f"every source left out once (missing {', '.join(missing)})"] = False
    return {"left_out": folds, "mean_left_out_old": mean_old, "mean_left_out_new": mean_new,
            "in_source": ins, "checks": checks, "replace": all(checks.values())}


def rule_text(r: dict) -> str:
    lines = ["Leave one source out (the candidate's fold scored on all of the left-out source):", "",
             "| left out | slices (groups) | bundled | candidate | difference (95% group bootstrap) |", "|---|---|---|---|---|"]
    for src, m in r["left_out"].items():
        lo, hi = m["delta_ci95"]
        ref = " (fixed figure)" if "reference" in m else ""
        lines.append(f"| {src} | {m['n_slices']} ({m['n_groups']}) | {m['auc_old']:.3f}{ref} | {m['auc_new']:.3f} | "
                     f"{m['delta']:+.3f} ({lo:+.3f} to {hi:+.3f}) |")
    lines.append(f"| mean | | {r['mean_left_out_old']:.3f} | {r['mean_left_out_new']:.3f} | |")
    lines += ["", "In-source validation AUC of the candidate:", ""]
    for src, v in r["in_source"].items():
        runs = f" (mean of {v['runs']} folds: {', '.join(f'{a:.3f}' for a in v['aucs'])})" if v["runs"] > 1 else ""
        lines.append(f"- {src}: {v['mean']:.3f}{runs}")
    lines += ["", "Replace rule:"]
    lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in r["checks"].items()]
    lines.append(f"decision: {'REPLACE the bundled model' if r['replace'] else 'KEEP the bundled model'}")
    return "\n".join(lines)


def rule_main(left_out: list[list[str]], in_source: list[str], out: str | None = None, n: int = 2000) -> int:
    r = replace_rule([tuple(x) for x in left_out], in_source, n)
    print(rule_text(r))
    if out:
        Path(out).write_text(json.dumps(r, indent=2), encoding="utf-8")
    return 0 if r["replace"] else 1


def main(old: str, new: str, out: str | None = None, n: int = 2000) -> int:
    result = compare(old, new, n)
    print(table(result))
    if result["only_old"] or result["only_new"]:
        print(f"note: {result['only_old']} slices only in {old}, {result['only_new']} only in {new}: left out")
    if result["surely_better_on_every_source"]:
        verdict = "better on every source, each beyond the 95% interval"
    elif result["better_on_every_source"]:
        verdict = "better on every source (point estimates), but not beyond the noise on all of them"
    else:
        worse = [s for s, m in result["per_source"].items() if m["delta"] <= 0]
        verdict = f"not better on every source: no better on {', '.join(worse)}"
    print(f"verdict: {verdict}")
    result["verdict"] = verdict
    if out:
        Path(out).write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0 if result["better_on_every_source"] else 1
