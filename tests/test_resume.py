"""Training runs that must survive the end of a session: ``--stop-after``, ``--resume``, and the
left-out fold's scores for the replace rule.

These train in child processes (TensorFlow keeps the memory of every model a process built), and
the file sorts before ``test_training.py`` so that they run while the suite's own process is still
small: the whole suite must stay within the machine's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctviewer.inference.card import ModelCard

from .test_training import tiny_data  # noqa: F401 - the module-scoped fixture


def _train_in_child(*args: str) -> subprocess.CompletedProcess:
    """``python -m training train ...`` in a child process: TensorFlow keeps the memory of every
    model a process built, and the suite must stay within its memory budget."""
    return subprocess.run([sys.executable, "-m", "training", "train", *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_a_stopped_run_resumes_to_the_same_result_as_an_uninterrupted_one(tiny_data, tmp_path):
    """``train --resume RUN_DIR`` continues from the last finished epoch with the optimizer's
    state, the schedule's position, the data order and the dropout state of that epoch: the
    result equals a run that was never stopped (``--stop-after`` stops one after epoch 1).

    It is also the determinism check (it replaced ``test_training_is_deterministic_with_a_seed``,
    issue 23): the whole run and the stopped one are two processes with the same seed, and their
    first epochs (history), like the resumed run's metrics and every stored weight, must be equal."""
    import h5py

    args = ["--data", str(tiny_data), "--epochs", "2", "--size", "32", "--block", "6", "--seed", "3",
            "--precise-bn", "off", "--trunk", "tiny"]
    whole = _train_in_child(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    stopped = _train_in_child(*args, "--out", str(tmp_path / "stopped"), "--stop-after", "1")
    assert stopped.returncode == 0 and "stopped after epoch 1/2" in stopped.stderr, stopped.stderr[-2000:]
    assert json.loads((tmp_path / "stopped" / "last-epoch.json").read_text())["epoch"] == 1
    assert not (tmp_path / "stopped" / "model.onnx").exists()
    resumed = _train_in_child("--resume", str(tmp_path / "stopped"))
    assert resumed.returncode == 0 and "resumed" in resumed.stderr, resumed.stderr[-2000:]
    assert not (tmp_path / "stopped" / "last-epoch.json").exists()

    whole, resumed = ModelCard.load(tmp_path / "whole"), ModelCard.load(tmp_path / "stopped")
    assert resumed.training["epochs_run"] == 2
    assert resumed.training["history"] == whole.training["history"]
    assert resumed.metrics == whole.metrics
    with h5py.File(tmp_path / "whole" / "model.weights.h5") as a, h5py.File(tmp_path / "stopped" / "model.weights.h5") as b:
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names and all(np.array_equal(a[n][()], b[n][()]) for n in names)


def test_resume_refuses_a_folder_that_is_not_a_stopped_run(tmp_path, capsys):
    from training.cli import main

    with pytest.raises(SystemExit, match="not a training run"):
        main(["train", "--resume", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(tmp_path), "--epochs", "3"])  # its own arguments only
    assert "takes no other arguments" in capsys.readouterr().err


def test_a_left_out_fold_scores_all_of_its_source_for_the_replace_rule(tiny_data, tmp_path, capsys):
    """``train --leave-out`` writes its scores on every slice of the left-out source
    (``scores-left-out.csv``), which ``compare --left-out SOURCE BUNDLED RUN`` reads."""
    import csv
    import shutil

    from training.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_data, a)
    shutil.copytree(tiny_data, b)
    run = tmp_path / "fold"
    done = _train_in_child("--data", str(a), str(b), "--leave-out", "b", "--out", str(run), "--epochs", "1",
                           "--size", "32", "--block", "6", "--precise-bn", "off", "--trunk", "tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(run / "scores-left-out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 and {r["source"] for r in rows} == {"b"}
    capsys.readouterr()
    main(["compare", "--left-out", "b", "0.5", str(run), "--in-source", str(run / "scores.csv")])
    out = capsys.readouterr().out
    assert "| b | 48 (" in out and "decision:" in out and "missing a" in out
