"""Model cards, verified loading, batched prediction (ONNX Runtime, imported lazily).  Never imports TensorFlow."""

from .card import CARD_NAME, ModelCard, ModelError, sha256_file

__all__ = ["CARD_NAME", "ModelCard", "ModelError", "sha256_file", "load_classifier", "Classifier", "Prediction"]


def __getattr__(name):
    if name in ("load_classifier", "Classifier", "OnnxClassifier", "Prediction", "default_model_dir"):
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
