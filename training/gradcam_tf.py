"""Grad-CAM with TensorFlow's GradientTape: the reference for the app's autodiff-free
``ctviewer.inference.gradcam`` (the training tests check both agree within 1e-4), and the
feature-map tap that ``export`` uses.  Decisions (the app's module keeps the same ones):

- The explained score is the classifier's own: the log-odds of the positive
  class that ``calibration.covid_score`` computes, taken *before* the output
  activation (for a softmax head ``z_pos - z_neg``; for two sigmoids
  ``log sigmoid(z_pos) - log sigmoid(z_neg)`` written with softplus), so a
  confident, saturated head still has gradients.  Temperature scaling is a
  positive rescaling and leaves the normalised map unchanged, so it is ignored.
- The feature map is the ResNet50 trunk's last block, ``conv5_block3_out``.  The
  app's models nest the trunk as a functional sub-model, so the gradient model
  is rebuilt from the top-level layer chain (normalisation, optional
  ``internal_size`` resizing, trunk, head) with the trunk swapped for a copy
  that also returns that block.  Layers are shared, not copied, and the rebuilt
  score is checked against the model's own output once when it is built.
- At 80 px input the map is only 3x3 (5x5 with internal_size 160): Grad-CAM
  shows the coarse region, not lesion outlines.  Upsampling is bilinear
  (cv2.INTER_LINEAR, half-pixel centres), like the usual Keras recipe.
- hflip TTA: the classifier averages the scores of the slice and its mirror, so
  the map averages the slice's map and the mirror's map flipped back, both
  after ReLU and before normalising (a view with weaker evidence weighs less).
  Both views go through one batched forward and backward pass.
- The gradient function is built and traced once per classifier and cached on
  it (``_gradcam_fn``); later calls cost one forward + backward pass.
- Only the TensorFlow backend is supported (``tf.GradientTape``).
"""

from __future__ import annotations

import numpy as np

from ctviewer.inference.gradcam import finish_map

FEATURE_LAYER = "conv5_block3_out"
_CACHE_ATTR = "_gradcam_fn"


def gradcam_tf(classifier, x: np.ndarray) -> np.ndarray:
    """Grad-CAM of the positive class score for one model input.

    ``x`` is (size, size, 3) float32 in 0..255 (``to_model_input``).  Returns a
    (size, size) float32 map in 0..1 (max 1), or all zeros where the gradient
    gives no positive evidence anywhere.  Deterministic.
    """
    size = classifier.params.size
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (size, size, 3):
        raise ValueError(f"expected one input of shape ({size}, {size}, 3), got {x.shape}")
    fn = getattr(classifier, _CACHE_ATTR, None)
    if fn is None:
        fn = _build(classifier)
        setattr(classifier, _CACHE_ATTR, fn)
    tta = "hflip" in classifier.card.extra.get("tta", [])
    batch = np.stack([x, x[:, ::-1]]) if tta else x[None]
    maps = fn(np.ascontiguousarray(batch))  # (n, h, w): ReLU(sum_k alpha_k A_k)
    return finish_map(maps, tta, size)


# --- building the gradient function ---------------------------------------------------


def _contains(layer, name: str) -> bool:
    """Whether ``layer`` is, or (recursively) contains, the layer called ``name``."""
    if layer.name == name:
        return True
    return any(_contains(sub, name) for sub in getattr(layer, "layers", []))


def _feature_layer_name(model) -> str:
    """``conv5_block3_out`` when present, else the last 4-D layer of the deepest trunk."""
    if _contains(model, FEATURE_LAYER):
        return FEATURE_LAYER
    for layer in reversed(model.layers):
        if getattr(layer, "layers", None):
            return _feature_layer_name(layer)
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is not None and len(shape) == 4:
            return layer.name
    raise NotImplementedError(f"model {model.name!r} has no convolutional feature map to explain")


def _tapped(sub, name: str):
    """A model sharing ``sub``'s layers that returns [feature map, sub's output]."""
    import keras

    if any(layer.name == name for layer in sub.layers):
        tap = sub.get_layer(name).output
        if tap is sub.output:
            return keras.Model(sub.inputs, [tap, tap])
        return keras.Model(sub.inputs, [tap, sub.output])
    return chain_with_feature_map(sub, name, stop_before_last=False)


def chain_with_feature_map(model, name: str, stop_before_last: bool):
    """Re-wire ``model``'s top-level layers as a chain, tapping the feature map.

    Returns a model: input -> [feature map, output] (or the input to the last
    layer with ``stop_before_last``).  The app's models are chains at the top
    level; a graph that is not fails here with a clear error.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if stop_before_last:
        layers = layers[:-1]
    inp = keras.Input(tuple(model.inputs[0].shape[1:]), name="gradcam_input")
    x, fmap = inp, None
    try:
        for layer in layers:
            if fmap is None and layer.name == name:
                x = fmap = layer(x)
            elif fmap is None and _contains(layer, name):
                fmap, x = _tapped(layer, name)(x)
            else:
                x = layer(x)
    except Exception as exc:  # noqa: BLE001 - e.g. a layer that needs two inputs
        raise NotImplementedError(f"Grad-CAM needs a chain of layers at the top of {model.name!r}: {exc}") from None
    if fmap is None:
        raise NotImplementedError(f"no layer {name!r} in {model.name!r}")
    return keras.Model(inp, [fmap, x], name=f"{model.name}_gradcam")


def _build(classifier):
    """Trace ``maps(batch) -> (n, h, w)`` for ``classifier``; TensorFlow only."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(f"Grad-CAM needs the TensorFlow backend, not {keras.backend.backend()!r}")
    import tensorflow as tf

    model, card = classifier.model, classifier.card
    activation = card.architecture.get("activation", "linear")
    pos, neg = card.positive_index, 1 - card.positive_index
    name = _feature_layer_name(model)
    last = model.layers[-1]
    pre_activation = isinstance(last, keras.layers.Dense)
    graph = chain_with_feature_map(model, name, stop_before_last=pre_activation)

    def score(x):
        """(feature map, explained score, the model's output as rebuilt)."""
        fmap, out = graph(x, training=False)
        if not pre_activation:  # outputs as the classifier reads them (calibration.covid_score)
            if activation == "linear":
                return fmap, out[:, pos] - out[:, neg], out
            p = tf.clip_by_value(out, 1e-7, 1 - 1e-7)
            return fmap, tf.math.log(p[:, pos]) - tf.math.log(p[:, neg]), out
        z = tf.matmul(out, last.kernel)
        if last.use_bias:
            z = z + last.bias
        if activation == "sigmoid":  # log sigmoid(a) = -softplus(-a)
            s = tf.nn.softplus(-z[:, neg]) - tf.nn.softplus(-z[:, pos])
        else:  # linear logits, or the logits under a softmax: log p_pos/p_neg
            s = z[:, pos] - z[:, neg]
        return fmap, s, last.activation(z)

    size = classifier.params.size
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)

    @tf.function(input_signature=[spec], autograph=False)  # no Python control flow; bundles ship no source
    def maps(x):
        with tf.GradientTape() as tape:
            fmap, s, out = score(x)
            # Each slice's score depends only on its own features (inference mode),
            # so one gradient of the sum gives every slice's gradient.
            total = tf.reduce_sum(s)
        grads = tape.gradient(total, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # alpha_k: (n, 1, 1, K)
        return tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)), out

    # The rebuilt graph must compute the model's own output (layers wired as intended).
    probe = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    rebuilt = maps(tf.constant(probe))[1].numpy()
    reference = keras.ops.convert_to_numpy(model(probe, training=False))
    if not np.allclose(rebuilt, reference, rtol=1e-4, atol=1e-4):
        raise NotImplementedError(f"Grad-CAM graph does not reproduce {model.name!r}'s output; unsupported architecture")
    return lambda batch: maps(tf.constant(batch, tf.float32))[0].numpy()
