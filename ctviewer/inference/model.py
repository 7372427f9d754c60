"""Verified model loading and batched, calibrated prediction.

The only module (with ``architecture``) that imports Keras.  Loading checks the
weights' SHA-256 against the model card first, builds the architecture in code
and loads plain weights: nothing in a model file is ever executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctviewer.imaging.preprocess import PreprocessParams
from ctviewer.paths import resources_dir  # noqa: F401 - re-exported for callers

from .calibration import covid_score, sigmoid
from .card import ModelCard, ModelError

DEFAULT_MODEL = "ct-resnet50"


def default_model_dir() -> Path:
    env = os.environ.get("CTVIEWER_MODEL")
    return Path(env) if env else resources_dir() / "models" / DEFAULT_MODEL


@dataclass(frozen=True)
class Prediction:
    label: str
    p_covid: float  # calibrated probability of the positive class


class Classifier:
    """A verified model with its card; predicts calibrated p(COVID) in batches."""

    def __init__(self, card: ModelCard, model, folder: Path):
        self.card = card
        self.model = model
        self.folder = folder
        self.params = PreprocessParams.from_dict(card.preprocessing)
        self._activation = card.architecture.get("activation", "linear")
        self._tta = "hflip" in card.extra.get("tta", [])
        self._forward = _compiled_forward(model, self.params.size)
        # With flip TTA, one call runs the batch and its mirror as one batch of 2N: one model
        # call per batch instead of two (and no mirrored copy in numpy).
        self._forward_all = _compiled_forward(model, self.params.size, hflip=True) if self._tta else self._forward

    def raw_scores(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Uncalibrated log-odds of the positive class for inputs (N, s, s, 3)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (self.params.size, self.params.size, 3):
            raise ValueError(f"expected inputs of shape (N, {self.params.size}, {self.params.size}, 3), got {x.shape}")
        out = []
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            s = covid_score(self._forward_all(batch), self._activation, self.card.positive_index)
            if self._tta:  # the scores of the batch, then of its mirror: average each image with its mirror
                s = 0.5 * (s[: len(batch)] + s[len(batch) :])
            out.append(s)
        return np.concatenate(out) if out else np.zeros((0,), np.float64)

    def probabilities(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Calibrated p(positive class) for inputs (N, s, s, 3)."""
        return sigmoid(self.raw_scores(x, batch_size) / self.card.temperature)

    def label_for(self, p: float) -> str:
        neg = [c for c in self.card.classes if c != self.card.positive_class][0]
        return self.card.positive_class if p >= self.card.threshold else neg

    def predict(self, x: np.ndarray, batch_size: int = 64) -> list[Prediction]:
        return [Prediction(self.label_for(float(p)), float(p)) for p in self.probabilities(x, batch_size)]

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Grad-CAM of the positive class for one input (s, s, 3): (s, s) float32 in 0..1.

        See ``gradcam.gradcam``; the gradient function is built on the first call
        and cached on this classifier.
        """
        from .gradcam import gradcam

        return gradcam(self, x)


def _compiled_forward(model, size: int, hflip: bool = False):
    """model(x, training=False) on a batch, compiled once where the backend allows.

    With TensorFlow the signature has a free batch dimension, so the last, short
    batch of a run does not trigger a second trace (about 2.5 s each).  ``hflip``:
    the model runs on the batch followed by its left-right mirror (2N outputs).
    """
    import keras

    def inputs(x):
        return keras.ops.concatenate([x, keras.ops.flip(x, axis=2)], axis=0) if hflip else x

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        fn = tf.function(lambda x: model(inputs(x), training=False), input_signature=[spec], autograph=False)
        return lambda x: fn(x).numpy()
    if keras.backend.backend() == "jax":
        import jax

        state = (model.trainable_variables, model.non_trainable_variables)
        fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, inputs(x), training=False)[0])
        return lambda x: np.asarray(fn(state[0], state[1], x))
    return lambda x: keras.ops.convert_to_numpy(model(inputs(x), training=False))


def load_classifier(folder: str | os.PathLike | None = None) -> Classifier:
    """Load and verify a model package (default: the bundled model)."""
    folder = Path(folder) if folder is not None else default_model_dir()
    card = ModelCard.load(folder)
    weights = card.verify(folder)  # hash first, before any parsing of the weights
    from .architecture import build_model

    try:
        model = build_model(card.architecture, imagenet=False)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model card {folder}: unsupported architecture ({exc})") from None
    if not weights.name.endswith(".weights.h5"):
        raise ModelError(f"{weights.name}: only plain Keras weights files (.weights.h5) are accepted")
    try:
        model.load_weights(weights)
    except Exception as exc:  # noqa: BLE001 - any failure here means a broken package
        raise ModelError(f"weights file {weights.name} does not fit its architecture: {exc}") from None
    return Classifier(card, model, folder)
