"""Training batches: the app's crop-and-resize, with augmentation done before the resize.

Augmenting an 80x80 input (rotating or rescaling it) blurs it; here every
geometric change happens on the full-resolution slice and the chest box, and
the final resize is the same INTER_AREA ``crop_resize`` the app uses.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np

from ctviewer.imaging.preprocess import crop_resize

DEFAULT_AUG = {
    "rotate_deg": 8.0,  # uniform ±
    "scale": 0.10,  # box size × U(1 - s, 1 + s), per axis ± scale/2 extra
    "shift": 0.05,  # box centre moves by U(±shift) × box size
    "hflip": True,
    "contrast": 0.10,  # intensity × U(1 ± c) around mid-grey
    "brightness": 8.0,  # + U(± b) grey levels
}

# What differs between hospitals and exports (issue 11), applied to the full-resolution crop
# before the resize; each with its own probability per slice.  Intensities arrive standardised
# (``standardise8``), so the window augmentations are the residual errors of that mapping.
SOURCE_AUG = {
    "p_window": 0.5,  # gain U(0.85, 1.15) and offset U(±12) levels, then clip
    "p_clip_low": 0.15,  # a higher floor: everything below U(65, 140) becomes that level (clipped exports)
    "p_gamma": 0.3,  # gamma U(0.75, 1.33)
    "p_blur": 0.25,  # Gaussian blur, sigma U(0.3, 1.2) crop pixels per 256 (a soft kernel)
    "p_sharpen": 0.2,  # unsharp mask, amount U(0.3, 1.0) (a sharp kernel)
    "p_noise": 0.3,  # Gaussian noise, sigma U(1, 6) levels
    "p_lowres": 0.3,  # down to U(0.3, 0.8) of the crop's size and back (small or resampled exports)
    "p_jpeg": 0.3,  # JPEG at quality U(30, 90)
    "p_text": 0.2,  # burned-in letters, digits or an arrow
}
DEFAULT_AUG = {**DEFAULT_AUG, "source": SOURCE_AUG}


def source_augment(crop: np.ndarray, aug: dict, rng: np.random.Generator) -> np.ndarray:
    """Simulate another hospital's export of a uint8 crop (see ``SOURCE_AUG``)."""
    img = crop
    h, w = img.shape
    scale = max(h, w) / 256.0
    if rng.random() < aug.get("p_window", 0):
        lut = np.clip((np.arange(256) - 127.5) * rng.uniform(0.85, 1.15) + 127.5 + rng.uniform(-12, 12), 0, 255)
        img = lut.astype(np.uint8)[img]
    if rng.random() < aug.get("p_clip_low", 0):
        img = np.maximum(img, np.uint8(rng.uniform(65, 140)))
    if rng.random() < aug.get("p_gamma", 0):
        g = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
        img = (255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)[img]
    if rng.random() < aug.get("p_blur", 0):
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2) * max(scale, 0.5))
    elif rng.random() < aug.get("p_sharpen", 0):
        soft = cv2.GaussianBlur(img, (0, 0), max(scale, 0.5))
        img = cv2.addWeighted(img, 1 + rng.uniform(0.3, 1.0), soft, -rng.uniform(0.3, 1.0), 0)
    if rng.random() < aug.get("p_lowres", 0) and min(h, w) >= 32:
        f = rng.uniform(0.3, 0.8)
        small = cv2.resize(img, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < aug.get("p_noise", 0):
        img = np.clip(img + rng.normal(0, rng.uniform(1, 6), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < aug.get("p_text", 0):
        img = img.copy()
        colour = int(rng.choice([0, 255]))
        org = (int(rng.uniform(0, 0.8) * w), int(rng.uniform(0.1, 1.0) * h))
        if rng.random() < 0.5:
            text = "".join(rng.choice(list("ABCDEFGHKLMNPRSTWXYZ0123456789"), int(rng.integers(1, 5))))
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * max(scale, 0.4), colour,
                        max(1, round(2 * scale)), cv2.LINE_AA)
        else:
            tip = (int(org[0] + rng.uniform(-0.15, 0.15) * w), int(org[1] + rng.uniform(-0.15, 0.15) * h))
            cv2.arrowedLine(img, org, tip, colour, max(1, round(2 * scale)), cv2.LINE_AA, tipLength=0.3)
    if rng.random() < aug.get("p_jpeg", 0):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(30, 90))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(img, dtype=np.uint8)


def augment_one(img: np.ndarray, box, size: int, aug: dict, rng: np.random.Generator) -> np.ndarray:
    """One augmented input from an image the app's input is cut from (``lung_view``).  With
    ``aug["blank"]`` (lung-only inputs) the blanked pixels (0) stay 0 through every change of
    intensity: the model never sees a grey level outside the lungs that the app cannot give it."""
    h, w = img.shape
    blank = (img == 0).view(np.uint8) if aug.get("blank") else None
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    angle = rng.uniform(-aug["rotate_deg"], aug["rotate_deg"]) if aug.get("rotate_deg") else 0.0
    if angle:
        m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if blank is not None:
            blank = cv2.warpAffine(blank, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    s = aug.get("scale", 0.0)
    k = rng.uniform(1 - s, 1 + s)
    sx, sy = k * rng.uniform(1 - s / 2, 1 + s / 2), k * rng.uniform(1 - s / 2, 1 + s / 2)
    sh = aug.get("shift", 0.0)
    cx += rng.uniform(-sh, sh) * bw
    cy += rng.uniform(-sh, sh) * bh
    bw, bh = bw * sx, bh * sy
    nb = (
        max(0, int(math.floor(cx - bw / 2))),
        max(0, int(math.floor(cy - bh / 2))),
        min(w, int(math.ceil(cx + bw / 2))),
        min(h, int(math.ceil(cy + bh / 2))),
    )
    if nb[2] - nb[0] < 8 or nb[3] - nb[1] < 8:
        nb = tuple(int(v) for v in box)
    if aug.get("source"):
        crop = source_augment(img[nb[1]:nb[3], nb[0]:nb[2]], aug["source"], rng)
        if blank is not None:
            crop = np.where(blank[nb[1]:nb[3], nb[0]:nb[2]] > 0, np.uint8(0), crop)
        x = crop_resize(crop, (0, 0, crop.shape[1], crop.shape[0]), size)
    else:
        x = crop_resize(img, nb, size)
    outside = None
    if blank is not None:  # input pixels made only of blanked pixels
        outside = crop_resize(blank * np.uint8(255), nb, size)[:, :, 0] >= 254.5
    if aug.get("hflip") and rng.random() < 0.5:
        x = x[:, ::-1, :]
        outside = None if outside is None else outside[:, ::-1]
    c, b = aug.get("contrast", 0.0), aug.get("brightness", 0.0)
    if c or b:
        x = (x - 127.5) * rng.uniform(1 - c, 1 + c) + 127.5 + rng.uniform(-b, b)
        x = np.clip(x, 0, 255)
    if outside is not None:
        x[outside] = 0.0
    return np.ascontiguousarray(x, dtype=np.float32)


def mix(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator, w: np.ndarray | None = None):
    """Mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself,
    inputs and labels alike (and sample weights, when given), with one weight
    ``lam ~ Beta(alpha, alpha)`` per batch."""
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(len(x))
    xm, ym = (lam * x + (1 - lam) * x[perm]).astype(np.float32), (lam * y + (1 - lam) * y[perm]).astype(np.float32)
    if w is None:
        return xm, ym
    return xm, ym, (lam * w + (1 - lam) * w[perm]).astype(np.float32)


class SliceBatches(keras.utils.PyDataset):
    """Batches of (inputs, one-hot labels) drawn from decoded slices.

    With ``aug=None`` the inputs are exactly the app's ``to_model_input``.
    Shuffling and augmentation are deterministic in (seed, epoch, batch).
    """

    def __init__(self, images, boxes, labels, size, batch_size, n_classes=2, aug=None, seed=0, shuffle=False,
                 mixup: float = 0.0, weights=None, plain=None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.boxes, self.labels = images, boxes, np.asarray(labels)
        self.size, self.batch_size, self.n_classes = size, batch_size, n_classes
        self.aug, self.seed, self.shuffle, self.mixup = aug, seed, shuffle, mixup
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        self.epoch = 0
        self.order = self._order()
        if aug:
            self._plain = None
        elif plain is not None:  # the un-augmented inputs, already made (Decoded.inputs)
            self._plain = np.asarray(plain, np.float32)
        else:
            self._plain = np.stack([crop_resize(im, bx, size) for im, bx in zip(images, boxes)])

    def _order(self):
        idx = np.arange(len(self.labels))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(idx)
        return idx

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self._plain is not None:
            x = self._plain[idx]
        else:
            x = np.stack([augment_one(self.images[j], self.boxes[j], self.size, self.aug, rng) for j in idx])
        y = np.eye(self.n_classes, dtype=np.float32)[self.labels[idx]]
        w = None if self.weights is None else self.weights[idx]
        if self.mixup > 0:
            x, y, *rest = mix(x, y, self.mixup, rng, w)
            w = rest[0] if rest else None
        return (x, y) if w is None else (x, y, w)

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()

    def inputs(self) -> np.ndarray:
        """All un-augmented inputs in dataset order."""
        if self._plain is not None:
            return self._plain
        return np.stack([crop_resize(im, bx, self.size) for im, bx in zip(self.images, self.boxes)])
