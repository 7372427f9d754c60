"""``ctviewer report``: header scan, classify_study per study, PDF / SR / SC / CSV out, history."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctviewer import cli
from ctviewer.history import History

from .gui_helpers import write_ct_series
from .model_fixtures import make_model_package

N = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_package(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(d))
    return d


def study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture()
def series(tmp_path) -> Path:
    folder = tmp_path / "in" / "series"
    write_ct_series(folder, n=N, size=96)
    return folder


def report(args, model_dir) -> int:
    return cli.main(["report", *map(str, args), "--model", str(model_dir)])


def test_one_study_writes_pdf_sr_sc_csv_and_records_the_batch(series, tmp_path, model_dir, data_dir, capsys):
    out = tmp_path / "out"
    code = report([series, "--pdf", out / "r.pdf", "--sr", out / "r-sr.dcm", "--sc", out / "r-sc.dcm",
                   "--csv", out / "r.csv"], model_dir)
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")
    sr = pydicom.dcmread(out / "r-sr.dcm")
    assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid(series)
    assert sr.PatientName == "Synthetic^Patient"
    sc = pydicom.dcmread(out / "r-sc.dcm")
    assert sc.StudyInstanceUID == study_uid(series) and sc.pixel_array.ndim == 3
    rows = list(csv.DictReader((out / "r.csv").open(encoding="utf-8")))
    assert len(rows) == N
    assert sorted(out.iterdir()) == [out / n for n in ("r-sc.dcm", "r-sr.dcm", "r.csv", "r.pdf")]
    summary = [line for line in err.splitlines() if line.startswith("study 1/1")]
    assert len(summary) == 1 and "confidence" in summary[0] and f"{N} slices" in summary[0]
    with History(data_dir / "history.sqlite3") as h:
        (b,) = h.batches()
    assert b.study_uid == study_uid(series) and b.n_slices == N and b.model == "tiny-test-model 0.0.1"
    assert b.verdict in ("COVID", "non-COVID") and not b.cancelled


def test_several_studies_get_numbered_outputs(tmp_path, model_dir, capsys):
    root = tmp_path / "in"
    write_ct_series(root / "a", n=3, size=64, seed=1, patient="Alpha^A")
    write_ct_series(root / "b", n=4, size=64, seed=2, patient="Beta^B")
    out = tmp_path / "out"
    code = report([root, "--pdf", out / "r.pdf", "--sr", out / "sr.dcm", "--csv", out / "all.csv"], model_dir)
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["all.csv", "r-1.pdf", "r-2.pdf", "sr-1.dcm", "sr-2.dcm"]
    uids = {pydicom.dcmread(out / f"sr-{n}.dcm").StudyInstanceUID for n in (1, 2)}
    assert uids == {study_uid(root / "a"), study_uid(root / "b")}
    assert len(list(csv.DictReader((out / "all.csv").open(encoding="utf-8")))) == 7
    with History() as h:
        assert len(h.batches()) == 2


def test_refused_file_exits_1_and_still_writes(series, tmp_path, model_dir, capsys):
    good = next(series.glob("*.dcm"))
    ds = pydicom.dcmread(good)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = ds.PixelData[:100]  # passes the header scan, refused when decoded
    ds.save_as(series / "short.dcm", enforce_file_format=True)
    (series / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")  # refused by the scan
    out = tmp_path / "out"
    code = report([series, "--pdf", out / "r.pdf", "--csv", out / "r.csv"], model_dir)
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")
    rows = list(csv.DictReader((out / "r.csv").open(encoding="utf-8")))
    assert len(rows) == N + 1  # the slices, and the file refused on decoding
    assert "garbage.dcm" in err and "1 refused" in err


def test_anonymize(series, tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    assert report([series, "--pdf", out / "r.pdf", "--sr", out / "sr.dcm", "--anonymize"], model_dir) == 0
    sr = pydicom.dcmread(out / "sr.dcm")
    assert str(sr.PatientName).startswith("ANON-") and sr.PatientID.startswith("ANON-")
    assert not sr.get("PatientBirthDate") and sr.PatientIdentityRemoved == "YES"
    assert sr.StudyInstanceUID != study_uid(series)  # replaced; 'ctviewer anonymize' gives the images the same


def test_png_folder_is_one_study(tmp_path, model_dir, capsys):
    import cv2

    from .synthetic import chest_png8

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"s{i}.png"), chest_png8(seed=i))
    out = tmp_path / "out"
    code = report([folder, "--pdf", out / "r.pdf", "--csv", out / "r.csv"], model_dir)
    assert code == 0, capsys.readouterr().err
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")
    assert len(list(csv.DictReader((out / "r.csv").open(encoding="utf-8")))) == 3


def test_usage_errors_exit_2(tmp_path, model_dir, series, capsys):
    assert report(["/no/such/folder", "--pdf", tmp_path / "r.pdf"], model_dir) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report([empty, "--pdf", tmp_path / "r.pdf"], model_dir) == 2
    assert "no CT series" in capsys.readouterr().err
    pkg = tmp_path / "pkg"
    shutil.copytree(model_dir, pkg)
    with open(pkg / "model.onnx", "ab") as fh:
        fh.write(b"x")
    assert cli.main(["report", str(series), "--pdf", str(tmp_path / "r.pdf"), "--model", str(pkg)]) == 2
    assert "cannot use the model" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()
    assert cli.main(["report", str(series)]) == 2  # neither --pdf nor --out (issue 25's archive mode)
    assert "--out DIR" in capsys.readouterr().err
    assert cli.main(["report", "--pdf", str(tmp_path / "r.pdf")]) == 2  # no PATH
    assert "PATH" in capsys.readouterr().err
    for args in ([str(series), "--pdf", "x.pdf", "--bogus"],):
        with pytest.raises(SystemExit) as e:  # argparse: unknown option
            cli.main(["report", *args])
        assert e.value.code == 2


def test_numbered():
    assert cli.numbered("out/r.pdf", 3, several=False) == "out/r.pdf"
    assert cli.numbered("out/r.pdf", 3, several=True) == "out/r-3.pdf"
    assert cli.numbered("out/report", 2, several=True) == "out/report-2"


@pytest.mark.shared_data
def test_shared_lung_pet_ct_dx(SHARED_DATA, tmp_path, model_dir, capsys):
    src = SHARED_DATA / "dicom" / "Lung-PET-CT-Dx"
    out = tmp_path / "out"
    code = report([src, "--pdf", out / "r.pdf", "--sr", out / "sr.dcm", "--csv", out / "all.csv"], model_dir)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    pdfs = sorted(out.glob("r*.pdf"))
    srs = sorted(out.glob("sr*.dcm"))
    assert pdfs and len(pdfs) == len(srs)
    assert all(p.read_bytes().startswith(b"%PDF") for p in pdfs)
    image_studies = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in src.rglob("*.dcm")}
    assert {str(pydicom.dcmread(f).StudyInstanceUID) for f in srs} <= image_studies
    rows = list(csv.DictReader((out / "all.csv").open(encoding="utf-8")))
    n_images = sum(1 for _ in src.rglob("*.dcm"))
    assert 0 < len(rows) <= n_images
    assert all(bool(r["p_covid"]) != bool(r["reason"]) for r in rows)  # a p(COVID) or why not, never both
    assert np.isfinite([float(r["p_covid"]) for r in rows if r["p_covid"]]).all()
