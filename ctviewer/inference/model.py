"""Verified model loading and batched, calibrated prediction with ONNX Runtime.

The application never imports TensorFlow or Keras: the model package holds an ONNX file
(``python -m training export`` writes it) whose SHA-256 the card names.  Loading reads the
file's bytes once, checks their hash, and gives those same bytes to ONNX Runtime: nothing
that was not verified is parsed, and an ONNX file holds a graph of standard operators, no
code.  Decisions:

- **Outputs.** The graph has one input (the (N, s, s, 3) batch of model inputs) and two
  outputs, ``logits`` (before the head's activation) and ``features`` (the trunk's last
  block, for Grad-CAM); see ``training/export.py``.
- **Flip TTA** (card ``tta: ["hflip"]``): the batch and its mirror go through the model as one
  batch of 2N, and each slice's log-odds is the mean of its two.
- **Threads.** ``threads`` sets ONNX Runtime's intra-op pool (default: every core).  The GUI
  and the batch engine choose theirs (``GUI_THREADS``, ``batch.model_threads``); the numbers
  behind the choices are in benchmarks/README.md.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctviewer.imaging.preprocess import PreprocessParams
from ctviewer.paths import resources_dir

from .calibration import covid_score, sigmoid
from .card import ModelCard, ModelError

DEFAULT_MODEL = "ct-resnet50"
SPIN = False  # ONNX Runtime's idle pool threads spin-wait (see OnnxClassifier.from_bytes)


def default_model_dir() -> Path:
    env = os.environ.get("CTVIEWER_MODEL")
    return Path(env) if env else resources_dir() / "models" / DEFAULT_MODEL


@dataclass(frozen=True)
class Prediction:
    label: str
    p_covid: float  # calibrated probability of the positive class


class Classifier:
    """A model with its card; predicts calibrated p(COVID) in batches.

    Subclasses provide ``outputs(x) -> (logits (N, 2), features (N, h, w, K))``: ONNX Runtime
    in the app (``OnnxClassifier``), Keras in the training package.
    """

    def __init__(self, card: ModelCard, folder: Path):
        self.card = card
        self.folder = Path(folder)
        self.params = PreprocessParams.from_dict(card.preprocessing)
        self._activation = card.architecture.get("activation", "linear")
        self._tta = "hflip" in card.extra.get("tta", [])

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        s = self.params.size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(f"expected inputs of shape (N, {s}, {s}, 3), got {x.shape}")
        return x

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs as its card describes them (logits, or the head's activation)."""
        z = self.outputs(x)[0]
        if self._activation == "sigmoid":
            return sigmoid(z)
        if self._activation == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return z

    def raw_scores(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Uncalibrated log-odds of the positive class for inputs (N, s, s, 3)."""
        x = self._check(x)
        out = []
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            both = np.concatenate([batch, batch[:, :, ::-1]]) if self._tta else batch
            s = covid_score(self.logits(both), self._activation, self.card.positive_index)
            if self._tta:  # the batch, then its mirror: average each image with its mirror
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

    def head_kernel(self) -> np.ndarray:  # pragma: no cover - abstract
        """The Dense layer's kernel (D, 2) after the feature map (for Grad-CAM)."""
        raise NotImplementedError

    def explain(self, x: np.ndarray) -> np.ndarray:
        """Grad-CAM of the positive class for one input (s, s, 3): (s, s) float32 in 0..1."""
        from .gradcam import gradcam

        return gradcam(self, x)


class OnnxClassifier(Classifier):
    """The application's classifier: an ONNX Runtime session over the verified bytes."""

    def __init__(self, card: ModelCard, session, folder: Path, model_bytes: bytes | None = None):
        super().__init__(card, folder)
        self.session = session
        self._input = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        if "logits" not in names:
            raise ModelError(f"ONNX model {card.weights_file} has no 'logits' output (outputs: {names})")
        self._has_features = "features" in names
        self._bytes = model_bytes
        self._kernel: np.ndarray | None = None

    @classmethod
    def from_file(cls, card: ModelCard, path: Path, folder: Path, threads: int | None = None,
                  spin: bool = SPIN) -> "OnnxClassifier":
        data = Path(path).read_bytes()
        return cls.from_bytes(card, data, folder, threads, spin)

    @classmethod
    def from_bytes(cls, card: ModelCard, data: bytes, folder: Path, threads: int | None = None,
                   spin: bool = SPIN) -> "OnnxClassifier":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: no optimiser chatter on stderr
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        # ONNX Runtime's pool threads spin while waiting for work by default: cores the batch
        # engine's reader and the GUI thread need (benchmarks/README.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure here means a broken package
            raise ModelError(f"{card.weights_file} is not a usable ONNX model: {exc}") from None
        clf = cls(card, session, folder, data)
        inp = session.get_inputs()[0]
        if len(session.get_inputs()) != 1 or list(inp.shape[1:]) != [clf.params.size, clf.params.size, 3]:
            raise ModelError(f"{card.weights_file}: expected one input of shape (N, {clf.params.size}, "
                             f"{clf.params.size}, 3), got {[i.shape for i in session.get_inputs()]}")
        return clf

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.ascontiguousarray(self._check(x))
        if not self._has_features:
            return self.session.run(["logits"], {self._input: x})[0], None
        logits, features = self.session.run(["logits", "features"], {self._input: x})
        return logits, features

    def head_kernel(self) -> np.ndarray:
        if self._kernel is None:
            self._kernel = _dense_kernel(self._bytes, self.card.weights_file)
        return self._kernel


def _dense_kernel(data: bytes | None, name: str) -> np.ndarray:
    """The (D, 2) kernel of the head's Dense layer: the graph's only 2-D initializer with a
    dimension of 2 (convolutions are 4-D, normalisations 1-D)."""
    if data is None:
        raise ModelError(f"{name}: the model's bytes are not kept; cannot read its head")
    from .onnx_weights import float_initializers

    try:
        found = [a for a in float_initializers(data, rank=2).values() if 2 in a.shape]
    except ValueError as exc:
        raise ModelError(f"{name}: cannot read its weights: {exc}") from None
    if len(found) != 1:
        raise ModelError(f"{name}: expected one Dense kernel in the graph, found {len(found)}")
    k = found[0].astype(np.float64)
    return k if k.shape[1] == 2 else k.T


def load_classifier(folder: str | os.PathLike | None = None, threads: int | None = None,
                    spin: bool = SPIN) -> Classifier:
    """Load and verify a model package (default: the bundled model)."""
    folder = Path(folder) if folder is not None else default_model_dir()
    card = ModelCard.load(folder)
    path = card.weights_path(folder)
    if not path.name.endswith(".onnx"):
        raise ModelError(
            f"{path.name}: the application runs ONNX models only; export this training run with "
            f"'python -m training export {folder}'"
        )
    if not path.is_file():
        raise ModelError(f"model file {path.name} is missing from {folder}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.sha256:  # hash first, before any parsing of the model
        raise ModelError(
            f"model file {path.name} does not match its model card "
            f"(SHA-256 {actual[:12]}…, expected {card.sha256[:12]}…): refusing to load it"
        )
    check_lung_segmenter(card)
    return OnnxClassifier.from_bytes(card, data, folder, threads, spin)


def check_lung_segmenter(card: ModelCard) -> None:
    """A lung-only model (preprocessing ``input: lungs``) was trained on the inputs of one lung
    segmenter; another would give it inputs it never saw.  Refuse the pair unless the bundled
    segmenter is the one the card names."""
    pre = card.preprocessing or {}
    if pre.get("input") != "lungs":
        return
    from ctviewer.imaging.lungs import SegmenterError, default_segmenter

    want = pre.get("lung_segmenter_sha256")
    try:
        have = default_segmenter().card.sha256
    except SegmenterError as exc:
        raise ModelError(f"{card.title} sees the lungs only, but {exc}") from None
    if want != have:
        raise ModelError(f"{card.title} was trained with lung segmenter {str(want)[:12]}…, "
                         f"this application has {have[:12]}…: refusing to pair them")
