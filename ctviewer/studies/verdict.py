"""The gate (which slices the model may judge), lung detection, and the study verdict
(NumPy only).

The gate
--------
The model was trained on axial CT slices through the lungs; anything else gets a
reason instead of a label (``gate_reason``, ``series_gate``), in every part of the
application (viewer, ``classify``, ``report``, batch review, history):

* ``NOT_AXIAL`` -- a localizer/scout (DICOM ImageType LOCALIZER), an orientation more
  than 60 degrees from axial (coronal, sagittal reformats), or a DICOM image without
  position at least ``SCOUT_ASPECT`` times wider than tall;
* ``NO_LUNG`` -- ``lung_fraction < LUNG_MIN_FRACTION`` (neck, abdomen, blank, noise,
  a photograph), unless the slice lies in its series between lung slices
  (``series_gate``: the lungs are one continuous organ along z, so a slice whose lung
  is entirely consolidated between two lung slices is a lung slice);
* not CT (MR, US, ...) is refused earlier, when the file is read
  (``batch.check_classifiable``).

Lung detection
--------------
``lung_fraction`` reads the segmentation the model's crop is cut from
(``preprocess.segment_chest``; the batch engine computes it once per slice for
both): the slice in the lung window (``display8``; 8-bit slices standardised from
their own air and soft-tissue landmarks), uniform borders stripped, <= 256 px; the
body = the largest tissue component, the chest = its convex hull.  Inside the hull,
**lung** is every pixel darker than ``LUNG_LEVEL`` (-250 HU) after a 5x5 median:
aerated lung, emphysema, airways *and ground glass* (-700..-300 HU), not fat (about
-100 HU) or soft tissue.  The lung must not depend on being black: the Otsu split that
decides the crop puts ground glass with soft tissue, which made the sickest lungs
"without lung".  Components pass the crop's size rules (>= 0.2 % of the image, and >= 1
% or a sixth of the largest); in a full field of view those reaching the hull's edge
are air outside the body.  Each component counts with its **convex hull** (clipped to
the chest): consolidation (0..50 HU, as dense as muscle) in the dependent lung is
enclosed by the crescent of aerated or ground-glass lung in front of it.  The
fraction is that area / the chest's area; when that is under ``LUNG_MIN_FRACTION``, the
share of the chest that the learned lung segmenter (``imaging.lungs``) calls lung if that is
larger (white lungs, consolidation reaching the pleura: on the 404 expert-masked COVID slices
of ``../shared/data/lung-masks`` the threshold alone admitted 94.8 %); 0.0 when there is no
body.  The segmenter is asked only when the threshold's share does not admit the slice: the
gate's decision is the same as with the larger of the two always (``max(d, s) >= T`` exactly
when ``d >= T`` or ``s >= T``), and a slice the threshold admits costs no network run (it was
two thirds of a slice's reading time: issue 24, benchmarks/README.md).

Study verdict
-------------
See ``study_verdict`` and docs/verdict.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ctviewer.imaging.lungs import SegmenterError
from ctviewer.imaging.morphology import erode, median_blur5, opening
from ctviewer.imaging.polygons import convex_hull, fill_convex_poly, outline_points
from ctviewer.imaging.resize import resize_nearest
from ctviewer.imaging.preprocess import ChestSegmentation, PreprocessParams, _components, display8, segment_chest
from ctviewer.imaging.slice import Slice
from .records import SliceResult, Verdict

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
#: No study verdict is shown as surer than this: the fitted curve goes to 1 with many
#: concordant slices, but one validation COVID pseudo-study had 0 of 25 slices positive.
MAX_CONFIDENCE: float = 0.99
#: Without a measurement on sources the model never trained on (``max_confidence`` in the card's
#: ``study_verdict``, written only from leave-one-source-out reliability), no verdict is shown as
#: surer than this (issue 21): in-sample reliability says nothing about a new hospital.  1.1.0's card
#: carries the measurement (``python -m training study-calibration --left-out ...``): its verdicts
#: were right half of the time on sources it never trained on, so its cap is 0.5 and every verdict
#: it gives is "uncertain".
UNMEASURED_MAX_CONFIDENCE: float = 0.9
_PARAMS = PreprocessParams()
LUNG_WINDOW = (_PARAMS.window_center, _PARAMS.window_width)  # the window lung_fraction reads


def reads_like_the_gate(s: Slice, params: PreprocessParams) -> bool:
    """True when ``display8(s, params)`` is the image the gate reads (``display8(s, PreprocessParams())``),
    so that the model input's ``segment_chest`` can serve ``lung_fraction`` too.  The window must be
    the gate's; ``raster_intensity`` matters only for 8-bit slices (a DICOM slice's Hounsfield units
    are windowed alike whatever it says): a model reading stored PNG grey levels (1.1.0) still shares
    the segmentation of every DICOM slice."""
    if (params.window_center, params.window_width) != LUNG_WINDOW:
        return False
    return bool(s.is_hu) or params.raster_intensity == _PARAMS.raster_intensity


#: Lung (aerated or ground glass) is darker than this in the lung window W1500/L-600:
#: -250 HU.  Ground glass is -700..-300 HU, fat about -100, soft tissue 20..60.
LUNG_LEVEL: int = 187
#: Why a slice is not judged (``gate_reason``).
NOT_AXIAL = "not an axial slice"
NO_LUNG = "no lung in this slice"
#: ``series_gate`` counts a slice without detected lung as a lung slice when lung slices
#: lie above and below it within this distance (mm; slices when positions are unknown).
FILL_MAX_GAP_MM: float = 60.0
FILL_MAX_GAP_SLICES: int = 12


def lung_mask(img8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lung, chest hull) boolean masks of a lung-windowed uint8 image at working resolution
    (<= 256 px on the longest side, after stripping uniform borders)."""
    return segmentation_lung_mask(segment_chest(img8))


def segmentation_lung_mask(seg: ChestSegmentation) -> tuple[np.ndarray, np.ndarray]:
    """``lung_mask`` from the slice's ``segment_chest`` (the one the model's crop reads)."""
    if seg.hull is None:
        empty = np.zeros(seg.shape, bool)
        return empty, empty
    return _lung_region(seg).astype(bool), seg.hull.astype(bool)


def _full_field_of_view(seg: ChestSegmentation) -> bool:
    """The whole body is in the image: it covers < CROP_FRAME_SHARE of the frame.  Then air
    outside the body caught in the hull's concavities (between neck and shoulders, under the
    back on the table) reaches the hull's edge, while the lungs are walled in by the chest.  In
    tight crops (the dataset's PNGs) the frame cuts the chest and the lungs do reach the hull."""
    body = seg.body
    assert body is not None
    return float(np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]]).mean()) < CROP_FRAME_SHARE


def _lung_region(seg: ChestSegmentation) -> np.ndarray:
    """uint8 0/1 mask (working resolution) of the lungs: aerated or ground-glass components,
    each with its convex hull, inside the chest (see the module docstring)."""
    assert seg.hull is not None and seg.small is not None
    hull = seg.hull
    smooth = median_blur5(np.ascontiguousarray(seg.small))
    lungish = ((smooth <= LUNG_LEVEL) & (hull == 1)).view(np.uint8)
    lungish = opening(lungish, np.ones((3, 3), np.uint8))
    labels, areas = _components(lungish)
    areas[0] = 0
    if _full_field_of_view(seg):
        edge = (hull == 1) & (erode(hull, np.ones((3, 3), np.uint8)) == 0)
        areas[np.unique(labels[edge])] = 0
    region = np.zeros(seg.shape, np.uint8)
    if not areas.any():
        return region
    sh, sw = seg.shape
    min_area = max(0.002 * sh * sw, min(0.01 * sh * sw, areas.max() / 6))
    for label in np.flatnonzero(areas >= min_area):
        pts = outline_points((labels == label).view(np.uint8))
        region |= fill_convex_poly(region.shape, convex_hull(pts), 1)
    return region & hull


def lung_fraction(s: Slice, img8: np.ndarray | None = None, seg: ChestSegmentation | None = None) -> float:
    """Share of the chest (convex hull of the body) that is lung, as the gate measures it: the
    dark-threshold share, or when that is under ``LUNG_MIN_FRACTION`` the larger of it and the
    lung segmenter's share; 0.0 without a body.

    ``img8``: the slice already in the lung window (``display8(s, PreprocessParams())``), and
    ``seg`` its ``segment_chest``, when the caller has them (the batch engine computes both
    once for the model input and for this)."""
    if seg is None:
        seg = segment_chest(img8 if img8 is not None else display8(s, _PARAMS))
    if seg.hull is None or seg.small is None:
        return 0.0
    area = int(np.count_nonzero(seg.hull))
    if not area:
        return 0.0
    dark = float(np.count_nonzero(_lung_region(seg))) / area
    if dark >= LUNG_MIN_FRACTION:
        return dark
    return max(dark, _segmenter_fraction(seg, area))


_warned: list = []


def _segmenter_fraction(seg: ChestSegmentation, hull_area: int) -> float:
    """Share of the chest hull that the lung segmenter calls lung (``ChestSegmentation.lungs``,
    shared with the model's lung-only input).  It finds lungs that the dark threshold cannot
    (white lungs, consolidation to the pleura, CLAHE-processed exports); the dark threshold finds
    the apices, which the segmenter never learned.  The gate takes the larger."""
    if seg.source is None:
        return 0.0
    try:
        mask = seg.lungs()
    except SegmenterError as exc:  # a damaged installation: the dark threshold alone, said once in the log
        if not _warned:
            _warned.append(True)
            logging.getLogger(__name__).warning("gate without the lung segmenter: %s", exc)
        return 0.0
    cx0, cy0, cx1, cy1 = seg.content
    sh, sw = seg.shape
    lungs = mask[cy0:cy1, cx0:cx1].view(np.uint8)
    small = resize_nearest(lungs, (sw, sh))
    return float(np.count_nonzero(small & seg.hull)) / hull_area


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


def gate_reason(s: Slice, fraction: float) -> str:
    """Why the model may not judge this slice on its own ("" when it may): ``NOT_AXIAL`` or
    ``NO_LUNG``.  ``series_gate`` may still admit a ``NO_LUNG`` slice between lung slices."""
    if is_scout(s):
        return NOT_AXIAL
    return "" if fraction >= LUNG_MIN_FRACTION else NO_LUNG


def series_gate(reasons: Sequence[str], positions: Sequence[float | None]) -> list[str]:
    """The gate over one series in anatomical order: a ``NO_LUNG`` slice with lung slices
    (reason "") on both sides, each within ``FILL_MAX_GAP_MM`` (by position along the normal,
    when every slice has one) or ``FILL_MAX_GAP_SLICES``, is admitted ("").  A lung whose
    every pixel is consolidated has no dark pixel left to find; the lungs are one organ along
    z, so it is recognised from its neighbours.  Slices at the ends of the lung (apex, bases)
    have a lung slice on one side only and keep their reason."""
    out = list(reasons)
    n = len(out)
    use_mm = n > 0 and all(p is not None for p in positions)
    lung = [i for i, r in enumerate(reasons) if r == ""]
    for a, b in zip(lung, lung[1:]):
        if b - a < 2:
            continue
        gap_ok = (abs(float(positions[b]) - float(positions[a])) <= FILL_MAX_GAP_MM if use_mm  # type: ignore[arg-type]
                  else b - a <= FILL_MAX_GAP_SLICES)
        if gap_ok:
            for i in range(a + 1, b):
                if out[i] == NO_LUNG:
                    out[i] = ""
    return out


# --- the study rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyCalibration:
    """P(the study is COVID) from k of n judged lung slices called COVID.

    The share is shrunk toward one half by ``prior`` pseudo-slices, ``x = (k + prior/2) /
    (n + prior)``, and mapped by a logistic curve, ``sigmoid(intercept + slope * (x - 0.5))``.
    ``prior`` is what makes slices *not* independent: errors within a study are correlated
    (a patient the model misses, a scanner it misreads), so beyond a few dozen slices more
    slices of the same study add little.  The three numbers are fitted (maximum likelihood,
    each source weighted equally) on validation pseudo-studies of every source by
    ``python -m training study-calibration`` and stored in the model card's
    ``study_verdict``; verdicts with confidence below ``uncertain_below`` are "uncertain".
    """

    prior: float
    intercept: float
    slope: float
    uncertain_below: float = 0.75
    fitted_on: str = ""
    max_confidence: float = UNMEASURED_MAX_CONFIDENCE  # what left-out reliability supports

    def p_covid(self, k: int, n: int) -> float:
        x = (k + self.prior / 2) / (n + self.prior)
        z = self.intercept + self.slope * (x - 0.5)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    @classmethod
    def from_card(cls, card) -> "StudyCalibration":
        """The card's ``study_verdict`` block, else ``DEFAULT_CALIBRATION``."""
        d = (getattr(card, "extra", None) or {}).get("study_verdict") if card is not None else None
        if not isinstance(d, dict):
            return DEFAULT_CALIBRATION
        try:
            cap = min(MAX_CONFIDENCE, float(d.get("max_confidence", UNMEASURED_MAX_CONFIDENCE)))
            return cls(float(d["prior"]), float(d["intercept"]), float(d["slope"]),
                       float(d.get("uncertain_below", 0.75)), str(d.get("fitted_on", "")), cap)
        except (KeyError, TypeError, ValueError):
            return DEFAULT_CALIBRATION


#: For a model card without ``study_verdict``: a share of one half is the boundary, 10
#: pseudo-slices of prior, and a slope that makes 0.9 need a share of about 0.8 (or 0.2) over
#: many slices.  The bundled model's card carries its own fitted numbers.
DEFAULT_CALIBRATION = StudyCalibration(prior=10.0, intercept=0.0, slope=8.0, uncertain_below=0.75,
                                       fitted_on="default (not fitted)")


def study_verdict(results: Sequence[SliceResult], threshold: float = 0.5,
                  calibration: StudyCalibration | None = None) -> Verdict:
    """The study's label from its judged lung slices.

    Counted: slices the gate admitted and the model judged (``SliceResult.judged``).
    Slices read but not judged (no lung, not axial) are ``n_excluded``, refused files
    ``n_refused``; neither changes the label.  k of n counted slices have p(COVID) >=
    ``threshold``; ``calibration`` (the model card's, see ``StudyCalibration``) turns k and
    n into P(COVID study).  Label: COVID when P >= 0.5, non-COVID below; "uncertain" when
    the confidence ``max(P, 1 - P)`` is under ``calibration.uncertain_below`` (the evidence
    is mixed); "indeterminate" when no lung slice was judged (confidence 0).
    """
    cal = calibration or DEFAULT_CALIBRATION
    lung = [r for r in results if r.judged]
    n_refused = sum(1 for r in results if r.error)
    n_excluded = sum(1 for r in results if not r.error and not r.judged)
    n_pos = sum(1 for r in lung if float(r.p_covid) >= threshold)  # type: ignore[arg-type]
    n = len(lung)
    left_out = f"{n_excluded} slice(s) not judged (no lung, not axial) and {n_refused} refused slice(s) were left out"
    if n == 0:
        return Verdict("indeterminate", 0.0, 0.0, 0, 0, n_excluded, n_refused,
                       f"Indeterminate: no slice showing lung was judged ({left_out}).")
    score = n_pos / n
    p = cal.p_covid(n_pos, n)
    leaning = "COVID" if p >= 0.5 else "non-COVID"
    raw = max(p, 1.0 - p)
    confidence = min(cal.max_confidence, MAX_CONFIDENCE, raw)
    label = leaning if confidence >= cal.uncertain_below else "uncertain"
    why = (f"{n_pos} of {n} lung slices ({score:.0%}) have p(COVID) >= {threshold:.2f}, "
           f"which gives P(COVID study) = {p:.2f} (study calibration: {cal.fitted_on or 'unnamed'})")
    capped = raw > confidence and confidence == cal.max_confidence
    if capped and cal.max_confidence < cal.uncertain_below:
        # the card's left-out measurement: at hospitals it never trained on, this model's study
        # verdicts were right about as often as a coin: it gives none (issue 21)
        rule = (f"Uncertain, leaning {leaning}: {why}. This model gives no study verdict: at hospitals it never "
                f"trained on its study verdicts were right no more often than {cal.max_confidence:.0%} of the time "
                f"(confidence capped at {cal.max_confidence:.2f}, under the {cal.uncertain_below:.2f} needed for a "
                f"label); {left_out}.")
    else:
        if capped:
            why += (f"; confidence capped at {cal.max_confidence:.2f}, what this model's reliability on "
                    "hospitals it never trained on supports")
        rule = (f"Uncertain, leaning {leaning}: {why}, under the {cal.uncertain_below:.2f} needed for a label; "
                f"{left_out}." if label == "uncertain" else f"{label} because {why}; {left_out}.")
    return Verdict(label, round(confidence, 4), score, n, n_pos, n_excluded, n_refused, rule)
