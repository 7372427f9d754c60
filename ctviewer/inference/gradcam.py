"""Grad-CAM without autodiff: where in the model input the positive-class evidence lies.

Decisions:

- The explained score is the classifier's own: the log-odds of the positive class that
  ``calibration.covid_score`` computes, before the output activation, so a confident,
  saturated head still has gradients.  Temperature scaling is a positive rescaling and
  leaves the normalised map unchanged, so it is ignored.
- The head after the trunk's last block (``features``, (h, w, K)) is linear at inference:
  flatten or global average pooling, dropout (the identity), Dense.  The gradient of the
  logit difference z_pos - z_neg with respect to the feature map is therefore the
  difference of the Dense kernel's two columns, reshaped to (h, w, K) (flatten, row-major as
  Keras flattens channels-last maps) or spread evenly over the h*w positions (global
  average).  For a two-sigmoid head (``activation: sigmoid``) the score is
  log sigmoid(z_pos) - log sigmoid(z_neg); its gradient weights each column by
  1 - sigmoid(z) of that slice, which the logits output gives.  Grad-CAM is then exact:
  alpha_k = mean over positions of the gradient, map = ReLU(sum_k alpha_k A_k).
  ``training/gradcam_tf.py`` computes the same map with TensorFlow's GradientTape, and the
  training tests check they agree within 1e-4.
- At 80 px input the map is only 3x3: Grad-CAM shows the coarse region, not lesion outlines.
  Upsampling is bilinear (OpenCV's INTER_LINEAR, half-pixel centres: ``imaging.resize.resize_linear``).
- hflip TTA: the classifier averages the scores of the slice and its mirror, so the map
  averages the slice's map and the mirror's map flipped back, both after ReLU and before
  normalising.  Both views go through one batched forward pass.
"""

from __future__ import annotations

import numpy as np

from ctviewer.imaging.resize import resize_linear

from .calibration import sigmoid


def score_gradient(head: str, kernel: np.ndarray, shape: tuple[int, int, int], pos: int, activation: str,
                   logits: np.ndarray) -> np.ndarray:
    """d(score)/d(feature map) for each slice: (n, h, w, K) float64.

    ``kernel`` is the Dense layer's (D, 2) kernel, ``shape`` the feature map's (h, w, K),
    ``logits`` the pre-activation outputs (n, 2).
    """
    h, w, k = shape
    neg = 1 - pos
    n = len(logits)
    if activation == "sigmoid":  # d/dz log sigmoid(z) = 1 - sigmoid(z)
        cp, cn = 1.0 - sigmoid(logits[:, pos]), -(1.0 - sigmoid(logits[:, neg]))
    else:  # linear logits, or the logits under a softmax: z_pos - z_neg
        cp, cn = np.ones(n), -np.ones(n)
    cols = cp[:, None] * kernel[None, :, pos] + cn[:, None] * kernel[None, :, neg]  # (n, D)
    if head == "flatten":
        if kernel.shape[0] != h * w * k:
            raise ValueError(f"flatten head of {kernel.shape[0]} inputs does not fit a feature map {shape}")
        return cols.reshape(n, h, w, k)
    if head == "gap":
        if kernel.shape[0] != k:
            raise ValueError(f"global-average head of {kernel.shape[0]} inputs does not fit {k} channels")
        return np.broadcast_to(cols[:, None, None, :] / (h * w), (n, h, w, k))
    raise NotImplementedError(f"Grad-CAM for head {head!r}")


def cam_maps(features: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """ReLU(sum_k alpha_k A_k) with alpha_k the spatial mean of the gradient: (n, h, w)."""
    alpha = grads.mean(axis=(1, 2), keepdims=True)
    return np.maximum((alpha * features).sum(axis=-1), 0.0)


def finish_map(maps: np.ndarray, tta: bool, size: int) -> np.ndarray:
    """Per-view maps (n, h, w) -> the input-sized map in 0..1: the mirror's map flipped back and
    averaged in (flip TTA), bilinear upsampling, normalised by the peak (all zeros without one)."""
    cam = maps[0]
    if tta:
        cam = 0.5 * (cam + maps[1][:, ::-1])
    cam = resize_linear(np.ascontiguousarray(cam, dtype=np.float32), (size, size))
    cam = np.nan_to_num(np.maximum(cam, 0.0), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max())
    if not peak > 1e-12:
        return np.zeros((size, size), np.float32)
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32)


def gradcam(classifier, x: np.ndarray) -> np.ndarray:
    """Grad-CAM of the positive class score for one model input.

    ``x`` is (size, size, 3) float32 in 0..255 (``to_model_input``).  Returns a (size, size)
    float32 map in 0..1 (max 1), or all zeros where there is no positive evidence anywhere.
    Deterministic.
    """
    size = classifier.params.size
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (size, size, 3):
        raise ValueError(f"expected one input of shape ({size}, {size}, 3), got {x.shape}")
    card = classifier.card
    tta = "hflip" in card.extra.get("tta", [])
    batch = np.stack([x, x[:, ::-1]]) if tta else x[None]
    logits, features = classifier.outputs(batch)
    if features is None:
        raise NotImplementedError(f"{card.title} has no feature-map output to explain")
    features = features.astype(np.float64)
    grads = score_gradient(card.architecture.get("head", "flatten"), classifier.head_kernel(), features.shape[1:],
                           card.positive_index, card.architecture.get("activation", "linear"), logits.astype(np.float64))
    return finish_map(cam_maps(features, grads), tta, size)


def slice_heatmap(classifier, s, with_input: bool = False):
    """The Grad-CAM map over a whole slice, as the viewer, the reports and ``training heatmaps``
    show it: the model's input and crop box (one path with ``model_input_and_box``), the map
    put back on the slice (``heatmap_to_slice``), and for a lung-only model (card input
    ``lungs``) zero wherever the model saw only blank pixels.  A 3 x 3 map stretched over the
    lungs' box would otherwise paint its centre cell on the mediastinum, which the model never
    saw: heat there says nothing about the slice.  ``with_input``: also return the model input
    the map explains (callers that also score the slice prepare it once)."""
    from ..imaging.preprocess import crop_resize, display8, heatmap_to_slice, lung_view

    params = classifier.params
    img8 = display8(s, params)
    view, box = lung_view(img8, params)
    x = crop_resize(view, box, params.size)
    cam = heatmap_to_slice(classifier.explain(x), box, s.shape)
    if view is not img8:  # blanked outside the lungs
        cam = np.where(view > 0, cam, np.float32(0.0))
    return (cam, x) if with_input else cam
