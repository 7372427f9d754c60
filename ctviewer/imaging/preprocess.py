"""Slice -> model input.  The one preprocessing path shared by training and the app.

Steps (the contract in docs/design.md):

1. ``display8``: DICOM Hounsfield units -> the model's window (a model-card
   parameter, lung W1500/L-600 by default) -> uint8.  PNG/JPEG slices are
   already windowed and pass through.
2. ``segment_chest`` + ``chest_box``: find the lungs and crop around them.  The training PNGs are
   crops around the lungs and chest wall, while DICOM slices are full fields of
   view with air, table and arms; cropping both the same way shows the model the
   anatomy at one scale.  On a PNG that is already such a crop the box is
   (almost) the whole image, so padding or borders do not move it.
3. ``crop_resize``: crop, resize to ``size`` x ``size`` with INTER_AREA (the crop
   is stretched to fill the square: the lung field fills the input whatever the
   file's aspect ratio), repeat into 3 channels, float32 in 0..255.

``model_input_and_box`` returns the input with its crop box (``to_model_input``
is a thin wrapper, so there is one path); ``heatmap_to_slice`` undoes crop and
resize for a map over the input (Grad-CAM), to overlay it on the slice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from .geometry import Box, content_box
from .morphology import bounding_rect, connected_components, dilate, ellipse_kernel, opening, otsu_threshold
from .polygons import convex_hull, fill_convex_poly, outline_points
from .resize import resize_area, resize_linear, resize_nearest
from .slice import Slice
from .window import apply_window



@dataclass(frozen=True)
class PreprocessParams:
    """The model card's ``preprocessing`` block."""

    size: int = 80
    window_center: float = -600.0
    window_width: float = 1500.0
    margin: float = 0.06  # box grows by this fraction of its size on each side
    # 8-bit (PNG/JPEG) slices: "landmarks" maps the image's own air and soft-tissue levels to
    # where the lung window puts them (``standardise8``); "none" takes them as stored.  Cards
    # written before the option existed (1.1.0 and older) mean "none".
    raster_intensity: str = "landmarks"
    # "lungs": the model sees the lungs only (``lung_view``: the lung segmenter's mask, a small
    # margin, everything else blanked to 0, cropped to the lungs); "chest": the lung-box crop of
    # the whole image (1.1.0 and older; cards without the key mean "chest").  Training
    # chooses "lungs" by default (``python -m training train --input``).
    input: str = "chest"

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessParams":
        known = {k: d[k] for k in ("size", "window_center", "window_width", "margin") if k in d}
        known["raster_intensity"] = d.get("raster_intensity", "none")
        if known["raster_intensity"] not in ("none", "landmarks"):
            raise ValueError(f"unknown raster_intensity {known['raster_intensity']!r}")
        known["input"] = d.get("input", "chest")
        if known["input"] not in ("chest", "lungs"):
            raise ValueError(f"unknown input {known['input']!r}")
        return cls(**known)

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "window_center": self.window_center,
            "window_width": self.window_width,
            "margin": self.margin,
            "raster_intensity": self.raster_intensity,
            "input": self.input,
            "crop": "lungs",
            "resize": "INTER_AREA",
            "channels": 3,
            "scale": "0..255 float32",
        }


def display8(s: Slice, params: PreprocessParams) -> np.ndarray:
    """The slice as uint8 grey levels in the model's window.

    DICOM: Hounsfield units through the model's window.  PNG/JPEG: as stored, then (with
    ``raster_intensity="landmarks"``) standardised by ``standardise8`` so that whatever window
    the file was exported with, air and soft tissue land where the lung window puts them.
    """
    if s.is_hu:
        return apply_window(s.pixels, params.window_center, params.window_width, invert=s.invert)
    img = np.asarray(s.pixels)
    if img.dtype != np.uint8:
        raise ValueError("raster slices must hold uint8 pixels")
    img = 255 - img if s.invert else img
    return standardise8(img) if params.raster_intensity == "landmarks" else img


# Where the lung window (W1500/L-600) puts the two landmarks of ``intensity_landmarks``,
# measured on the 64 Lung-PET-CT-Dx DICOM slices of ../shared/data (medians; 10th-90th
# percentile 63-72 and 226-233).  -1000 HU (air) is 59.5 in that window; the darkest 1 % of
# the chest is air in the trachea and bronchi, with a little aerated lung.
AIR_TARGET = 65.0
SOFT_TISSUE_TARGET = 230.0


def intensity_landmarks(img8: np.ndarray) -> tuple[float, float] | None:
    """(air, soft tissue) grey levels of a chest slice from its own content, or None when the
    image shows no chest to measure (flat, or no body).

    Every threshold here adapts to the image (Otsu), so the landmarks follow any linear change
    of intensities (another export window): the body is the largest component brighter than
    Otsu's threshold of the whole image (in a wide window the lungs are part of it, in a lung
    window only the chest wall), the chest is its convex hull.  Inside the hull a second Otsu
    threshold splits aerated lung from soft tissue.  Air is the 1st percentile inside the chest
    (trachea, bronchi: present however diseased the lungs), soft tissue the median above the
    second threshold.  The air outside the body is not used: DICOM exports put the scanner's
    field-of-view padding there, and crops have none.
    """
    chest = chest_hull8(img8)
    if chest is None:
        return None
    _, hull, t2 = chest
    inside = chest[0][hull == 1]
    tissue = inside[inside > t2]
    if tissue.size < 0.01 * inside.size:
        return None
    return float(np.percentile(inside, 1)), float(np.median(tissue))


def chest_hull8(img8: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``intensity_landmarks``' chest: (the image at working resolution without uniform
    borders, the chest's convex hull as a 0/1 mask over it, the Otsu threshold between aerated
    lung and soft tissue inside the hull), or None when there is no chest to measure."""
    cx0, cy0, cx1, cy1 = content_box(img8)
    img = img8[cy0:cy1, cx0:cx1]
    h, w = img.shape
    f = _working_scale((h, w))
    small = resize_area(img, (max(1, round(w * f)), max(1, round(h * f)))) if f < 1 else img
    if int(small.max()) - int(small.min()) < 20:
        return None
    t = otsu_threshold(small)
    bright = opening((small > t).astype(np.uint8), _KERNEL)
    labels, areas = _components(bright)
    if len(areas) <= 1:
        return None
    body_label = 1 + int(np.argmax(areas[1:]))
    if areas[body_label] < 0.02 * small.size:
        return None
    hull = fill_convex_poly(bright.shape, convex_hull(body_outline((labels == body_label).view(np.uint8))), 1)
    t2 = otsu_threshold(small[hull == 1].reshape(-1, 1))
    return small, hull, float(t2)


def standardise8(img8: np.ndarray) -> np.ndarray:
    """An 8-bit chest slice with its intensities mapped linearly so that its air and soft-tissue
    landmarks (``intensity_landmarks``) land on ``AIR_TARGET`` and ``SOFT_TISSUE_TARGET``, where
    the lung window puts them: a wide-window export (lungs mid-grey) or a lung-window export
    then give nearly the same image as the DICOM slice in the model's window.  What an export
    clipped (a mediastinal window's black lungs) cannot be recovered: those pixels become air.
    Images without measurable landmarks, or whose landmarks are less than 20 levels apart or
    would need a gain outside 1/4..4, are returned unchanged.
    """
    marks = intensity_landmarks(img8)
    if marks is None:
        return img8
    air, soft = marks
    if soft - air < 20:
        return img8
    gain = (SOFT_TISSUE_TARGET - AIR_TARGET) / (soft - air)
    if not 0.25 <= gain <= 4.0:
        return img8
    lut = np.clip(np.rint(AIR_TARGET + (np.arange(256, dtype=np.float64) - air) * gain), 0, 255).astype(np.uint8)
    return lut[img8]


def _working_scale(shape: tuple[int, int]) -> float:
    longest = max(shape)
    return 256.0 / longest if longest > 256 else 1.0


def body_outline(mask: np.ndarray) -> np.ndarray:
    """Points of a binary mask with the same convex hull and bounding box as all its pixels
    (each row's outermost pixels), at a fraction of the cost of a hull over every pixel."""
    return outline_points(mask)


_KERNEL = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class ChestSegmentation:
    """The chest segmentation that the crop (``chest_box``) and the lung detection
    (``verdict.lung_fraction``) both read, computed once per slice by ``segment_chest``.

    Masks are at working resolution (<= 256 px on the longest side) over the content
    box (uniform borders stripped).  ``body`` is None when there is no body: a flat
    image, no tissue, or a largest tissue component under 2 % of the image.
    """

    content: Box  # the content box, in slice pixels
    scale: float  # working pixels per slice pixel (<= 1)
    shape: tuple[int, int]  # working (h, w)
    body: np.ndarray | None = None  # bool: the largest tissue component
    hull: np.ndarray | None = None  # uint8 0/1: the body's convex hull (the chest)
    dark_labels: np.ndarray | None = None  # int32: components of dark pixels inside the hull
    dark_areas: np.ndarray | None = None  # their areas in pixels, index = label (0: the rest)
    small: np.ndarray | None = None  # the working image (uint8, lung window), for the lung detection
    source: np.ndarray | None = field(default=None, repr=False, compare=False)  # the slice segmented (full size)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def lungs(self) -> np.ndarray:
        """The lung segmenter's mask over the whole slice (``lungs.lung_mask``), computed once
        and shared by the model's lung-only input and the gate."""
        if "lungs" not in self._cache:
            from .lungs import lung_mask

            assert self.source is not None
            self._cache["lungs"] = lung_mask(self.source)
        return self._cache["lungs"]

    def lung_candidates(self, excluded: Collection[int] = ()) -> np.ndarray:
        """Labels of the dark components that count as lung or airway: at least 0.2 % of the
        image, and at least 1 % or a sixth of the largest (at the apices each lung is small,
        and both must be kept).  ``excluded`` labels take no part (not even as the largest)."""
        assert self.dark_areas is not None
        areas = self.dark_areas.copy()
        areas[0] = 0
        if len(excluded):
            areas[np.fromiter(excluded, int)] = 0
        if not areas.any():
            return np.zeros(0, int)
        sh, sw = self.shape
        min_area = max(0.002 * sh * sw, min(0.01 * sh * sw, areas.max() / 6))
        return np.flatnonzero(areas >= min_area)

    def label_mask(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask of the given dark components."""
        assert self.dark_labels is not None and self.dark_areas is not None
        lut = np.zeros(len(self.dark_areas), bool)
        lut[labels] = True
        return lut[self.dark_labels]


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected component labels of a 0/1 uint8 mask and each label's area.  Areas by
    ``bincount``: cv2's WithStats variant spends 4 times as long on statistics not used here."""
    n, labels = connected_components(mask, connectivity=8)
    return labels, np.bincount(labels.ravel(), minlength=n)


def segment_chest(img8: np.ndarray) -> ChestSegmentation:
    """Segment a lung-windowed uint8 slice: content box, body, chest hull, dark components.

    Tissue is separated from air by Otsu's threshold (clipped to 100..200) and opened
    (3x3); the body is the largest tissue component, the chest its convex hull; dark
    pixels inside the hull, opened, are split into components (lungs, airways, and in a
    full field of view air caught in the hull's concavities).
    """
    full = img8
    content = content_box(img8)
    cx0, cy0, cx1, cy1 = content
    img8 = img8[cy0:cy1, cx0:cx1]
    h, w = img8.shape
    f = _working_scale((h, w))
    small = resize_area(img8, (max(1, round(w * f)), max(1, round(h * f)))) if f < 1 else img8
    sh, sw = small.shape
    none = ChestSegmentation(content, f, (sh, sw), small=small, source=full)
    if int(small.max()) - int(small.min()) < 20:
        return none
    t = otsu_threshold(small)
    tissue = (small > float(np.clip(t, 100, 200))).astype(np.uint8)
    tissue = opening(tissue, _KERNEL)
    labels, areas = _components(tissue)
    if len(areas) <= 1:
        return none
    body_label = 1 + int(np.argmax(areas[1:]))
    if areas[body_label] < 0.02 * sh * sw:
        return none
    body = labels == body_label
    hull = fill_convex_poly(tissue.shape, convex_hull(body_outline(body.view(np.uint8))), 1)
    dark = ((tissue == 0) & (hull == 1)).astype(np.uint8)
    dark = opening(dark, _KERNEL)
    dark_labels, dark_areas = _components(dark)
    return ChestSegmentation(content, f, (sh, sw), body, hull, dark_labels, dark_areas, small, full)


def chest_box(img8: np.ndarray, margin: float = 0.06, seg: ChestSegmentation | None = None) -> Box:
    """Bounding box of the lungs (plus ``margin`` of its size on each side) in a
    lung-windowed uint8 slice, within its content box (uniform borders stripped).

    The lungs are the dark components of ``segment_chest`` that pass
    ``lung_candidates``.  Falls back to the body's box when no lungs are found (an
    abdomen slice), to the content box when there is no body (a blank image) or the
    box is under 8 px.  ``seg``: the slice's segmentation when the caller has it.
    """
    if seg is None:
        seg = segment_chest(img8)
    cx0, cy0, cx1, cy1 = seg.content
    if seg.body is None:
        return seg.content
    keep = seg.lung_candidates()
    mask = seg.label_mask(keep) if len(keep) else seg.body
    x0, y0, bw, bh = bounding_rect(mask.view(np.uint8))
    x1, y1 = x0 + bw, y0 + bh
    f = seg.scale
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    box = (
        max(0, int(np.floor((x0 - mx) / f))),
        max(0, int(np.floor((y0 - my) / f))),
        min(cx1 - cx0, int(np.ceil((x1 + mx) / f))),
        min(cy1 - cy0, int(np.ceil((y1 + my) / f))),
    )
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return seg.content
    return (box[0] + cx0, box[1] + cy0, box[2] + cx0, box[3] + cy0)


def dark_lungs(seg: ChestSegmentation) -> np.ndarray | None:
    """The lung candidates of ``segment_chest`` (dark components inside the chest) as a boolean
    mask over the whole slice, or None when there are none."""
    if seg.body is None or seg.source is None:
        return None
    keep = seg.lung_candidates()
    if not len(keep):
        return None
    cx0, cy0, cx1, cy1 = seg.content
    out = np.zeros(seg.source.shape, bool)
    small = seg.label_mask(keep).view(np.uint8)
    out[cy0:cy1, cx0:cx1] = resize_nearest(small, (cx1 - cx0, cy1 - cy0)) > 0
    return out


def crop_resize(img8: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crop ``box`` out of ``img8`` and resize to size x size x 3 float32 (0..255)."""
    x0, y0, x1, y1 = box
    crop = img8[y0:y1, x0:x1]
    small = resize_area(crop, (size, size))
    return np.repeat(small[:, :, None].astype(np.float32), 3, axis=2)


def model_input_and_box(s: Slice, params: PreprocessParams = PreprocessParams()) -> tuple[np.ndarray, Box]:
    """The model's input for one slice and the crop box it was cut from.

    The box is in the slice's pixel coordinates (x0, y0, x1, y1, exclusive), so
    anything computed over the model input (a Grad-CAM map) can be put back on
    the slice with ``heatmap_to_slice``.  ``to_model_input`` calls this: one path.
    """
    return input_from_display(display8(s, params), params)


def input_from_display(
    img8: np.ndarray, params: PreprocessParams = PreprocessParams(), seg: ChestSegmentation | None = None
) -> tuple[np.ndarray, Box]:
    """``model_input_and_box`` from the slice already in the model's window (``display8``),
    and its ``segment_chest`` when the caller has it: for callers that also need them (the
    batch engine's lung detection reads the same segmentation)."""
    view, box = lung_view(img8, params, seg)
    return crop_resize(view, box, params.size), box


#: ``lung_view``: the lung mask grows by this share of the lung box's longer side before
#: everything outside it is blanked (the pleura and the edge of a peripheral opacity stay in).
LUNG_DILATE: float = 0.03
#: Fewer lung pixels than this share of the image: no lungs found, the chest crop is used.
MIN_LUNG_SHARE: float = 0.005


def lung_view(img8: np.ndarray, params: PreprocessParams = PreprocessParams(),
              seg: ChestSegmentation | None = None, mask: np.ndarray | None = None) -> tuple[np.ndarray, Box]:
    """(the image the model's input is cut from, the crop box) for a slice in the model's window.

    ``params.input == "chest"``: the image itself and ``chest_box``.  ``"lungs"``: the lung
    segmenter's mask (``lungs.lung_mask``, or ``mask`` when the caller has it), grown by
    ``LUNG_DILATE``; every pixel outside it set to 0 (chest wall, mediastinum, spine, table,
    text: nothing but lung reaches the model), and the box is the mask's bounding box plus
    ``params.margin``.  Where the segmenter finds no lung (it was trained on the middle of the
    lungs: at the apices it can miss a small lung) the dark lung components of the chest
    segmentation (``dark_lungs``, what ``chest_box`` crops to) are the mask; a slice with
    neither (neck, abdomen, blank: the gate withholds them anyway) gets the chest crop.
    """
    if params.input != "lungs":
        return img8, chest_box(img8, params.margin, seg)
    if seg is None or seg.source is not img8:
        seg = segment_chest(img8)
    if mask is None:
        mask = seg.lungs()
    if mask.sum() < MIN_LUNG_SHARE * mask.size:
        mask = dark_lungs(seg)  # the segmenter learned the middle of the lungs, not the apices
    if mask is None or mask.sum() < MIN_LUNG_SHARE * mask.size:
        return img8, chest_box(img8, params.margin, seg)
    h, w = img8.shape
    x0, y0, bw, bh = bounding_rect(mask.view(np.uint8))
    k = max(1, round(LUNG_DILATE * max(bw, bh)))
    grown = dilate(mask.view(np.uint8), ellipse_kernel(2 * k + 1))
    view = np.where(grown > 0, img8, np.uint8(0))
    mx, my = params.margin * bw, params.margin * bh
    box = (max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my))),
           min(w, int(np.ceil(x0 + bw + mx))), min(h, int(np.ceil(y0 + bh + my))))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return img8, chest_box(img8, params.margin, seg)
    return view, box


def to_model_input(s: Slice, params: PreprocessParams = PreprocessParams()) -> np.ndarray:
    """The model's input for one slice: size x size x 3 float32 in 0..255."""
    return model_input_and_box(s, params)[0]


def heatmap_to_slice(cam: np.ndarray, box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Undo crop + resize for a map over the model input.

    ``cam`` is (size, size) over the model input; the result is a float32 array
    of ``shape`` (H, W) holding ``cam`` resized to the box's width and height and
    placed at the box, 0 outside it.  INTER_LINEAR rather than the input's
    INTER_AREA: the map is upsampled (the box is larger than the input) and a
    smooth overlay is wanted; values stay within the cam's range.  The box is
    clipped to ``shape`` defensively (it always fits for a box from this slice).
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        return out
    resized = resize_linear(np.asarray(cam, np.float32), (x1 - x0, y1 - y0))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0:cy1, cx0:cx1] = resized[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return out
