"""``ctviewer classify`` and the batch engine behind it."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ctviewer import cli
from ctviewer.studies.batch import COLUMNS, classify_files

from .model_fixtures import make_model_package
from .synthetic import chest_hu, chest_png8

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_package(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def classifier(model_dir):
    from ctviewer.inference import load_classifier

    return load_classifier(model_dir)


def write_ct(path: Path, frames: int = 1, modality: str = "CT") -> Path:
    hu = chest_hu(128)
    raw = np.stack([np.clip(hu + 1024, 0, 4095).astype(np.uint16)] * frames)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = ds.StudyInstanceUID = generate_uid()
    ds.Modality = modality
    ds.Rows, ds.Columns = 128, 128
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (raw if frames > 1 else raw[0]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def study(tmp_path):
    """A folder as users have them: good slices, a broken one, and a README."""
    d = tmp_path / "study"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), chest_png8())
    cv2.imwrite(str(d / "sub" / "b.png"), chest_png8(lesion=True))
    write_ct(d / "sub" / "c.dcm")
    (d / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    (d / "README.txt").write_text("not a slice")
    return d


def run_cli(args, capsys):
    code = cli.main(["classify", *map(str, args)])
    out = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out.out))), out.err


def test_folder_classifies_every_slice_and_reports_the_broken_file(study, model_dir, capsys):
    code, rows, err = run_cli([study, "--model", model_dir], capsys)
    assert code == 1  # one file refused
    assert list(rows[0].keys()) == list(COLUMNS)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert set(by_name) == {"a.png", "b.png", "c.dcm", "broken.dcm"}  # README skipped, no row
    for name in ("a.png", "b.png", "c.dcm"):
        r = by_name[name]
        assert r["label"] in ("COVID", "non-COVID") and 0 <= float(r["p_covid"]) <= 1 and r["error"] == ""
        assert r["model"] == "tiny-test-model 0.0.1" and len(r["pixel_sha256"]) == 16
    bad = by_name["broken.dcm"]
    assert bad["label"] == "" and bad["p_covid"] == "" and bad["error"]
    assert "3 slices classified, 0 slices not judged (no lung, not axial), 1 files refused" in err


def test_all_good_inputs_exit_zero_and_csv_goes_to_a_file(study, model_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code = cli.main(["classify", str(study / "a.png"), str(study / "sub"), "--model", str(model_dir), "--csv", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.png", "c.dcm"]


def test_multiframe_gives_one_row_per_frame(tmp_path, model_dir, capsys):
    write_ct(tmp_path / "mf.dcm", frames=3)
    code, rows, _ = run_cli([tmp_path / "mf.dcm", "--model", model_dir], capsys)
    assert code == 0 and [r["frame"] for r in rows] == ["1", "2", "3"]
    assert len({r["sop_instance_uid"] for r in rows}) == 1


def test_non_ct_dicom_is_refused_by_the_classifier(tmp_path, model_dir, capsys):
    write_ct(tmp_path / "mr.dcm", modality="MR")
    code, rows, _ = run_cli([tmp_path / "mr.dcm", "--model", model_dir], capsys)
    assert code == 1 and "not a CT image (modality MR)" in rows[0]["error"]


@pytest.mark.parametrize("args", [["/no/such/file.png"], ["--batch-size", "0", "."]])
def test_usage_errors_exit_2(args, capsys):
    assert cli.main(["classify", *args]) == 2
    assert "ctviewer classify:" in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["--bogus", "."]])
def test_argparse_usage_errors_exit_2(args):
    with pytest.raises(SystemExit) as e:
        cli.main(["classify", *args])
    assert e.value.code == 2


def test_tampered_model_is_a_usage_error(tmp_path, model_dir, study, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(model_dir, pkg)
    with open(pkg / "model.onnx", "ab") as fh:
        fh.write(b"x")
    code = cli.main(["classify", str(study), "--model", str(pkg)])
    assert code == 2 and "does not match its model card" in capsys.readouterr().err


def test_engine_keeps_input_order_across_batches(tmp_path, classifier):
    files = []
    for i in range(7):
        f = tmp_path / f"s{i}.png"
        cv2.imwrite(str(f), chest_png8(seed=i, lesion=bool(i % 2)))
        files.append(str(f))
    recs = list(classify_files(files, classifier, batch_size=3, workers=2))
    assert [r.path for r in recs] == files
    one_by_one = [next(iter(classify_files([f], classifier))).p_covid for f in files]
    assert np.allclose([r.p_covid for r in recs], one_by_one, atol=1e-4)


def test_engine_stops_when_cancelled(tmp_path, classifier):
    files = []
    for i in range(6):
        f = tmp_path / f"s{i}.png"
        cv2.imwrite(str(f), chest_png8(seed=i))
        files.append(str(f))
    done = []
    recs = list(classify_files(files, classifier, batch_size=1, on_file_done=done.append, cancelled=lambda: len(done) >= 2))
    assert 2 <= len(recs) < 6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux only")
def test_readers_run_at_low_priority_and_the_caller_keeps_its_own():
    """The readers yield the cores to the model (batch.READER_NICE); the thread that consumes
    the batches (the model's, the GUI's worker) keeps its priority."""
    import threading

    from ctviewer.studies.batch import READER_NICE, prepared_batches

    caller = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, caller)

    def prepare(path):
        tid = threading.get_native_id()
        return tid, os.getpriority(os.PRIO_PROCESS, tid)

    seen = [p for g in prepared_batches([str(i) for i in range(12)], prepare, lambda _: 1, batch_size=2) for p in g]
    assert seen and all(nice == (before if tid == caller else max(before, READER_NICE)) for tid, nice in seen)
    assert os.getpriority(os.PRIO_PROCESS, caller) == before


def test_a_failing_prepare_is_raised_in_order():
    from ctviewer.studies.batch import prepared_batches

    def prepare(path):
        if path == "bad":
            raise RuntimeError("boom")
        return path

    with pytest.raises(RuntimeError, match="boom"):
        list(prepared_batches(["a", "bad", "c"], prepare, lambda _: 1, batch_size=1, workers=1))


def test_console_script_runs_in_a_fresh_process(study, model_dir):
    """The installed entry point, exit code and CSV on stdout, with a real process."""
    exe = Path(sys.executable).with_name("ctviewer")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ctviewer.cli"]
    res = subprocess.run([*cmd, "classify", str(study / "a.png"), "--model", str(model_dir)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == ",".join(COLUMNS)
    assert "Traceback" not in res.stderr
    # users see our messages only, not TensorFlow's start-up chatter
    assert "absl" not in res.stderr and "oneDNN" not in res.stderr, res.stderr


@pytest.mark.shared_data
def test_shared_malformed_corpus_never_crashes_the_batch(SHARED_DATA, model_dir, capsys):
    code, rows, err = run_cli([SHARED_DATA / "dicom" / "malformed", "--model", model_dir], capsys)
    assert code == 1
    assert rows and all(r["error"] or r["label"] or r["reason"] for r in rows)
    assert all(not (r["reason"] and (r["label"] or r["p_covid"])) for r in rows)
    assert "Traceback" not in err


@pytest.mark.parametrize("cores, readers", [(1, 1), (2, 1), (6, 1), (8, 2), (16, 3)])
def test_one_reader_per_six_cores(monkeypatch, cores, readers):
    from ctviewer.studies import batch

    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    assert batch.default_readers() == readers
