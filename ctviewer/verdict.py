"""Which slices show lung, and the study-level verdict over them (numpy/cv2 only).

Lung detection
--------------
``lung_fraction`` reads the segmentation the model's crop is cut from
(``preprocess.segment_chest``; the batch engine computes it once per slice for
both): the slice in the model's lung window (``display8``), uniform borders
stripped (``content_box``), <= 256 px; tissue = brighter than Otsu's threshold
(clipped to 100..200), opened; the body = the largest tissue component (>= 2 %
of the image), the chest = its convex hull; lung/airway = dark pixels inside the
hull, opened, in components that pass the same size rules as the crop
(``ChestSegmentation.lung_candidates``: >= 0.2 % of the image, and >= 1 % or >=
a sixth of the largest).  One difference from the crop: in a full field of view, dark
components that reach the hull's edge are air outside the body (see
``segmentation_lung_mask``), not lung.  The fraction is lung area / hull area, 0.0 when there is no
body (blank image, noise).

``has_lung`` is ``lung_fraction >= LUNG_MIN_FRACTION`` and the slice is not a
scout: DICOM ImageType containing LOCALIZER, or an orientation that is not
axial (the model was trained on axial slices), or, for a DICOM slice without
position, an image at least ``SCOUT_ASPECT`` times wider than tall.

Study verdict
-------------
See ``study_verdict`` and docs/verdict.md for why the rule is what it is.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from .imaging.preprocess import ChestSegmentation, PreprocessParams, display8, segment_chest
from .imaging.slice import Slice
from .studies import SliceResult, Verdict

#: Lung (and airway) area as a share of the chest's convex hull below which a
#: slice does not count as a lung slice.  Measured (docs/verdict.md): all 2118
#: dataset PNGs score >= 0.061; Lung-PET-CT-Dx slices through the lungs
#: 0.08..0.41, neck/shoulder slices 0.0, apex slices with a sliver of lung
#: 0.01..0.05 (left out: the model's crop would be mostly not lung).
LUNG_MIN_FRACTION: float = 0.05
#: The body covers at least this share of the image's frame (border pixels) in a tight crop
#: around the chest (dataset PNGs: >= 0.22), less in a full field of view (Lung-PET-CT-Dx:
#: <= 0.17, shoulders and table touch the edges).
CROP_FRAME_SHARE: float = 0.2
#: A DICOM slice without position this many times wider than tall is a scout.
SCOUT_ASPECT: float = 1.6
#: Study rule: COVID when at least this share of the lung slices is called COVID.
STUDY_MIN_POSITIVE: float = 0.5
#: Confidence is capped: slice errors within a study are correlated (one
#: validation COVID pseudo-study had 0 of 25 slices positive), so no amount of
#: slices makes the verdict certain.
MAX_CONFIDENCE: float = 0.99

_PARAMS = PreprocessParams()
LUNG_WINDOW = (_PARAMS.window_center, _PARAMS.window_width)  # the window lung_fraction reads


def lung_mask(img8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lung, chest hull) boolean masks of a lung-windowed uint8 image at working resolution
    (<= 256 px on the longest side, after stripping uniform borders)."""
    return segmentation_lung_mask(segment_chest(img8))


def segmentation_lung_mask(seg: ChestSegmentation) -> tuple[np.ndarray, np.ndarray]:
    """``lung_mask`` from the slice's ``segment_chest`` (the one the model's crop reads)."""
    if seg.hull is None:
        empty = np.zeros(seg.shape, bool)
        return empty, empty
    return seg.label_mask(_lung_labels(seg)), seg.hull.astype(bool)


def _lung_labels(seg: ChestSegmentation) -> np.ndarray:
    """The dark components of a segmentation with a body that are lung or airway."""
    assert seg.body is not None and seg.hull is not None and seg.dark_labels is not None
    hull = seg.hull
    # When the whole body is in the image (it covers < CROP_FRAME_SHARE of the frame), air outside the body
    # caught in the hull's concavities (between neck and shoulders, under the back on the table)
    # reaches the hull's edge, while the lungs are walled in by the chest: such components are
    # dropped.  In tight crops (the dataset's PNGs) the frame cuts the chest, the largest tissue
    # component may be the mediastinum alone and the lungs do reach its hull's edge: kept.
    outside: set[int] = set()
    body = seg.body
    on_frame = np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]]).mean()
    if on_frame < CROP_FRAME_SHARE:
        edge = (hull == 1) & (cv2.erode(hull, np.ones((3, 3), np.uint8)) == 0)
        outside = set(np.unique(seg.dark_labels[edge]).tolist()) - {0}
    return seg.lung_candidates(outside)


def lung_fraction(s: Slice, img8: np.ndarray | None = None, seg: ChestSegmentation | None = None) -> float:
    """Share of the chest (convex hull of the body) that is lung or airway; 0.0 without a body.

    ``img8``: the slice already in the lung window (``display8(s, PreprocessParams())``), and
    ``seg`` its ``segment_chest``, when the caller has them (the batch engine computes both
    once for the model input and for this).  Areas are counted from the segmentation's
    component areas: the same numbers as summing ``lung_mask``, without building it."""
    if seg is None:
        seg = segment_chest(img8 if img8 is not None else display8(s, _PARAMS))
    if seg.hull is None or seg.dark_areas is None:
        return 0.0
    area = cv2.countNonZero(seg.hull)
    return float(seg.dark_areas[_lung_labels(seg)].sum()) / area if area else 0.0


def is_scout(s: Slice) -> bool:
    """A localizer/scout or a non-axial image: not a slice the model can judge."""
    if "LOCALIZER" in str(s.meta.get("ImageType", "")).upper():
        return True
    if s.orientation is not None:
        o = np.asarray(s.orientation, float)
        normal = np.cross(o[:3], o[3:])
        norm = float(np.linalg.norm(normal))
        if norm > 1e-6 and abs(normal[2]) / norm < 0.5:  # more than 60 degrees from axial
            return True
    h, w = s.shape
    return s.is_hu and s.position is None and w >= SCOUT_ASPECT * h


def has_lung(s: Slice, fraction: float | None = None) -> bool:
    """Whether the slice counts for the verdict (pass ``fraction`` when already computed)."""
    if is_scout(s):
        return False
    return (lung_fraction(s) if fraction is None else fraction) >= LUNG_MIN_FRACTION


# --- the study rule ------------------------------------------------------------------------------


def _binom_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), in log space (stable for thousands of slices)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
             for j in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def share_above(k: int, n: int, cutoff: float) -> float:
    """Posterior probability that the study's true share of positive slices is >= ``cutoff``,
    given ``k`` of ``n`` slices positive and a uniform prior: 1 - I_cutoff(k + 1, n - k + 1)."""
    # For integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a).
    return 1.0 - _binom_tail(k + 1, n + 1, cutoff)


def study_verdict(results: Sequence[SliceResult], threshold: float = 0.5) -> Verdict:
    """The study's label from its classified lung slices.

    Counted: slices that were classified (``ok``) and have lung.  Score = share
    of them with p(COVID) >= ``threshold``; COVID when the score is >=
    ``STUDY_MIN_POSITIVE``, non-COVID below, "indeterminate" when no lung
    slice was classified.  Confidence = posterior probability (uniform prior,
    slices treated as independent draws) that the study's true share of
    positive slices lies on the side of the cutoff that the label says, capped
    at ``MAX_CONFIDENCE``; 0.0 when indeterminate.
    """
    classified = [r for r in results if r.ok]
    lung = [r for r in classified if r.has_lung]
    n_refused = sum(1 for r in results if not r.ok)
    n_excluded = len(classified) - len(lung)
    n_pos = sum(1 for r in lung if float(r.p_covid) >= threshold)  # type: ignore[arg-type]
    n = len(lung)
    left_out = f"{n_excluded} classified slice(s) without lung and {n_refused} refused slice(s) were left out"
    if n == 0:
        return Verdict("indeterminate", 0.0, 0.0, 0, 0, n_excluded, n_refused,
                       f"Indeterminate: no slice showing lung was classified ({left_out}).")
    score = n_pos / n
    label = "COVID" if score >= STUDY_MIN_POSITIVE else "non-COVID"
    above = share_above(n_pos, n, STUDY_MIN_POSITIVE)
    confidence = min(MAX_CONFIDENCE, above if label == "COVID" else 1.0 - above)
    rule = (f"{label} because {n_pos} of {n} lung slices ({score:.0%}) have p(COVID) >= {threshold:.2f}, "
            f"and the study is called COVID when at least {STUDY_MIN_POSITIVE:.0%} do; {left_out}.")
    return Verdict(label, round(confidence, 4), score, n, n_pos, n_excluded, n_refused, rule)
