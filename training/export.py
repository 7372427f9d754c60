"""``python -m training export RUN_DIR``: the trained Keras model as the app's ONNX model.

The application runs the model with ONNX Runtime and never imports TensorFlow; this is the
one place that turns a training run's Keras weights into that file.  Decisions:

- **One input, two outputs.** ``slice``: (N, s, s, 3) float32, the app's model input.
  ``logits``: (N, 2) the Dense layer's output *before* its activation (for the bundled
  recipes the activation is linear, so these are the model's own outputs), ``features``:
  (N, h, w, K) the trunk's last block (``conv5_block3_out``), for Grad-CAM.  The head after
  the feature map is linear (flatten or global average, dropout is the identity at
  inference, Dense), so the gradient of the COVID log-odds with respect to the feature map
  is a reshaped difference of the Dense kernel's columns: the app computes Grad-CAM exactly
  from ``features`` and the kernel (``ctviewer.inference.gradcam``), with no autodiff.
- **Constants folded.** The graph is traced from a ``tf.function`` over the model with its
  variables captured, and tf2onnx freezes them: the ImageNet ``Normalization`` layer's mean
  and variance become constants, not extra graph inputs.  A check refuses a graph with more
  than one input.
- **Parity measured at export** on real slices (``--data``, or ``../shared/data`` when
  present, else the bundled samples): the largest |Δ p(COVID)| between Keras and ONNX
  Runtime with the card's temperature and flip TTA, recorded in the card (``onnx.parity``)
  and refused above ``MAX_PARITY``.
- The card's ``weights_file``/``sha256`` then name the ONNX file; the Keras weights' hash is
  kept as ``onnx.keras_weights_sha256`` so the export can be traced to its run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ctviewer.imaging.preprocess import PreprocessParams
from ctviewer.inference.card import ModelCard, ModelError, sha256_file

from .keras_model import KERAS_WEIGHTS

ONNX_FILE = "model.onnx"
OPSET = 17
MAX_PARITY = 1e-4
FEATURE_LAYER = "conv5_block3_out"


def _log(*args):
    print(*args, file=sys.stderr, flush=True)


def logits_and_features(model):
    """A Keras model sharing ``model``'s layers: input -> [pre-activation logits, feature map]."""
    import keras

    from .gradcam_tf import chain_with_feature_map

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ModelError(f"model {model.name!r} does not end in a Dense layer; cannot export its logits")
    graph = chain_with_feature_map(model, FEATURE_LAYER, stop_before_last=True)
    inp = keras.Input(tuple(model.inputs[0].shape[1:]), name="slice")
    fmap, pooled = graph(inp)
    logits = keras.ops.matmul(pooled, last.kernel)
    if last.use_bias:
        logits = logits + last.bias
    return keras.Model(inp, [logits, fmap], name=f"{model.name}_export")


def onnx_export_unavailable() -> str | None:
    """Why this process cannot export to ONNX (``to_onnx`` traces the Keras model with
    TensorFlow and converts it with tf2onnx), or None when it can."""
    import importlib.util

    import keras

    if keras.backend.backend() != "tensorflow":
        return f"Keras runs on its {keras.backend.backend()} backend, the export needs tensorflow"
    missing = [m for m in ("tensorflow", "tf2onnx") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def to_onnx(model, size: int, path: Path, opset: int = OPSET) -> None:
    """Write ``model`` (Keras, TensorFlow backend) as ONNX with inputs/outputs named as above."""
    import tensorflow as tf
    import tf2onnx

    both = logits_and_features(model)
    spec = (tf.TensorSpec([None, size, size, 3], tf.float32, name="slice"),)

    @tf.function(input_signature=spec, autograph=False)
    def forward(x):
        logits, fmap = both(x, training=False)
        return {"logits": tf.identity(logits, name="logits"), "features": tf.identity(fmap, name="features")}

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Freeze first: every variable and captured tensor (the Normalization layer's mean and
    # variance among them) becomes a constant of the graph, so the ONNX graph has one input.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    tmp = path.with_name(path.name + ".tmp")
    model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                                    opset=opset, output_path=str(tmp))
    # Outputs by rank: the logits are (N, 2), the feature map (N, h, w, K).
    by_rank = {len(t.shape): t.name for t in frozen.outputs}
    _rename_io(model_proto, tmp, {inputs[0]: "slice", by_rank[2]: "logits", by_rank[4]: "features"})
    names_in = [i.name for i in model_proto.graph.input]
    names_out = [o.name for o in model_proto.graph.output]
    if len(names_in) != 1:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"exported graph has inputs {names_in}: constants were not folded")
    os.replace(tmp, path)
    _log(f"wrote {path.name}: input {names_in[0]}, outputs {names_out}, opset {opset}")


def _rename_io(model_proto, path: Path, names: dict) -> None:
    """Give the graph's input and outputs their public names (``slice``, ``logits``, ``features``)."""
    import onnx

    g = model_proto.graph
    for node in g.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    for vi in list(g.input) + list(g.output):
        vi.name = names.get(vi.name, vi.name)
    onnx.save(model_proto, str(path))


def parity_slices(data: str | None, params, limit: int = 200) -> tuple[np.ndarray, str]:
    """Real model inputs to compare the two runtimes on."""
    from ctviewer.imaging import ImagingError
    from ctviewer.imaging.io import is_candidate, load_slices
    from ctviewer.imaging.preprocess import to_model_input
    from ctviewer.paths import resources_dir

    roots = [Path(data)] if data else []
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not roots and shared.is_dir():
        roots = [shared / "sarscov2-dev", shared / "foreign-dev", shared / "dicom" / "Lung-PET-CT-Dx"]
    roots.append(resources_dir() / "samples")
    files = []
    for root in roots:
        found = sorted(f for f in root.rglob("*") if f.is_file() and is_candidate(f))
        files += found[:: max(1, len(found) // (limit // len(roots)))]
    xs = []
    for f in files:
        try:
            xs += [to_model_input(s, params) for s in load_slices(f)[:1]]
        except ImagingError:
            continue
    return np.stack(xs), ", ".join(f"{r.parent.name}/{r.name}" for r in roots)


def export_run(run_dir: str | os.PathLike, data: str | None = None, opset: int = OPSET) -> ModelCard:
    """Export ``RUN_DIR/model.weights.h5`` (described by its card) to ``RUN_DIR/model.onnx`` and
    point the card at it.  Safe to run again: the Keras weights stay the source."""
    import keras

    from ctviewer.inference.model import OnnxClassifier

    from .architecture import build_model
    from .keras_model import KerasClassifier

    folder = Path(run_dir)
    card = ModelCard.load(folder)
    weights = folder / KERAS_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"no {KERAS_WEIGHTS} in {folder}: export needs the training run's Keras weights")
    keras_sha = sha256_file(weights)
    if card.weights_file == KERAS_WEIGHTS and card.sha256 != keras_sha:
        raise ModelError(f"{KERAS_WEIGHTS} does not match its model card")
    if card.weights_file != KERAS_WEIGHTS and card.extra.get("onnx", {}).get("keras_weights_sha256") != keras_sha:
        raise ModelError(f"{KERAS_WEIGHTS} is not the weights this card's ONNX model was exported from")
    model = build_model(card.architecture)
    model.load_weights(weights)
    t0 = time.time()
    size = int(card.architecture["input_size"])
    to_onnx(model, size, folder / ONNX_FILE, opset)
    x, where = parity_slices(data, PreprocessParams.from_dict(card.preprocessing))
    keras_clf = KerasClassifier(card, model, folder)
    onnx_card = ModelCard.from_dict({**card.to_dict(), "weights_file": ONNX_FILE, "sha256": sha256_file(folder / ONNX_FILE)})
    onnx_clf = OnnxClassifier.from_file(onnx_card, folder / ONNX_FILE, folder)
    dp = float(np.max(np.abs(keras_clf.probabilities(x) - onnx_clf.probabilities(x))))
    raw = keras.ops.convert_to_numpy(model(x[:16], training=False))
    dlogit = float(np.max(np.abs(raw - onnx_clf.outputs(x[:16])[0])))
    _log(f"parity on {len(x)} real slices: largest |delta p(COVID)| {dp:.2e}, largest |delta logit| {dlogit:.2e}")
    if not dp <= MAX_PARITY:
        (folder / ONNX_FILE).unlink(missing_ok=True)
        raise ModelError(f"ONNX model differs from Keras by {dp:.2e} in p(COVID) (limit {MAX_PARITY:g}); not exported")
    card.weights_file = ONNX_FILE
    card.sha256 = onnx_card.sha256
    import onnxruntime
    import tf2onnx

    card.extra["onnx"] = {
        "opset": opset,
        "inputs": ["slice"],
        "outputs": ["logits", "features"],
        "keras_weights_sha256": keras_sha,
        "parity": {"slices": int(len(x)), "data": where, "max_abs_delta_p": dp, "max_abs_delta_logit": dlogit},
        "tf2onnx": tf2onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "export_seconds": round(time.time() - t0, 1),
    }
    card.save(folder)
    return card


def main(run_dir: str, data: str | None = None) -> int:
    try:
        card = export_run(run_dir, data)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{card.title}: {Path(run_dir) / ONNX_FILE} (SHA-256 {card.sha256[:12]}…), "
          f"parity {card.extra['onnx']['parity']['max_abs_delta_p']:.1e}")
    return 0
