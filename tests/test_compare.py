"""``python -m training compare``: per-source AUC differences with a paired group bootstrap."""

import csv

import numpy as np
import pytest

from training.cli import main
from training.compare import compare, paired_auc_difference, read_scores, write_scores


def _scores(path, p, y, sources, groups):
    files = [f"/data/{s}/{i}.png" for i, s in enumerate(sources)]
    write_scores(path, files, sources, groups, y, p, p)
    return path


@pytest.fixture
def two_sources():
    rng = np.random.default_rng(0)
    n = 400
    sources = np.array(["a"] * 200 + ["b"] * 200)
    groups = np.array([f"{s}/{i // 10}" for i, s in enumerate(sources)])
    y = np.tile(np.repeat([0, 1], 10), 20)  # each group one class, as patients are
    signal = y + rng.normal(0, 1, n)
    return sources, groups, y, signal, rng


def test_better_model_is_found_better_on_every_source(two_sources, tmp_path, capsys):
    sources, groups, y, signal, rng = two_sources
    old = _scores(tmp_path / "old.csv", 1 / (1 + np.exp(-(signal + rng.normal(0, 2, len(y))))), y, sources, groups)
    new = _scores(tmp_path / "new.csv", 1 / (1 + np.exp(-signal)), y, sources, groups)
    r = compare(old, new)
    for m in r["per_source"].values():
        assert m["auc_new"] > m["auc_old"] and m["delta_ci95"][0] > 0 and m["p_new_ahead"] > 0.95
        assert m["n_groups"] == 20 and m["n_slices"] == 200
    assert r["better_on_every_source"] and r["surely_better_on_every_source"]
    assert main(["compare", str(old), str(new)]) == 0
    assert "each beyond the 95% interval" in capsys.readouterr().out
    # the other way round: worse everywhere, exit status 1
    assert main(["compare", str(new), str(old)]) == 1
    assert "not better on every source: no better on a, b" in capsys.readouterr().out


def test_a_gain_on_one_source_and_a_loss_on_another_is_not_better(two_sources, tmp_path):
    sources, groups, y, signal, rng = two_sources
    noisy = signal + rng.normal(0, 2, len(y))
    p_new = np.where(sources == "a", signal, noisy)
    p_old = np.where(sources == "a", noisy, signal)
    r = compare(_scores(tmp_path / "o.csv", p_old, y, sources, groups), _scores(tmp_path / "n.csv", p_new, y, sources, groups))
    assert r["per_source"]["a"]["delta"] > 0 > r["per_source"]["b"]["delta"]
    assert not r["better_on_every_source"] and not r["surely_better_on_every_source"]


def test_a_small_gain_is_better_but_not_beyond_the_noise(two_sources, tmp_path):
    sources, groups, y, signal, rng = two_sources
    p_old = signal.copy()
    p_new = signal.copy()
    # swap one discordant pair per source in the new model's favour: a tiny, real gain
    for s in ("a", "b"):
        m = np.flatnonzero(sources == s)
        pos, neg = m[y[m] == 1], m[y[m] == 0]
        i, j = pos[np.argmin(signal[pos])], neg[np.argmax(signal[neg])]
        p_new[i], p_new[j] = signal[j] + 1e-3, signal[i] - 1e-3
    r = compare(_scores(tmp_path / "o.csv", p_old, y, sources, groups), _scores(tmp_path / "n.csv", p_new, y, sources, groups))
    assert r["better_on_every_source"] and not r["surely_better_on_every_source"]


def test_auc_is_sklearns():
    from sklearn.metrics import roc_auc_score

    from training.compare import auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_paired_bootstrap_resamples_whole_groups():
    y = np.array([0, 0, 1, 1] * 5)
    groups = np.repeat(np.arange(5), 4)
    p = np.linspace(0, 1, 20)
    r = paired_auc_difference(y, p, p, groups, n=200)
    assert r["delta"] == 0 and r["n_groups"] == 5 and r["bootstraps"] == 200


def test_score_files_must_match(tmp_path):
    a = _scores(tmp_path / "a.csv", np.array([0.1, 0.9]), np.array([0, 1]), np.array(["s", "s"]), np.array(["g0", "g1"]))
    b = tmp_path / "b.csv"
    write_scores(b, ["/elsewhere/0.png"], ["s"], ["g0"], [0], [0.2], [0.2])
    with pytest.raises(SystemExit, match="share no slice"):
        compare(a, b)
    c = tmp_path / "c.csv"
    write_scores(c, ["/data/s/0.png", "/data/s/1.png"], ["s", "s"], ["g0", "g1"], [1, 1], [0.1, 0.9], [0.1, 0.9])
    with pytest.raises(SystemExit, match="has label"):
        compare(a, c)
    with pytest.raises(SystemExit, match="no such scores file"):
        read_scores(tmp_path / "nothing")
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows([["file", "p"], ["x", "0.5"]])
    with pytest.raises(SystemExit, match="not a scores file"):
        read_scores(bad)


def _noisy(signal, rng, noise):
    return 1 / (1 + np.exp(-(signal + rng.normal(0, noise, len(signal)))))


def test_replace_rule_decides_from_left_out_folds_and_in_source_validation(two_sources, tmp_path, capsys):
    """The replace rule of docs/design.md: mean left-out AUC higher, no left-out source worse, one
    beyond the noise, in-source >= 0.85 everywhere; a source the bundled model trained on is
    compared with a fixed figure."""
    sources, groups, y, signal, rng = two_sources
    bundled = _scores(tmp_path / "bundled.csv", _noisy(signal, rng, 2.5), y, sources, groups)
    fold_a = _scores(tmp_path / "fold_a.csv", _noisy(signal, rng, 0.3), y, sources, groups)  # trained without a
    fold_b = _scores(tmp_path / "fold_b.csv", _noisy(signal, rng, 0.8), y, sources, groups)  # trained without b
    val = _scores(tmp_path / "val.csv", _noisy(4.0 * y - 2, rng, 1.0), y, sources, groups)
    args = ["compare", "--left-out", "a", str(bundled), str(fold_a), "--left-out", "b", "0.55", str(fold_b),
            "--in-source", str(val), "--out", str(tmp_path / "rule.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "decision: REPLACE" in out and "(fixed figure)" in out
    import json

    r = json.loads((tmp_path / "rule.json").read_text())
    assert r["replace"] and r["left_out"]["b"]["auc_old"] == 0.55 and r["left_out"]["a"]["delta_ci95"][0] > 0

    # a candidate worse on one left-out source is kept out, however good elsewhere
    worse_b = _scores(tmp_path / "worse_b.csv", _noisy(signal, rng, 8.0), y, sources, groups)
    args[7] = "0.7"
    args[8] = str(worse_b)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "decision: KEEP" in out and "- [ ] no left-out source worse" in out

    # in-source below 0.85 on a source: kept out; k-fold files are averaged
    weak = _scores(tmp_path / "weak.csv", _noisy(signal, rng, 3.0), y, sources, groups)
    assert main(["compare", "--left-out", "a", str(bundled), str(fold_a), "--left-out", "b", "0.55", str(fold_b),
                 "--in-source", str(val), str(weak)]) == 1
    out = capsys.readouterr().out
    assert "mean of 2 folds" in out and "- [ ] in-source AUC >= 0.85 on every source" in out

    # every source of the in-source validation must have been left out once
    assert main(["compare", "--left-out", "a", str(bundled), str(fold_a), "--in-source", str(val)]) == 1
    assert "missing b" in capsys.readouterr().out
