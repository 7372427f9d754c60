"""The app's ``Classifier`` over a Keras model: the training package's evaluations (and the
export's parity check) score slices exactly as the app does, flip TTA and calibration
included, before the model is exported to ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctviewer.inference.card import ModelCard
from ctviewer.inference.model import Classifier

KERAS_WEIGHTS = "model.weights.h5"  # a training run's Keras weights (the ONNX file is exported from them)


class KerasClassifier(Classifier):
    def __init__(self, card: ModelCard, model, folder: Path):
        super().__init__(card, folder)
        self.model = model
        self._forward = _compiled_forward(model, self.params.size)

    def outputs(self, x: np.ndarray):
        return self._forward(np.ascontiguousarray(self._check(x))), None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.outputs(x)[0]  # the Keras model's outputs already carry its activation

    def explain(self, x: np.ndarray) -> np.ndarray:
        from .gradcam_tf import gradcam_tf

        return gradcam_tf(self, x)


def _compiled_forward(model, size: int):
    """model(x, training=False) on a batch, compiled once where the backend allows (a free batch
    dimension, so the last short batch of a run does not trace again)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None, size, size, 3], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
        return lambda x: fn(x).numpy()
    if keras.backend.backend() == "jax":
        import jax

        fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        # the variables' current values at each call (precise BN changes them after this is made)
        return lambda x: np.asarray(fn([v.value for v in model.trainable_variables],
                                       [v.value for v in model.non_trainable_variables], x))
    return lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def load_keras_run(folder: str | Path) -> KerasClassifier:
    """A training run's Keras weights with its card (the weights' hash checked first)."""
    from ctviewer.inference.card import ModelError, sha256_file

    from .architecture import build_model

    folder = Path(folder)
    card = ModelCard.load(folder)
    weights = folder / KERAS_WEIGHTS
    expected = card.sha256 if card.weights_file == KERAS_WEIGHTS else card.extra.get("onnx", {}).get("keras_weights_sha256")
    if not weights.is_file() or sha256_file(weights) != expected:
        raise ModelError(f"{weights} is missing or does not match its model card")
    model = build_model(card.architecture)
    model.load_weights(weights)
    return KerasClassifier(card, model, folder)
