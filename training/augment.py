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


def augment_one(img: np.ndarray, box, size: int, aug: dict, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    angle = rng.uniform(-aug["rotate_deg"], aug["rotate_deg"]) if aug.get("rotate_deg") else 0.0
    if angle:
        m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
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
    x = crop_resize(img, nb, size)
    if aug.get("hflip") and rng.random() < 0.5:
        x = x[:, ::-1, :]
    c, b = aug.get("contrast", 0.0), aug.get("brightness", 0.0)
    if c or b:
        x = (x - 127.5) * rng.uniform(1 - c, 1 + c) + 127.5 + rng.uniform(-b, b)
        x = np.clip(x, 0, 255)
    return np.ascontiguousarray(x, dtype=np.float32)


def mix(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator):
    """Mixup (Zhang et al. 2018): each batch is blended with a shuffled copy of itself,
    inputs and labels alike, with one weight ``lam ~ Beta(alpha, alpha)`` per batch."""
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(len(x))
    return (lam * x + (1 - lam) * x[perm]).astype(np.float32), (lam * y + (1 - lam) * y[perm]).astype(np.float32)


class SliceBatches(keras.utils.PyDataset):
    """Batches of (inputs, one-hot labels) drawn from decoded slices.

    With ``aug=None`` the inputs are exactly the app's ``to_model_input``.
    Shuffling and augmentation are deterministic in (seed, epoch, batch).
    """

    def __init__(self, images, boxes, labels, size, batch_size, n_classes=2, aug=None, seed=0, shuffle=False,
                 mixup: float = 0.0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.boxes, self.labels = images, boxes, np.asarray(labels)
        self.size, self.batch_size, self.n_classes = size, batch_size, n_classes
        self.aug, self.seed, self.shuffle, self.mixup = aug, seed, shuffle, mixup
        self.epoch = 0
        self.order = self._order()
        self._plain = None if aug else np.stack([crop_resize(im, bx, size) for im, bx in zip(images, boxes)])

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
        if self.mixup > 0:
            x, y = mix(x, y, self.mixup, rng)
        return x, y

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self._order()

    def inputs(self) -> np.ndarray:
        """All un-augmented inputs in dataset order."""
        if self._plain is not None:
            return self._plain
        return np.stack([crop_resize(im, bx, self.size) for im, bx in zip(self.images, self.boxes)])
