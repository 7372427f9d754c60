"""A labelled set decoded once and saved to one file (``python -m training decode``).

``train`` spends minutes reading every slice and running the lung segmenter (``decode_all``)
before its first epoch, and the data folders are 170 MB of PNG, JPEG and DICOM.  The decoded
file holds exactly what training uses: each slice's ``lung_view`` image (lossless PNG: outside
the lungs it is 0, which compresses to almost nothing), its crop box, and the labelled set's
paths, labels, groups and sources.  ``train --data FILE`` then starts at once and gives the
same run as ``train --data FOLDERS``: the images are the same bytes.

Each slice's un-augmented model input (what ``to_model_input`` gives, size × size) is stored
too, computed from the image as decoded: validation, left-out and calibration numbers use those
exact inputs even when ``--max-box`` shrank the stored images (which then only approximate the
augmented training inputs).

The file records the preprocessing parameters, the lung segmenter's SHA-256 and the grouping
block it was made with; ``load`` refuses a file made with others, so a stale file can never
train a model with inputs the app would not give it.  It is a plain ``.npz`` read with
``allow_pickle=False``: no code is ever deserialised from it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ctviewer.imaging.preprocess import PreprocessParams, crop_resize

from .dataset import Decoded, LabelledSet

FORMAT = "ctviewer-decoded-slices/1"
SUFFIX = ".npz"
CROP_MARGIN = 0.15  # augment: shift 0.05 + half of scale 1.1 x 1.05 -> at most 0.128 of the box beyond it


class DecodedFileError(ValueError):
    """A decoded file that is not one, or made with other preprocessing than asked for."""


def is_decoded_file(data) -> bool:
    """``train --data`` given one decoded file instead of folders."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    return len(items) == 1 and Path(items[0]).is_file() and str(items[0]).endswith(SUFFIX)


def _identity(preprocessing: dict, block: int) -> dict:
    return {"preprocessing": dict(preprocessing), "block": int(block)}


def _stored(img: np.ndarray, box, crop: bool, max_box: int) -> tuple[np.ndarray, tuple]:
    """(the image as stored, its box in the stored image's coordinates).

    Lung-only images are 0 outside the (grown) lungs, so they are cut to the box plus
    ``CROP_MARGIN`` of its size on each side, clipped to the image: every crop that
    augmentation can take (shift, scale) lies inside, cut at the same image edges, and what
    rotation brings in from beyond is 0 either way.  Chest images keep every pixel.  With
    ``max_box`` the image is shrunk (area interpolation) so that the box's longer side is at
    most ``max_box`` pixels: augmented training inputs cut from it approximate those cut from
    the full image (128 px, 1.6 x the 80-pixel input: 5.4 grey levels mean absolute difference,
    mostly sub-pixel shifts of lung texture), for moving a training set where its full size
    cannot go (107 MB -> 23 MB for the three sources); the file records it, and the exact
    un-augmented inputs stay exact.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    if crop:
        mx, my = int(np.ceil(CROP_MARGIN * (x1 - x0))), int(np.ceil(CROP_MARGIN * (y1 - y0)))
        cx0, cy0 = max(0, x0 - mx), max(0, y0 - my)
        cx1, cy1 = min(img.shape[1], x1 + mx), min(img.shape[0], y1 + my)
        img = img[cy0:cy1, cx0:cx1]
        x0, y0, x1, y1 = x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0
    side = max(x1 - x0, y1 - y0)
    if max_box and side > max_box:
        k = max_box / side
        h, w = img.shape
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = nw / w, nh / h
        x0, y0 = int(np.floor(x0 * fx)), int(np.floor(y0 * fy))
        x1, y1 = min(nw, int(np.ceil(x1 * fx))), min(nh, int(np.ceil(y1 * fy)))
    return img, (x0, y0, x1, y1)


def save(path: str | Path, ds: LabelledSet, dec: Decoded, preprocessing: dict, block: int,
         data_dirs: list[str], max_box: int = 0) -> Path:
    """Write the decoded slices of ``ds`` (those in ``dec.keep``) to ``path``.  ``preprocessing``
    is the card's block that made them (``dataset.preprocessing_block``: parameters and segmenter)."""
    size = int(preprocessing.get("size", 80))
    blobs, offsets, boxes = [], [0], []
    plain = dec.plain if dec.plain is not None else np.zeros((len(dec.images), size, size), np.uint8)
    for i, (img, box) in enumerate(zip(dec.images, dec.boxes)):
        if dec.plain is None:  # the exact un-augmented input, from the image as decoded
            plain[i] = crop_resize(img, tuple(int(v) for v in box), size)[:, :, 0]
        img, box = _stored(img, box, preprocessing.get("input") == "lungs", max_box)
        boxes.append(box)
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img, dtype=np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise DecodedFileError("could not encode a decoded slice as PNG")
        blobs.append(buf.ravel())
        offsets.append(offsets[-1] + buf.size)
    keep = dec.keep
    meta = {"format": FORMAT, **_identity(preprocessing, block), "classes": list(ds.classes),
            "data": [str(d) for d in data_dirs], "max_box": int(max_box)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)),
             paths=np.array([ds.paths[i] for i in keep], dtype=str),
             labels=ds.labels[keep].astype(np.int64), groups=ds.groups[keep].astype(str),
             sources=ds.sources[keep].astype(str), boxes=np.array(boxes, np.int64).reshape(-1, 4),
             png=np.concatenate(blobs) if blobs else np.zeros(0, np.uint8), offsets=np.array(offsets, np.int64),
             plain=plain)
    tmp.replace(path)
    return path


def load(path: str | Path, preprocessing: dict, block: int) -> tuple[LabelledSet, Decoded, dict]:
    """(the labelled set, its decoded slices, the file's metadata); refuses a file made with
    other preprocessing, another lung segmenter or another grouping block."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise DecodedFileError(f"{path}: not a decoded slice file ({meta.get('format')!r})")
            want = _identity(preprocessing, block)
            got = {k: meta.get(k) for k in want}
            if got != want:
                raise DecodedFileError(f"{path} was decoded with {json.dumps(got, sort_keys=True)}, this run needs "
                                       f"{json.dumps(want, sort_keys=True)}: decode the folders again")
            paths, labels, groups = z["paths"].tolist(), z["labels"], z["groups"]
            sources, boxes, png, offsets = z["sources"], z["boxes"], z["png"], z["offsets"]
            plain = z["plain"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DecodedFileError):
            raise
        raise DecodedFileError(f"{path}: not a readable decoded slice file ({exc})") from None
    images = []
    for i in range(len(paths)):
        img = cv2.imdecode(png[offsets[i]:offsets[i + 1]], cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 2:
            raise DecodedFileError(f"{path}: slice {i} ({paths[i]}) does not decode")
        images.append(img)
    ds = LabelledSet(paths, labels.astype(np.int64), groups.astype(str), list(meta["classes"]),
                     sources.astype(str))
    if plain.shape[0] != len(paths):
        raise DecodedFileError(f"{path}: {plain.shape[0]} inputs for {len(paths)} slices")
    return ds, Decoded(images, boxes.reshape(-1, 4), np.arange(len(paths), dtype=np.int64), plain), meta


def decode_folders(data_dirs: list[str], out: str | Path, params: PreprocessParams, block: int = 25,
                   max_box: int = 0, log=print) -> Path:
    """``python -m training decode``: read the folders once, as ``train`` would, and save them."""
    from .dataset import decode_all, discover, preprocessing_block

    ds = discover(data_dirs, block=block)
    dec = decode_all(ds, params, log=log)
    path = save(out, ds, dec, preprocessing_block(params), block, data_dirs, max_box=max_box)
    log(f"{path}: {len(dec.images)} slices of {len(ds.paths)} ({', '.join(ds.source_names)}), "
        f"{path.stat().st_size / 1e6:.1f} MB" + (f", box at most {max_box} px (approximate inputs)" if max_box else ""))
    return path
