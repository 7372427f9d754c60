"""``ctviewer --self-test``: is this installation sound?

What a user or an IT department runs after installing (from source or the
bundle).  It verifies the bundled model's SHA-256 against its card, classifies
the bundled sample slices through the same engine as ``ctviewer classify``,
and compares each result with ``resources/samples/expected.json``: the label
and p(COVID) this exact model (same SHA-256) gave when it was shipped.
p(COVID) may differ by ``TOLERANCE`` (CPU instruction sets and thread counts
change float rounding); the label must match unless the shipped p(COVID) lies
within ``TOLERANCE`` of the threshold.

``expected.json`` also records each sample's true label, so the summary says
honestly where the model is known to be wrong.  After replacing the model,
regenerate it: ``python -m ctviewer.selftest --write-expected``.

Exit status 0 when everything checks out, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ctviewer.paths import samples_dir

EXPECTED = "expected.json"
TOLERANCE = 0.02
TRUTH = {"covid": "COVID", "non-covid": "non-COVID", "lung-pet-ct-dx": "non-COVID"}  # by file-name prefix


def truth_for(name: str) -> str:
    for prefix in sorted(TRUTH, key=len, reverse=True):
        if name.startswith(prefix + "-"):
            return TRUTH[prefix]
    raise ValueError(f"no known true label for sample {name}")


def _classify(clf, folder: Path) -> dict[str, tuple[str, float, str]]:
    from ctviewer.studies import classify_files
    from ctviewer.imaging import iter_files

    out = {}
    for rec in classify_files(iter_files([folder]), clf):
        out[os.path.basename(rec.path)] = (rec.label, rec.p_covid if rec.p_covid is not None else float("nan"), rec.error)
    return out


def write_expected(folder: Path | None = None) -> Path:
    """Record what the bundled model answers on the samples (run after replacing the model)."""
    from ctviewer.inference import load_classifier
    from ctviewer.inference.runtime import quiet_libraries

    quiet_libraries()

    folder = folder or samples_dir()
    clf = load_classifier()
    results = _classify(clf, folder)
    bad = {k: v[2] for k, v in results.items() if v[2]}
    if bad:
        raise SystemExit(f"samples that cannot be classified: {bad}")
    doc = {
        "model": clf.card.title,
        "model_sha256": clf.card.sha256,
        "threshold": clf.card.threshold,
        "samples": {k: {"label": v[0], "p_covid": round(v[1], 4), "truth": truth_for(k)} for k, v in sorted(results.items())},
    }
    path = folder / EXPECTED
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def run(out=None) -> int:
    """The self-test; prints a short report (to ``out``, default stdout) and returns the exit status."""
    t0 = time.perf_counter()
    out = out if out is not None else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    from ctviewer import __version__
    from ctviewer.inference.runtime import quiet_libraries

    say(f"CT Viewer {__version__} self-test ({'bundle' if getattr(sys, 'frozen', False) else 'source'})")
    quiet_libraries()
    from ctviewer.inference import ModelCard, ModelError, load_classifier
    from ctviewer.inference.model import default_model_dir

    folder = default_model_dir()
    try:
        card = ModelCard.load(folder)
        card.verify(folder)
        say(f"  model {card.title}: SHA-256 matches its card ({card.sha256[:12]}…)")
        clf = load_classifier(folder)
        from ctviewer.inference.runtime import describe

        say(f"  runtime: {describe(card)}")
    except ModelError as exc:
        say(f"  FAIL model: {exc}")
        return 1
    try:
        expected = json.loads((samples_dir() / EXPECTED).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        say(f"  FAIL cannot read {EXPECTED} in {samples_dir()}: {exc}")
        return 1
    if expected.get("model_sha256") != card.sha256:
        say(f"  FAIL {EXPECTED} was written for another model ({expected.get('model')}); "
            "run python -m ctviewer.selftest --write-expected")
        return 1
    results = _classify(clf, samples_dir())
    failures, known_errors = [], []
    for name, exp in expected["samples"].items():
        label, p, error = results.get(name, ("", float("nan"), "missing from the installation"))
        near_threshold = abs(exp["p_covid"] - expected["threshold"]) <= TOLERANCE
        ok = not error and abs(p - exp["p_covid"]) <= TOLERANCE and (label == exp["label"] or near_threshold)
        status = "ok  " if ok else "FAIL"
        detail = error or f"{label:<9} p(COVID) {p:.3f} (shipped {exp['p_covid']:.3f})"
        if ok and label != exp["truth"]:
            detail += f"  [known model error: truly {exp['truth']}]"
            known_errors.append(name)
        say(f"  {status} {name:<44} {detail}")
        if not ok:
            failures.append(name)
    seconds = time.perf_counter() - t0
    n = len(expected["samples"])
    if failures:
        say(f"self-test FAILED: {len(failures)} of {n} samples differ from the shipped results ({seconds:.1f} s)")
        return 1
    say(f"self-test passed: model verified, {n} of {n} samples as shipped"
        f"{f' ({len(known_errors)} known model error)' if known_errors else ''} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-expected"]:
        print(write_expected())
        sys.exit(0)
    sys.exit(run())
