"""A labelled set decoded once (``python -m training decode``) and ``train --time-limit``: no network trained."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ctviewer.imaging.preprocess import PreprocessParams, crop_resize
from training.dataset import decode_all, discover
from training.decoded import DecodedFileError, is_decoded_file, load, save
from training.dataset import preprocessing_block

from .synthetic import chest_png8

LUNGS = PreprocessParams(size=32, input="lungs")


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    dirs = []
    for src in ("alpha", "beta"):
        for cls, prefix, lesion in (("COVID", "Covid", True), ("non-COVID", "Non-Covid", False)):
            (root / src / cls).mkdir(parents=True)
            for i in range(1, 5):
                cv2.imwrite(str(root / src / cls / f"{prefix} ({i}).png"),
                            chest_png8(220 + 9 * i, 180 + 5 * i, lesion=lesion, seed=i + (src == "beta") * 10))
        dirs.append(str(root / src))
    (root / "alpha" / "COVID" / "Covid (9).png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return dirs


@pytest.fixture(scope="module")
def decoded(two_sources):
    ds = discover(two_sources, block=2)
    return ds, decode_all(ds, LUNGS, log=lambda *a, **k: None)


def test_saved_set_loads_to_the_same_slices_boxes_and_inputs(decoded, tmp_path):
    ds, dec = decoded
    assert len(dec.keep) == len(ds.paths) - 1  # the truncated file is skipped, as train skips it
    path = save(tmp_path / "set.npz", ds, dec, preprocessing_block(LUNGS), 2, ["alpha", "beta"])
    assert is_decoded_file([str(path)]) and not is_decoded_file([str(tmp_path)])
    ds2, dec2, meta = load(path, preprocessing_block(LUNGS), 2)
    assert ds2.paths == [ds.paths[i] for i in dec.keep]
    assert ds2.classes == ds.classes
    for name in ("labels", "groups", "sources"):
        assert np.array_equal(getattr(ds2, name), getattr(ds, name)[dec.keep]), name
    assert meta["data"] == ["alpha", "beta"] and meta["max_box"] == 0
    # lossless: every input, with or without augmentation's crops, is the one the full image gives
    for i in range(len(dec.images)):
        a = crop_resize(dec.images[i], tuple(dec.boxes[i]), 32)
        b = crop_resize(dec2.images[i], tuple(dec2.boxes[i]), 32)
        assert np.array_equal(a, b), ds2.paths[i]
    assert np.array_equal(dec2.inputs(np.arange(len(dec2.images)), 32), dec.inputs(np.arange(len(dec.images)), 32))
    # stored images are cut to the lungs' box and a margin: smaller than the slices
    assert sum(im.size for im in dec2.images) < sum(im.size for im in dec.images)


def test_shrunk_images_keep_the_exact_unaugmented_inputs(decoded, tmp_path):
    ds, dec = decoded
    path = save(tmp_path / "small.npz", ds, dec, preprocessing_block(LUNGS), 2, ["x"], max_box=40)
    _, small, meta = load(path, preprocessing_block(LUNGS), 2)
    assert meta["max_box"] == 40
    assert all(max(b[2] - b[0], b[3] - b[1]) <= 41 for b in small.boxes)
    assert np.array_equal(small.inputs([0, 3], 32), dec.inputs([0, 3], 32))  # validation inputs stay exact


def test_a_file_made_with_other_preprocessing_or_blocks_is_refused(decoded, tmp_path):
    ds, dec = decoded
    path = save(tmp_path / "set.npz", ds, dec, preprocessing_block(LUNGS), 2, ["x"])
    with pytest.raises(DecodedFileError, match="decode the folders again"):
        load(path, preprocessing_block(PreprocessParams(size=32, input="chest")), 2)
    with pytest.raises(DecodedFileError, match="decode the folders again"):
        load(path, preprocessing_block(LUNGS), 25)
    other = dict(preprocessing_block(LUNGS), lung_segmenter_sha256="0" * 64)
    with pytest.raises(DecodedFileError, match="lung_segmenter_sha256"):
        load(path, other, 2)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DecodedFileError, match="not a readable"):
        load(bad, preprocessing_block(LUNGS), 2)
    np.savez(tmp_path / "alien.npz", meta=np.array(json.dumps({"format": "something else"})))
    with pytest.raises(DecodedFileError, match="not a decoded slice file"):
        load(tmp_path / "alien.npz", preprocessing_block(LUNGS), 2)


def test_decode_command_and_train_refuse_mismatches(two_sources, tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "d.npz"
    assert main(["decode", "--data", *two_sources, "--out", str(out), "--size", "32", "--block", "2"]) == 0
    with pytest.raises(SystemExit):
        main(["decode", "--data", *two_sources, "--out", str(tmp_path / "d.bin")])
    # a train whose preprocessing differs stops before building a network
    with pytest.raises(SystemExit, match="decode the folders again"):
        main(["train", "--data", str(out), "--out", str(tmp_path / "run"), "--size", "48", "--block", "2"])


class _FakeModel:
    stop_training = False


def _time_limit(monkeypatch, start: float, limit: float, epochs: int):
    """A ``TimeLimit`` callback on a fake model and a fake clock (the list's one item, seconds)."""
    import training.fit as fit

    clock = [start]
    monkeypatch.setattr(fit.time, "time", lambda: clock[0])
    record = {}
    cb = fit.TimeLimit(t_start=start, limit=limit, record=record)
    cb.set_model(_FakeModel())
    cb.set_params({"epochs": epochs})
    cb.on_train_begin()
    return cb, clock, record


def test_time_limit_stops_after_the_epoch_whose_successor_would_not_fit(monkeypatch):
    cb, clock, record = _time_limit(monkeypatch, 1000.0, 100.0, 50)
    clock[0] += 10  # 10 s per epoch: 10 + 2.5 * 10 < 100
    cb.on_epoch_end(0)
    assert not cb.model.stop_training and not record
    clock[0] += 70  # now 80 s per 2 epochs: 80 + 2.5 * 40 > 100
    cb.on_epoch_end(1)
    assert cb.model.stop_training
    assert record == {"seconds": 100.0, "stopped_after_epoch": 2, "planned_epochs": 50}


def test_time_limit_never_stops_the_last_epoch(monkeypatch):
    cb, clock, record = _time_limit(monkeypatch, 0.0, 1.0, 1)
    clock[0] += 50
    cb.on_epoch_end(0)
    assert not cb.model.stop_training and not record
