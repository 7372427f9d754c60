"""``python -m training study-calibration``: fit the study-level confidence on validation
pseudo-studies of every source and store it in the model card (``study_verdict``).

A pseudo-study is one validation group of one source (the split of ``train``: SARS-CoV-2
blocks of 25 consecutive file numbers, UCSD papers and patients, MosMed studies), all of one
class.  For each: k of its n slices have p(COVID) >= the card's threshold.  The app's rule
(``ctviewer.studies.StudyCalibration``) maps (k, n) to P(COVID study) with a logistic curve of
the share shrunk toward one half by ``prior`` pseudo-slices; ``prior`` (a grid) and the curve
(logistic regression) are fitted by maximum likelihood with every source weighted equally, so
a source with many one-slice studies does not drown the others.  Slice errors within a study
are correlated (a patient the model misses entirely), and ``prior`` is how the fit learns it:
more slices of one study stop adding evidence.

The card gets the numbers, the reliability of study verdicts (by confidence band, per source,
in-sample and with each source's curve fitted on the other sources), and the command.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ctviewer.inference.calibration import sigmoid
from ctviewer.inference.card import ModelCard
from ctviewer.inference.model import load_classifier
from ctviewer.studies import StudyCalibration

PRIORS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
UNCERTAIN_BELOW = 0.75
BANDS = ((0.5, UNCERTAIN_BELOW), (UNCERTAIN_BELOW, 0.9), (0.9, 1.0001))


def pseudo_studies(p: np.ndarray, y: np.ndarray, groups: np.ndarray, sources: np.ndarray,
                   threshold: float) -> list[dict]:
    """One record per (source, group): k positive of n slices, the group's class, its source."""
    out = []
    for src in sorted(set(sources.tolist())):
        m = sources == src
        for g in sorted(set(groups[m].tolist())):
            sel = m & (groups == g)
            labels = set(y[sel].tolist())
            if len(labels) != 1:  # groups are made within a class; a mixed one cannot be a study
                continue
            out.append({"source": str(src), "group": str(g), "k": int(np.sum(p[sel] >= threshold)),
                        "n": int(sel.sum()), "y": int(labels.pop())})
    return out


def _features(studies: list[dict], prior: float) -> np.ndarray:
    return np.array([(s["k"] + prior / 2) / (s["n"] + prior) - 0.5 for s in studies])


def _weights(studies: list[dict]) -> np.ndarray:
    counts: dict[str, int] = {}
    for s in studies:
        counts[s["source"]] = counts.get(s["source"], 0) + 1
    w = np.array([1.0 / counts[s["source"]] for s in studies])
    return w * len(studies) / w.sum()


def _logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3) -> tuple[float, float, float]:
    """(intercept, slope, weighted log-likelihood) by Newton's method (a tiny ridge keeps a
    separable set finite)."""
    X = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(100):
        z = X @ beta
        p = sigmoid(z)
        grad = X.T @ (w * (y - p)) - l2 * beta
        H = -(X.T * (w * p * (1 - p))) @ X - l2 * np.eye(2)
        step = np.linalg.solve(H, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    p = np.clip(sigmoid(X @ beta), 1e-12, 1 - 1e-12)
    ll = float(np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))))
    return float(beta[0]), float(beta[1]), ll


def fit(studies: list[dict], fitted_on: str = "") -> StudyCalibration:
    y = np.array([s["y"] for s in studies], float)
    w = _weights(studies)
    best = None
    for prior in PRIORS:
        a, b, ll = _logistic(_features(studies, prior), y, w)
        if best is None or ll > best[3] + 1e-9:
            best = (prior, a, b, ll)
    prior, a, b, _ = best
    return StudyCalibration(prior=prior, intercept=a, slope=b, uncertain_below=UNCERTAIN_BELOW, fitted_on=fitted_on)


def reliability(studies: list[dict], cal_for) -> dict:
    """Verdicts by confidence band: how many, how many right; ``cal_for(study)`` gives the
    calibration to judge a study with (in-sample, or fitted without its source)."""
    rows = []
    for lo, hi in BANDS:
        n = right = 0
        for s in studies:
            p = cal_for(s).p_covid(s["k"], s["n"])
            conf = max(p, 1 - p)
            if lo <= conf < hi:
                n += 1
                right += int((p >= 0.5) == bool(s["y"]))
        rows.append({"confidence": f"{lo:.2f}-{min(hi, 1.0):.2f}", "studies": n, "right": right,
                     "accuracy": round(right / n, 3) if n else None,
                     "verdict": "uncertain" if hi <= UNCERTAIN_BELOW else "label"})
    return {"bands": rows}


#: Judged lung slices per pseudo-study drawn from a left-out source: a thick-slice chest CT has
#: about 10-60 slices through the lungs.
LEFT_OUT_STUDY_SIZES = (10, 30, 60)


def left_out_support(scores: dict[str, tuple[np.ndarray, np.ndarray]], cal: StudyCalibration, threshold: float,
                     draws: int = 500, sizes: tuple[int, ...] = LEFT_OUT_STUDY_SIZES, seed: int = 0) -> dict:
    """How far study verdicts can be trusted at a hospital the model never trained on.

    ``scores`` maps a left-out source to (labels 1 = positive class, p) of a model that never saw
    that source (the bundled model on a source it did not train on, or a ``--leave-out`` fold).
    For each source, class and study size ``n``, ``draws`` pseudo-studies of ``n`` slices are drawn
    from that class's slices (with replacement) and judged with ``cal`` exactly as the app judges a
    study.  Drawing slices independently of patient is kind to the model: in a real study the
    slices share the patient's look and a biased model errs on all of them together, so these
    accuracies are an upper bound.

    Returns ``{"sources": {src: {"covid": acc, "non_covid": acc, "balanced": acc, "labelled": share}},
    "max_confidence": m, ...}``: ``m`` is the lowest balanced accuracy over the sources (the chance
    that the verdict's leaning is right at a new hospital, whatever its mix of patients), rounded
    down to 0.01, and never under 0.5 (a coin flip). The app never shows a verdict surer than ``m``; below ``uncertain_below`` every
    verdict is "uncertain"."""
    rng = np.random.default_rng(seed)
    out: dict = {"sources": {}}
    for src in sorted(scores):
        y, p = scores[src]
        row: dict = {"slices": int(len(y))}
        labelled = total = 0
        for cls, name in ((1, "covid"), (0, "non_covid")):
            pos = np.asarray(p)[np.asarray(y) == cls] >= threshold
            if len(pos) == 0:
                raise ValueError(f"left-out source {src!r} has no slice of class {name}: a verdict's "
                                 "reliability needs both")
            right = 0
            for n in sizes:
                ks = pos[rng.integers(0, len(pos), size=(draws, n))].sum(axis=1)
                for k in ks.tolist():
                    pc = cal.p_covid(int(k), n)
                    right += int((pc >= 0.5) == bool(cls))
                    labelled += int(max(pc, 1 - pc) >= cal.uncertain_below)
                    total += 1
            row[name] = round(right / (draws * len(sizes)), 3)
        row["balanced"] = round((row["covid"] + row["non_covid"]) / 2, 3)
        row["labelled"] = round(labelled / total, 3)
        out["sources"][src] = row
    lowest = min(r["balanced"] for r in out["sources"].values())
    out["max_confidence"] = max(0.5, float(np.floor(lowest * 100) / 100))  # 0.5: a coin flip, no lower
    out["method"] = (f"{draws} pseudo-studies per class, source and size ({', '.join(map(str, sizes))} judged "
                     "slices) drawn from each left-out source's slices and judged with this calibration; "
                     "max_confidence = the lowest balanced accuracy of the verdict's leaning over the left-out "
                     "sources (slices drawn independently of patient: an upper bound)")
    return out


def read_left_out(pairs: list[tuple[str, str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``--left-out SOURCE SCORES``: the rows of a ``scores.csv`` (``train``/``evaluate``) whose source is
    SOURCE, as (labels, calibrated p)."""
    from .compare import read_scores

    out = {}
    for source, path in pairs:
        rows = [r for r in read_scores(path).values() if r["source"] == source]
        if not rows:
            raise SystemExit(f"error: {path}: no slice of source {source!r}")
        out[source] = (np.array([r["label"] for r in rows]), np.array([r["p"] for r in rows]))
    return out


def calibrate(model_dir: str, data: list[str], seed: int = 0, val_fraction: float = 0.2, block: int = 25,
              command: str | None = None, left_out: dict | None = None) -> dict:
    from .augment import SliceBatches
    from .dataset import decode_all, discover, source_split

    clf = load_classifier(model_dir)
    card = clf.card
    ds = discover(data, block=block)
    dec = decode_all(ds, clf.params)
    labels, groups, sources = ds.labels[dec.keep], ds.groups[dec.keep], ds.sources[dec.keep]
    idx = source_split(sources, groups, labels, val_fraction, seed)[1]
    y = (np.array([ds.classes[i] for i in labels[idx]]) == card.positive_class).astype(int)
    x = SliceBatches([dec.images[i] for i in idx], dec.boxes[idx], labels[idx], clf.params.size, 64).inputs()
    p = sigmoid(clf.raw_scores(x) / card.temperature)
    studies = pseudo_studies(p, y, groups[idx], sources[idx], card.threshold)
    names = sorted({s["source"] for s in studies})
    cal = fit(studies, fitted_on=f"{len(studies)} validation pseudo-studies of {', '.join(names)}")
    held = {src: fit([s for s in studies if s["source"] != src]) for src in names if len(names) > 1}
    block_out = {
        "prior": cal.prior, "intercept": round(cal.intercept, 4), "slope": round(cal.slope, 4),
        "uncertain_below": cal.uncertain_below, "fitted_on": cal.fitted_on,
        "rule": ("P(COVID study) = sigmoid(intercept + slope * ((k + prior/2) / (n + prior) - 0.5)) for k of n "
                 "judged lung slices with p(COVID) >= threshold; label when max(P, 1-P) >= uncertain_below, "
                 "else 'uncertain'"),
        "pseudo_studies": {src: {"studies": sum(s["source"] == src for s in studies),
                                 "covid": sum(s["source"] == src and s["y"] == 1 for s in studies),
                                 "slices": sum(s["n"] for s in studies if s["source"] == src)} for src in names},
        "reliability": {"all sources, in-sample": reliability(studies, lambda s: cal)},
        "command": command,
    }
    for src in names:
        mine = [s for s in studies if s["source"] == src]
        block_out["reliability"][f"{src}, in-sample"] = reliability(mine, lambda s: cal)
        if src in held:
            block_out["reliability"][f"{src}, curve fitted without it"] = reliability(mine, lambda s, c=held[src]: c)
    if left_out:
        support = left_out_support(left_out, cal, card.threshold, seed=seed)
        block_out["left_out"] = support
        block_out["max_confidence"] = support["max_confidence"]
    card.extra["study_verdict"] = block_out
    card.save(model_dir)
    return block_out


def main(model_dir: str, data: list[str], seed: int, val_fraction: float, block: int, argv: list[str],
         left_out: list[tuple[str, str]] | None = None) -> int:
    out = calibrate(model_dir, data, seed, val_fraction, block,
                    command=shlex.join(["python", "-m", "training", *argv]),
                    left_out=read_left_out(left_out) if left_out else None)
    print(json.dumps({k: v for k, v in out.items() if k not in ("reliability", "left_out")}, indent=1))
    for src, r in (out.get("left_out") or {}).get("sources", {}).items():
        print(f"left out {src:14s} verdict right: COVID studies {r['covid']:.3f}, non-COVID {r['non_covid']:.3f}, "
              f"balanced {r['balanced']:.3f}; labelled {r['labelled']:.3f}")
    for name, rel in out["reliability"].items():
        cells = ", ".join(f"{r['confidence']}: {r['right']}/{r['studies']}" for r in rel["bands"])
        print(f"{name:40s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:], 0, 0.2, 25, sys.argv[1:]))
