"""The study batch engine (ctviewer.studies.study_batch): sorted slice results, lung detection,
refused files, the verdict, pause/resume/cancel, bounded memory, suspicious thumbnails."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctviewer.studies import study_batch
from ctviewer.studies import classify_files, scan
from ctviewer.studies.study_batch import BatchControl, classify_files_to_results, classify_study, suspicious_thumbnails

from .gui_helpers import write_ct_series
from .model_fixtures import make_model_package

N_LUNG = 8
SPACING = 2.5


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from ctviewer.inference import load_classifier

    return load_classifier(make_model_package(tmp_path_factory.mktemp("model")))


def soft_tissue_only(size: int) -> np.ndarray:
    """An abdomen-like section: a soft-tissue body on air, no lung."""
    import cv2

    img = np.full((size, size), -1000.0, np.float32)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * 0.42), int(size * 0.30)), 0, 0, 360, 40.0, -1)
    cv2.circle(img, (c, c), int(size * 0.06), 300.0, -1)  # a vertebra
    return img + np.random.default_rng(3).normal(0, 15, img.shape).astype(np.float32)


def write_study(folder: Path, size: int = 96) -> dict:
    """``N_LUNG`` chest slices (shuffled names and numbers), one abdomen slice below them and one
    file of the series whose pixel data is cut short (passes the header scan, refused on decoding)."""
    zs = write_ct_series(folder, n=N_LUNG, size=size, spacing=SPACING)
    template = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    extra = {}
    for name, z, pixels in (("abdomen.dcm", min(zs) - SPACING, soft_tissue_only(size)),
                            ("broken.dcm", max(zs) + SPACING, soft_tissue_only(size))):
        ds = template.copy()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-22.4, -22.4, z]
        ds.InstanceNumber = 100 + len(extra)
        raw = np.clip(np.rint(pixels), -1024, 3000).astype("<i2").tobytes()
        ds.PixelData = raw if name != "broken.dcm" else raw[: len(raw) // 3]
        ds.save_as(folder / name, enforce_file_format=True)
        extra[name] = z
    return {"zs": zs, "abdomen_z": extra["abdomen.dcm"], "study_uid": str(template.StudyInstanceUID),
            "series_uid": str(template.SeriesInstanceUID)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    info = write_study(folder)
    patients, errors = scan([folder])
    assert errors == [] and len(patients) == 1 and len(patients[0].studies) == 1
    return folder, patients[0], patients[0].studies[0], info


@pytest.fixture(scope="module")
def result(study, classifier):
    _, patient, node, _ = study
    return classify_study(node, patient, classifier)


def test_slices_sorted_by_position_with_lung_and_errors(result, study):
    folder, _, _, info = study
    ok = [s for s in result.slices if not s.error]
    assert [s.position for s in ok] == sorted([info["abdomen_z"], *info["zs"]], reverse=True)  # head first
    assert all(s.series_uid == info["series_uid"] for s in result.slices)
    by_name = {Path(s.path).name: s for s in result.slices}
    abdomen = by_name["abdomen.dcm"]
    assert abdomen.ok and abdomen.has_lung is False and abdomen.lung_fraction < 0.1
    assert abdomen.reason == "no lung in this slice" and abdomen.p_covid is None and abdomen.label == ""
    assert all(s.has_lung and s.lung_fraction > 0.1 for s in ok if s is not abdomen)
    broken = by_name["broken.dcm"]
    assert broken.error and broken.p_covid is None and not broken.ok
    assert result.slices[-1] is broken  # refused files after the classified slices of their series
    assert all(s.sop_instance_uid and s.label in ("COVID", "non-COVID") for s in ok if s is not abdomen)


def test_verdict_counts_and_metadata(result, study, classifier):
    _, patient, node, _ = study
    v = result.verdict
    assert (v.n_lung, v.n_excluded, v.n_refused) == (N_LUNG, 1, 1)
    lung = [s for s in result.slices if s.judged]
    assert v.n_positive == sum(s.p_covid >= classifier.card.threshold for s in lung)
    assert v.label in ("COVID", "non-COVID", "uncertain") and 0.5 <= v.confidence <= 1
    assert result.study is node and result.patient is patient and not result.cancelled
    assert result.model == "tiny-test-model 0.0.1" and result.model_sha256 == classifier.card.sha256
    assert result.threshold == classifier.card.threshold
    assert result.started.endswith("Z") and result.finished >= result.started


def test_same_engine_as_ctviewer_classify(result, classifier):
    ok = [s for s in result.slices if s.ok]
    records = {r.path: r for r in classify_files([s.path for s in ok], classifier)}
    for s in ok:
        r = records[s.path]
        assert r.sop_instance_uid == s.sop_instance_uid and r.label == s.label and r.reason == s.reason
        assert (r.p_covid is None and s.p_covid is None) or r.p_covid == pytest.approx(s.p_covid, abs=1e-4)


def test_results_hold_no_pixels(result):
    for s in result.slices:
        for f in dataclasses.fields(s):
            assert not isinstance(getattr(s, f.name), np.ndarray)


def test_files_to_results_and_progress(study, classifier):
    folder, patient, node, info = study
    files = list(node.series[0].files)
    streamed = []
    results = classify_files_to_results(files, classifier, series_uid="S", on_slice=streamed.append, batch_size=3)
    assert len(results) == len(streamed) == N_LUNG + 2
    key = lambda r: (r.path, r.frame)  # noqa: E731
    assert sorted(map(key, results)) == sorted(map(key, streamed))  # the same slices, sorted at the end
    assert all(r.p_covid is None for r in streamed if r.reason)  # nothing withheld is ever streamed
    assert {s.series_uid for s in results} == {"S"}
    progress = []
    classify_study(node, patient, classifier, on_progress=lambda *a: progress.append(a), batch_size=4)
    done = [p[0] for p in progress]
    assert done == sorted(done) and done[-1] == N_LUNG + 2
    assert all(total == N_LUNG + 2 and rate > 0 for _, total, rate in progress)


def test_series_filter_and_order_without_positions(tmp_path, classifier):
    """Without positions the instance number orders the slices; unknown series uids give nothing."""
    write_ct_series(tmp_path, n=5, size=64)
    for f in tmp_path.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    (patient,), _ = scan([tmp_path])
    node = patient.studies[0]
    r = classify_study(node, patient, classifier)
    assert [s.position for s in r.slices] == [None] * 5
    assert [s.instance_number for s in r.slices] == [1, 2, 3, 4, 5]
    empty = classify_study(node, patient, classifier, series_uids=["no-such-series"])
    assert empty.slices == [] and empty.verdict.label == "indeterminate"


def test_cancel_in_on_slice_stops_after_the_current_batch(study, classifier):
    _, patient, node, _ = study
    control = BatchControl()
    seen = []

    def on_slice(s):
        seen.append(s)
        if len(seen) == 3:
            control.cancel()

    r = classify_study(node, patient, classifier, on_slice=on_slice, control=control, batch_size=2)
    assert r.cancelled and control.cancelled
    assert 3 <= len(r.slices) <= 4 < N_LUNG + 2  # the batch of the third slice is finished, then it stops
    assert r.verdict is not None and r.verdict.n_lung + r.verdict.n_excluded + r.verdict.n_refused == len(r.slices)


def test_pause_resume_and_cancel_from_another_thread(study, classifier):
    _, patient, node, _ = study
    control = BatchControl()
    seen: list = []
    out: dict = {}

    def on_slice(s):
        seen.append(s)
        if len(seen) == 1:
            control.pause()

    worker = threading.Thread(target=lambda: out.setdefault("r", classify_study(
        node, patient, classifier, on_slice=on_slice, control=control, batch_size=2)))
    worker.start()
    deadline = time.monotonic() + 60
    while not (control.paused and len(seen) >= 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert control.paused
    time.sleep(0.3)
    n_paused = len(seen)
    time.sleep(0.3)
    assert len(seen) == n_paused == 2 and worker.is_alive()  # nothing runs while paused
    control.resume()
    worker.join(60)
    assert not worker.is_alive()
    assert not out["r"].cancelled and len(out["r"].slices) == N_LUNG + 2

    # paused, then cancelled from another thread: the run ends without finishing
    control, seen[:] = BatchControl(), []
    out.clear()
    worker = threading.Thread(target=lambda: out.setdefault("r", classify_study(
        node, patient, classifier, on_slice=on_slice, control=control, batch_size=2)))
    worker.start()
    while not control.paused and time.monotonic() < deadline:
        time.sleep(0.01)
    control.cancel()
    worker.join(60)
    assert not worker.is_alive()
    assert out["r"].cancelled and len(out["r"].slices) == 2
    assert control.wait_if_paused() is False


def test_batch_control_states():
    c = BatchControl()
    assert not c.paused and not c.cancelled and c.wait_if_paused() is True
    c.pause()
    assert c.paused and c.wait_if_paused(timeout=0.01) is True  # timed out, not cancelled
    c.resume()
    assert not c.paused
    c.cancel()
    c.pause()  # no pausing a cancelled batch
    assert c.cancelled and not c.paused and c.wait_if_paused() is False


def test_pixels_are_not_kept(study, classifier, monkeypatch):
    """Every decoded slice (and its pixel array) is gone once it is prepared: at most one
    per reader thread is alive while the batch runs, none afterwards."""
    _, patient, node, _ = study
    refs: list[weakref.ref] = []
    real = study_batch.load_slices

    def tracking(path):
        slices = real(path)
        refs.extend(weakref.ref(x) for s in slices for x in (s, s.pixels))
        return slices

    monkeypatch.setattr(study_batch, "load_slices", tracking)
    alive_during = []

    def on_slice(_):
        alive_during.append(sum(r() is not None for r in refs) // 2)

    r = classify_study(node, patient, classifier, on_slice=on_slice, batch_size=2, workers=2)
    gc.collect()
    assert len(refs) == 2 * (N_LUNG + 1)  # the broken file yields no slice
    assert max(alive_during) <= 2
    assert [x for x in refs if x() is not None] == []
    size = classifier.params.size
    big = [a for s in r.slices for a in vars(s).values() if isinstance(a, np.ndarray) and a.size > size * size * 3]
    assert big == []


def test_suspicious_thumbnails(result, classifier):
    thumbs = suspicious_thumbnails(result, classifier, k=3)
    assert len(thumbs) == 3
    ps = [t.slice.p_covid for t in thumbs]
    assert ps == sorted(ps, reverse=True)
    best = max(s.p_covid for s in result.slices if s.ok and s.has_lung)
    assert ps[0] == best and all(t.slice.has_lung for t in thumbs)
    for t in thumbs:
        assert t.image.dtype == np.uint8 and t.image.shape == (96, 96)
        assert t.heatmap.shape == t.image.shape and t.heatmap.dtype == np.float32
        assert 0.0 <= float(t.heatmap.min()) and float(t.heatmap.max()) <= 1.0 + 1e-6
    assert suspicious_thumbnails(result, classifier, k=0) == []
