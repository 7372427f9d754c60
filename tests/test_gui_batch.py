"""Batch study review in the desktop application (pytest-qt, offscreen).

The batch window is opened from a real main window so that it shares the main
window's model (the tiny 32 px test package) and history (in the test's folder).
Two synthetic patients: A with one 40-slice CT series (two batches of 32 and 8,
so pause and cancel can land between batches), B with one 12-slice series.
Pause and cancel are made deterministic by acting from the first per-slice
signal on the worker thread (a direct connection): ``study_batch`` honours them
after the batch that slice belongs to.  No sleeps: every wait is on a signal.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")
pytest.importorskip("matplotlib")

from PySide6.QtCore import Qt, QThreadPool  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ctviewer.gui.batch_view import BatchWindow  # noqa: E402
from ctviewer.gui.main_window import MainWindow  # noqa: E402
from ctviewer.gui.study_browser import NODE_ROLE, VERDICT_COLUMN  # noqa: E402
from ctviewer.history import History  # noqa: E402
from tests.gui_helpers import isolate_settings, write_ct_series  # noqa: E402
from tests.model_fixtures import make_model_package  # noqa: E402

WAIT_MS = 120_000
N_A, N_B = 40, 12


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_model_package(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def studies(tmp_path_factory) -> Path:
    """Two patients, one study and one series each."""
    import pydicom

    root = tmp_path_factory.mktemp("studies")
    write_ct_series(root / "A" / "series", n=N_A, size=48, seed=3, patient="Alpha^Ann")
    write_ct_series(root / "B" / "series", n=N_B, size=48, seed=5, patient="Beta^Bob")
    for f in (root / "B" / "series").iterdir():  # write_ct_series always writes SYN-001
        ds = pydicom.dcmread(f)
        ds.PatientID = "SYN-002"
        ds.save_as(f)
    return root


@pytest.fixture(autouse=True)
def config_dir(qapp, tmp_path, monkeypatch) -> Path:
    """QSettings and the history in this test's own folders."""
    return isolate_settings(tmp_path, monkeypatch)


@pytest.fixture
def main(qtbot, tmp_path, tiny_model):
    hist = History(tmp_path / "data" / "history.sqlite3")
    w = MainWindow(history=hist, model_dir=str(tiny_model))
    qtbot.addWidget(w)
    w.show()
    if w.classifier is None:
        qtbot.waitSignal(w.modelReady, timeout=WAIT_MS).wait()
    yield w
    QThreadPool.globalInstance().waitForDone(WAIT_MS)
    QApplication.processEvents()
    w.close()  # closes (and stops) the batch window too
    hist.close()
    QApplication.processEvents()


def open_scanned(qtbot, w: MainWindow, paths) -> BatchWindow:
    bw = w.open_batch_review()
    with qtbot.waitSignal(bw.browser.scanned, timeout=WAIT_MS):
        bw.scan([str(p) for p in paths])
    return bw


@pytest.fixture
def batch(qtbot, main, studies) -> BatchWindow:
    return open_scanned(qtbot, main, [studies])


def select_patient_series(bw: BatchWindow, patient_key: str) -> None:
    p = next(p for p in bw.browser.patients if p.key == patient_key)
    assert bw.browser.select_series(p.studies[0].series[0].uid)


def run_to_end(qtbot, bw: BatchWindow, scope: str, hook=None) -> None:
    """Classify ``scope`` and wait for the worker; ``hook(worker)`` runs before it starts."""
    if hook is not None:
        bw.stateChanged.connect(lambda s: s == "running" and hook(bw.worker))
    with _finished(qtbot, bw):
        assert bw.classify(scope)


class _finished:
    """Waits until the batch window's worker is gone (state done or cancelled)."""

    def __init__(self, qtbot, bw):
        self.qtbot, self.bw = qtbot, bw

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.qtbot.waitUntil(lambda: self.bw.worker is None and self.bw.state in ("done", "cancelled"),
                                 timeout=WAIT_MS)


def source_rows(bw: BatchWindow) -> int:
    return bw.model.rowCount()


# --- the browser -------------------------------------------------------------------------------------


def test_menu_action_opens_the_batch_window(qtbot, main):
    action = next(a for a in main.actions() if a.text() == "&Batch review…")
    assert action.shortcut().toString() == "Ctrl+B"
    action.trigger()
    assert main.batch_window.isVisible()
    assert main.batch_window.classifier is main.classifier
    assert main.batch_window.history is main.history


def test_scan_fills_the_tree_without_blocking(qtbot, main, studies):
    bw = main.open_batch_review()
    progress = []
    with qtbot.waitSignal(bw.browser.scanned, timeout=WAIT_MS) as blocker:
        task = bw.browser.scan([str(studies)])
        task.signals.progress.connect(lambda d, t: progress.append((d, t)))
        assert bw.browser.scanning()  # the call returned before the scan finished: the window stays live
    scanned = blocker.args[0]
    assert not scanned.cancelled and not scanned.errors
    assert progress and progress[-1] == (N_A + N_B, N_A + N_B)
    m = bw.browser.model
    assert m.rowCount() == 2
    rows = {}
    for r in range(2):
        patient = m.item(r, 0)
        kind, node = patient.data(NODE_ROLE)
        assert kind == "patient" and patient.rowCount() == 1
        study = patient.child(0, 0)
        assert study.data(NODE_ROLE)[0] == "study" and study.rowCount() == 1
        series = study.child(0, 0)
        assert series.data(NODE_ROLE)[0] == "series"
        rows[node.key] = [study.child(0, c).text() for c in range(6)]
        assert patient.child(0, 5).text() == "2024-01-02"  # study date
    assert rows["SYN-001"][1:] == [str(N_A), "", "CT", "Synthetic chest", "2024-01-02"]
    assert rows["SYN-002"][1:] == [str(N_B), "", "CT", "Synthetic chest", "2024-01-02"]
    assert all(b.isEnabled() for b in bw.buttons.values())


# --- classifying -----------------------------------------------------------------------------------


def test_classify_series_streams_results_verdict_and_plot(qtbot, batch):
    select_patient_series(batch, "SYN-002")
    seen = []
    batch.model.rowsInserted.connect(lambda *_: seen.append(batch.model.rowCount()))
    with qtbot.waitSignal(batch.studyFinished, timeout=WAIT_MS) as blocker:
        with _finished(qtbot, batch):
            assert batch.classify("series")
            assert batch.state == "running" and not batch.buttons["all"].isEnabled()
    result = blocker.args[0]
    assert batch.state == "done" and batch.state_label.text() == "Done"
    assert source_rows(batch) == N_B == len(result.slices)
    assert seen[-1] == N_B  # rows were added one by one as results came in
    assert batch.progress.value() == batch.progress.maximum() == N_B
    assert "slices/s" in batch.rate_label.text()
    v = result.verdict
    assert v is not None and v.label in batch.verdict_label.text()
    assert f"{v.confidence:.0%}" in batch.verdict_label.text()
    assert batch.plot.points == sum(r.ok for r in result.slices) > 0
    series_item = batch.browser.model.findItems("Series 3", Qt.MatchFlag.MatchRecursive)
    verdicts = [it.parent().child(it.row(), VERDICT_COLUMN).text() for it in series_item]
    assert any(t.startswith(v.label) for t in verdicts)
    # sorted by position, numbered 1..n in anatomical order
    positions = [r.position for r in result.slices]
    assert positions == sorted(positions, reverse=True)  # head first
    assert len(batch.history.batches()) == 1  # the batch is recorded in the history


def test_cancel_midway_keeps_what_was_classified(qtbot, batch):
    select_patient_series(batch, "SYN-001")
    run_to_end(qtbot, batch, "series",
               hook=lambda worker: worker.sliceDone.connect(lambda *_: worker.control.cancel(),
                                                            Qt.ConnectionType.DirectConnection))
    assert batch.state == "cancelled" and batch.state_label.text() == "Cancelled"
    assert 0 < source_rows(batch) < N_A
    assert batch.progress.value() < batch.progress.maximum()
    result = batch.shown_result()
    assert result is not None and result.cancelled
    assert "partial" in batch.verdict_label.text() or "not finished" in batch.verdict_label.text()
    assert all(b.isEnabled() for b in batch.buttons.values())  # ready for another run


def test_pause_then_resume_completes(qtbot, batch):
    select_patient_series(batch, "SYN-001")
    paused = []

    def hook(worker):
        def first(*_):
            if not paused:
                paused.append(True)
                worker.control.pause()  # from the worker thread: takes effect after this batch

        worker.sliceDone.connect(first, Qt.ConnectionType.DirectConnection)

    batch.stateChanged.connect(lambda s: s == "running" and batch.worker and hook(batch.worker))
    assert batch.classify("series")
    batch.pause()  # the button's path; idempotent with the hook's pause
    assert batch.state == "paused" and batch.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: source_rows(batch) >= 32, timeout=WAIT_MS)
    assert batch.worker is not None and batch.worker.isRunning() and source_rows(batch) < N_A
    with _finished(qtbot, batch):
        qtbot.mouseClick(batch.pause_button, Qt.MouseButton.LeftButton)
        assert batch.state == "running"
    assert batch.state == "done"
    assert source_rows(batch) == N_A
    assert batch.progress.value() == N_A


def test_classify_everything_gives_each_study_a_verdict(qtbot, batch):
    finished = []
    batch.studyFinished.connect(finished.append)
    run_to_end(qtbot, batch, "all")
    assert len(finished) == 2 and source_rows(batch) == N_A + N_B
    for r in range(2):
        study = batch.browser.model.item(r, 0).child(0, 0)
        verdict = batch.browser.model.item(r, 0).child(0, VERDICT_COLUMN).text()
        assert verdict.split(" (")[0] in ("COVID", "non-COVID", "indeterminate"), (study.text(), verdict)
    assert len(batch.history.batches()) == 2


def test_selecting_a_row_shows_that_slice(qtbot, batch):
    select_patient_series(batch, "SYN-002")
    run_to_end(qtbot, batch, "series")
    batch.table.sortByColumn(3, Qt.SortOrder.DescendingOrder)  # by p(COVID)
    with qtbot.waitSignal(batch.sliceShown, timeout=WAIT_MS) as blocker:
        batch.table.selectRow(2)
    job, number, r = batch.model.rows[batch.proxy.mapToSource(batch.proxy.index(2, 0)).row()]
    assert blocker.args[0] == r.path
    shown = batch.viewer.slice()
    assert shown is not None and shown.path == r.path and shown.sop_instance_uid == r.sop_instance_uid
    assert batch.plot.ax.lines and batch.marker == r.position  # the plot marks where the slice is
    ps = [batch.proxy.index(k, 3).data() for k in range(batch.proxy.rowCount())]
    assert ps == sorted(ps, reverse=True)


def test_export_pdf_sr_csv(qtbot, batch, tmp_path):
    import pydicom

    select_patient_series(batch, "SYN-002")
    run_to_end(qtbot, batch, "series")
    result = batch.shown_result()
    assert all(b.isEnabled() for b in batch.export_buttons.values())
    out = {}
    for kind, name in (("pdf", "report.pdf"), ("sr", "report.dcm"), ("csv", "slices.csv")):
        with qtbot.waitSignal(batch.exported, timeout=WAIT_MS) as blocker:
            assert batch.export(kind, str(tmp_path / name))
        assert blocker.args == [kind, str(tmp_path / name), ""]
        out[kind] = tmp_path / name
    assert out["pdf"].read_bytes()[:4] == b"%PDF"
    sr = pydicom.dcmread(out["sr"])
    assert sr.Modality == "SR" and sr.StudyInstanceUID == result.study.uid
    assert str(sr.PatientName) == "Beta^Bob"
    with open(out["csv"], newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == N_B

    batch.anonymize.setChecked(True)
    with qtbot.waitSignal(batch.exported, timeout=WAIT_MS) as blocker:
        batch.export("sr", str(tmp_path / "anon.dcm"))
    assert blocker.args[2] == ""
    anon = pydicom.dcmread(tmp_path / "anon.dcm")
    assert "Beta" not in str(anon.get("PatientName", "")) and str(anon.PatientID).startswith("ANON-")
    assert anon.PatientIdentityRemoved == "YES" and anon.StudyInstanceUID != result.study.uid
    with qtbot.waitSignal(batch.exported, timeout=WAIT_MS):
        batch.export("csv", str(tmp_path / "anon.csv"))
    text = (tmp_path / "anon.csv").read_text(encoding="utf-8")
    assert "Beta" not in text and "SYN-002" not in text

    # the anonymised study: images and the AI result (SR) in one new study, nothing identifying
    from ctviewer.privacy import find, identifying_values

    with qtbot.waitSignal(batch.exported, timeout=WAIT_MS) as blocker:
        assert batch.export("study", str(tmp_path / "shared"))
    assert blocker.args[2] == ""
    copies = sorted((tmp_path / "shared").rglob("*.dcm"))
    srs = [pydicom.dcmread(p) for p in copies if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"]
    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in copies if p.name != "ctviewer-ai-result-sr.dcm"]
    assert len(srs) == 1 and len(images) == N_B
    refs = {str(e.value) for e in srs[0].iterall() if e.keyword == "ReferencedSOPInstanceUID"}
    assert refs == {str(d.SOPInstanceUID) for d in images}
    sources = sorted({f for s in result.study.series for f in s.files})
    assert find(identifying_values(sources), copies) == []


def test_export_error_is_reported_not_raised(qtbot, batch, tmp_path):
    select_patient_series(batch, "SYN-002")
    run_to_end(qtbot, batch, "series")
    with qtbot.waitSignal(batch.exported, timeout=WAIT_MS) as blocker:
        (tmp_path / "a-file").write_text("not a folder")
        batch.export("csv", str(tmp_path / "a-file" / "x.csv"))
    assert blocker.args[2]
    assert batch.state_label.text() == "CSV not written"


# --- a whole archive (issue 25) ----------------------------------------------------------------------


def test_the_batch_window_starts_and_watches_an_archive_run(qtbot, main, studies, tmp_path):
    """"Review archive…": the same run as ``report --out``; the dialog shows the whole run's
    progress and each study's line, the output folder holds the manifest and results; started
    again on the same folder it resumes (both studies skipped); Cancel before the first study
    records nothing and says so."""
    from ctviewer.archive import Manifest

    bw = main.open_batch_review()
    dlg = bw.open_archive_dialog()
    assert dlg.isVisible() and dlg.model == str(main.classifier.folder)
    dlg.root.setText(str(studies))
    dlg.out.setText(str(tmp_path / "archive-out"))
    with qtbot.waitSignal(dlg.finished_run, timeout=WAIT_MS) as done:
        assert dlg.start() is not None
    s = done.args[0]
    assert (s.done, s.failed, s.skipped) == (2, 0, 0)
    assert "2 of 2 studies (2 done, 0 failed" in dlg.status.text() and dlg.progress.value() == 2
    assert len(dlg.log.toPlainText().splitlines()) == 2
    assert len(Manifest(tmp_path / "archive-out").records()) == 2
    with qtbot.waitSignal(dlg.finished_run, timeout=WAIT_MS) as again:
        dlg.start()
    assert again.args[0].skipped == 2 and again.args[0].done == 0
    dlg.out.setText(str(tmp_path / "cancelled-out"))
    task = dlg.start()
    task.cancel.set()  # before the scan ends: no study starts
    with qtbot.waitSignal(dlg.finished_run, timeout=WAIT_MS) as cancelled:
        pass
    assert cancelled.args[0].cancelled and cancelled.args[0].done == 0
    assert dlg.status.text().startswith("Cancelled")
    dlg.where.setCurrentIndex(2)
    dlg.scheduler.setText("not-an-address")
    assert dlg.start() is None and "tcp://" in dlg.status.text()
