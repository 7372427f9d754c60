"""Labelled slices on disk -> arrays, groups, sources and deterministic group splits.

A dataset folder holds one subfolder per class (``COVID/``, ``non-COVID/``); training may
take several such folders, one per *source* (hospital, collection), named by the folder.
Each slice belongs to a group (a patient, a study or a paper) and splits never cut a group:

- SARS-CoV-2 CT (and any folder without a rule of its own): patients are not identified,
  but consecutive file numbers mostly come from one patient, so ``number // block`` within
  the class.
- UCSD COVID-CT (a folder named ``ucsd``): COVID slices by source paper (the file name up
  to ``-p<page>``), non-COVID slices by patient (the part before ``%``: ``12%0`` and ``12%1``
  are patient 12).
- MosMedData (``mosmed``): one slice per study, so every file is its own group.

With several sources, group keys are prefixed with the source (``mosmed:COVID/CT-1_img3``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import is_candidate, load_slices
from ctviewer.imaging.preprocess import PreprocessParams, crop_resize, display8, lung_view

_NUMBER = re.compile(r"(\d+)(?!.*\d)")


_PAGE = re.compile(r"-p\d+.*$")


@dataclass
class LabelledSet:
    paths: list[str]
    labels: np.ndarray  # int index into classes
    groups: np.ndarray  # str group key, e.g. "COVID/12"
    classes: list[str]
    sources: np.ndarray | None = None  # str source name per slice (the data folder's name)

    def __post_init__(self):
        if self.sources is None:
            self.sources = np.array(["data"] * len(self.paths))

    @property
    def source_names(self) -> list[str]:
        return list(dict.fromkeys(self.sources.tolist()))


def positive_class(classes: list[str]) -> str:
    """The class whose probability the model reports: COVID when present."""
    for c in classes:
        if c.lower() == "covid":
            return c
    return classes[-1]


def group_key(cls: str, path: Path, block: int, rule: str = "blocks") -> str:
    """The group of one file under the source's rule (``grouping_rule``)."""
    stem = path.stem
    if rule == "study":
        return f"{cls}/{stem}"
    if rule == "paper-or-patient":
        if cls.lower() == "covid":
            paper = _PAGE.sub("", stem)
            return f"{cls}/{paper if paper != stem else stem.split('%')[0]}"
        return f"{cls}/{stem.split('%')[0]}"
    m = _NUMBER.search(stem)
    if m is None or block <= 0:
        return f"{cls}/{stem}"
    return f"{cls}/{int(m.group(1)) // block}"


def grouping_rule(source: str) -> str:
    """How a source's slices group into patients (see the module docstring)."""
    name = source.lower()
    if name.startswith("ucsd"):
        return "paper-or-patient"
    if name.startswith("mosmed"):
        return "study"
    return "blocks"


def exclude_from_training(paths: list[str], train: np.ndarray, patterns: list[str]) -> np.ndarray:
    """``train`` (indices into ``paths``) without the files whose name matches one of the glob
    ``patterns`` (``--train-exclude``): the validation split is unchanged, so the numbers stay
    comparable with runs that trained on everything (e.g. MosMed's CT-1 studies, labelled COVID
    with under 25 % of the lung involved, left out of training but still validated on)."""
    import fnmatch

    if not patterns:
        return train
    keep = [i for i in train if not any(fnmatch.fnmatch(Path(paths[i]).name, p) for p in patterns)]
    return np.asarray(keep, dtype=train.dtype)


def discover(data_dir: str | Path | list, block: int = 25) -> LabelledSet:
    """Every slice file under ``data_dir/<class>/`` (recursive), sorted.  A list of folders
    gives one source per folder, in that order, each grouped by its own rule."""
    if isinstance(data_dir, (list, tuple)):
        if len(data_dir) == 1:
            return discover(data_dir[0], block)
        parts = [discover(d, block) for d in data_dir]
        classes = parts[0].classes
        names = [Path(d).resolve().name for d in data_dir]
        if len(set(names)) != len(names):
            raise SystemExit(f"error: data folders must have distinct names, got {names}")
        for d, part in zip(data_dir, parts):
            if part.classes != classes:
                raise SystemExit(f"error: {d} has classes {part.classes}, not {classes}")
        return LabelledSet(
            [p for part in parts for p in part.paths],
            np.concatenate([part.labels for part in parts]),
            np.concatenate([np.char.add(f"{n}:", part.groups.astype(str)) for n, part in zip(names, parts)]),
            classes,
            np.concatenate([np.array([n] * len(part.paths)) for n, part in zip(names, parts)]),
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        raise SystemExit(f"error: {root} must hold exactly two class folders, found {classes}")
    rule = grouping_rule(root.resolve().name)
    paths, labels, groups = [], [], []
    for idx, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*"), key=lambda p: natural_key(p.name)):
            if f.is_file() and is_candidate(f):
                paths.append(str(f))
                labels.append(idx)
                groups.append(group_key(cls, f, block, rule))
    if not paths:
        raise SystemExit(f"error: no slices found under {root}")
    return LabelledSet(paths, np.array(labels, np.int64), np.array(groups), classes,
                       np.array([root.resolve().name] * len(paths)))


def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _groups_by_class(groups: np.ndarray, labels: np.ndarray, seed: int):
    """Per class: (the class's mask, its groups in a shuffled order, deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        in_c = labels == c
        uniq = np.unique(groups[in_c])
        rng.shuffle(uniq)
        yield in_c, uniq


def group_split(groups: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): whole groups go to validation, per class, until
    ``val_fraction`` of that class's slices is reached.  Deterministic in ``seed``."""
    val = np.zeros(len(groups), bool)
    for in_c, uniq in _groups_by_class(groups, labels, seed):
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


def group_kfold(groups: np.ndarray, labels: np.ndarray, fold: int, n_folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of fold ``fold`` (0-based) of ``n_folds``-fold group cross-validation:
    per class, the groups are shuffled (``seed``) and each goes to the fold with the fewest slices
    of that class so far, so every group is validated exactly once over the folds and the folds
    hold nearly equal shares of each class."""
    if not 0 <= fold < n_folds or n_folds < 2:
        raise ValueError(f"fold {fold} of {n_folds}")
    val = np.zeros(len(groups), bool)
    for in_c, uniq in _groups_by_class(groups, labels, seed):
        sizes = np.zeros(n_folds)
        for g in uniq:
            m = in_c & (groups == g)
            f = int(np.argmin(sizes))
            sizes[f] += m.sum()
            if f == fold:
                val |= m
    idx = np.arange(len(groups))
    return idx[~val], idx[val]


def source_split(sources: np.ndarray, groups: np.ndarray, labels: np.ndarray, val_fraction: float,
                 seed: int, cv: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``group_split`` within each source, with the same seed: every source is represented in
    validation in its own proportion, and a source's split does not depend on the others (the
    SARS-CoV-2 validation groups are the same whether or not other sources are added).  With
    ``cv=(k, n)``: fold k of ``group_kfold`` within each source instead."""
    tr, va = [], []
    for s in dict.fromkeys(sources.tolist()):
        idx = np.flatnonzero(sources == s)
        if cv is not None:
            t, v = group_kfold(groups[idx], labels[idx], cv[0], cv[1], seed)
        else:
            t, v = group_split(groups[idx], labels[idx], val_fraction, seed)
        tr.append(idx[t])
        va.append(idx[v])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def balance_weights(sources: np.ndarray, labels: np.ndarray, balance: bool = True,
                    source_weights: dict[str, float] | None = None) -> np.ndarray:
    """Per-slice loss weights that balance the classes within each source (MosMed is 78 %
    COVID: unweighted, "MosMed-looking" would predict COVID), keeping each source's total
    weight at its number of slices, so sources still count by their size.

    ``source_weights`` multiplies a source's total (``{"sarscov2-dev": 2}``: that source
    counts twice its size in the loss); with ``balance=False`` only these multipliers apply."""
    source_weights = dict(source_weights or {})
    unknown = set(source_weights) - set(np.unique(sources).tolist())
    if unknown:
        raise ValueError(f"source weights for unknown sources {sorted(unknown)}; sources: {sorted(set(sources))}")
    w = np.ones(len(labels), np.float32)
    for s in np.unique(sources):
        m = sources == s
        classes = np.unique(labels[m])
        for c in classes:
            mc = m & (labels == c)
            w[mc] = m.sum() / (len(classes) * mc.sum()) if balance else 1.0
        w[m] *= float(source_weights.get(str(s), 1.0))
    return w


@dataclass
class Decoded:
    """The images the model's inputs are cut from (``preprocess.lung_view``: the slice in the
    model's window, blanked outside the lungs when the card's input is "lungs") and their crop
    boxes, ready to crop."""

    images: list[np.ndarray]
    boxes: np.ndarray  # (N, 4)
    keep: np.ndarray  # indices into the LabelledSet that decoded
    plain: np.ndarray | None = None  # (N, size, size) uint8: the exact un-augmented inputs, when known

    def inputs(self, idx, size: int) -> np.ndarray:
        """The un-augmented model inputs of slices ``idx`` (positions in ``images``): exactly the
        app's ``to_model_input``, (n, size, size, 3) float32."""
        idx = np.asarray(idx, np.int64)
        if self.plain is not None and self.plain.shape[1:] == (size, size):
            return np.repeat(self.plain[idx][:, :, :, None].astype(np.float32), 3, axis=3)
        if len(idx) == 0:
            return np.zeros((0, size, size, 3), np.float32)
        return np.stack([crop_resize(self.images[i], self.boxes[i], size) for i in idx])


def decode_all(ds: LabelledSet, params: PreprocessParams, log=print) -> Decoded:
    """Read every file once (first frame of multi-frame objects) with the app's reader."""
    images, boxes, keep = [], [], []
    for i, p in enumerate(ds.paths):
        try:
            s = load_slices(p)[0]
        except ImagingError as exc:
            log(f"  skipped {exc}", file=sys.stderr)
            continue
        view, box = lung_view(display8(s, params), params)
        images.append(view)
        boxes.append(box)
        keep.append(i)
    return Decoded(images, np.array(boxes, np.int64).reshape(-1, 4), np.array(keep, np.int64))


def preprocessing_block(params: PreprocessParams) -> dict:
    """The card's ``preprocessing``: the parameters, and for lung-only inputs the SHA-256 of the
    lung segmenter that made them (the app refuses another: ``inference.model.check_lung_segmenter``)."""
    block = params.to_dict()
    if params.input == "lungs":
        from ctviewer.imaging.lungs import default_segmenter

        block["lung_segmenter_sha256"] = default_segmenter().card.sha256
    return block
