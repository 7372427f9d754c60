"""Labelled slices on disk -> arrays, groups and deterministic group splits.

A dataset folder holds one subfolder per class (``COVID/``, ``non-COVID/``).
Patients are not identified in the SARS-CoV-2 CT release, but consecutive file
numbers mostly come from one patient, so slices are grouped by
``number // block`` within their class and splits never cut a group.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import is_candidate, load_slices
from ctviewer.imaging.preprocess import PreprocessParams, chest_box, display8

_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class LabelledSet:
    paths: list[str]
    labels: np.ndarray  # int index into classes
    groups: np.ndarray  # str group key, e.g. "COVID/12"
    classes: list[str]


def positive_class(classes: list[str]) -> str:
    """The class whose probability the model reports: COVID when present."""
    for c in classes:
        if c.lower() == "covid":
            return c
    return classes[-1]


def group_key(cls: str, path: Path, block: int) -> str:
    m = _NUMBER.search(path.stem)
    if m is None or block <= 0:
        return f"{cls}/{path.stem}"
    return f"{cls}/{int(m.group(1)) // block}"


def discover(data_dir: str | Path, block: int = 25) -> LabelledSet:
    """Every slice file under ``data_dir/<class>/`` (recursive), sorted."""
    root = Path(data_dir)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        raise SystemExit(f"error: {root} must hold exactly two class folders, found {classes}")
    paths, labels, groups = [], [], []
    for idx, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*"), key=lambda p: _natural(p.name)):
            if f.is_file() and is_candidate(f):
                paths.append(str(f))
                labels.append(idx)
                groups.append(group_key(cls, f, block))
    if not paths:
        raise SystemExit(f"error: no slices found under {root}")
    return LabelledSet(paths, np.array(labels, np.int64), np.array(groups), classes)


def _natural(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def group_split(groups: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole groups go to validation, per class, until
    ``val_fraction`` of that class's slices is reached.  Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(groups), bool)
    for c in np.unique(labels):
        in_c = labels == c
        uniq = np.unique(groups[in_c])
        rng.shuffle(uniq)
        target = val_fraction * in_c.sum()
        taken = 0
        for g in uniq:
            if taken >= target:
                break
            m = in_c & (groups == g)
            val |= m
            taken += m.sum()
    idx = np.arange(len(groups))
    return idx[~val], idx[val]


@dataclass
class Decoded:
    """Display images (model window, uint8) and their chest boxes, ready to crop."""

    images: list[np.ndarray]
    boxes: np.ndarray  # (N, 4)
    keep: np.ndarray  # indices into the LabelledSet that decoded


def decode_all(ds: LabelledSet, params: PreprocessParams, log=print) -> Decoded:
    """Read every file once (first frame of multi-frame objects) with the app's reader."""
    images, boxes, keep = [], [], []
    for i, p in enumerate(ds.paths):
        try:
            s = load_slices(p)[0]
        except ImagingError as exc:
            log(f"  skipped {exc}", file=sys.stderr)
            continue
        img = display8(s, params)
        images.append(img)
        boxes.append(chest_box(img, params.margin))
        keep.append(i)
    return Decoded(images, np.array(boxes, np.int64).reshape(-1, 4), np.array(keep, np.int64))
