"""Model architectures built in code (weights files never carry code).

The card's ``architecture`` block names the trunk and head; ``build_model``
turns it into a Keras model whose weights file can then be loaded.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

# caffe-style ImageNet means (BGR); our three channels are equal, so order is moot.
IMAGENET_MEAN = (103.939, 116.779, 123.68)
IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def cached_imagenet_weights() -> Path | None:
    """The Keras cache's ResNet50 ImageNet weights, when the machine has them."""
    import os

    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = base / "models" / IMAGENET_NOTOP
    return path if path.is_file() else None


def build_model(arch: dict, imagenet: bool = False) -> keras.Model:
    """Build the classifier described by ``arch``.

    Keys: ``trunk`` ("resnet50"), ``input_size``, ``head`` ("flatten" or "gap"),
    ``dropout``, ``outputs`` (2), ``activation`` ("sigmoid", "softmax" or
    "linear" = logits), ``bn_momentum`` (None keeps Keras' 0.99), ``internal_size``
    (optional: the input is upsampled bilinearly to this size inside the model, so the
    trunk's stride-4 stem leaves more than 20x20 positions for fine texture; the model's
    input stays ``input_size``).
    """
    if arch.get("trunk", "resnet50") != "resnet50":
        raise ValueError(f"unsupported trunk {arch.get('trunk')!r}")
    size = int(arch["input_size"])
    inputs = keras.Input((size, size, 3), name="slice")
    x = layers.Normalization(mean=list(IMAGENET_MEAN), variance=[1.0, 1.0, 1.0], name="imagenet_norm")(inputs)
    internal = int(arch.get("internal_size") or size)
    if internal != size:
        x = layers.Resizing(internal, internal, interpolation="bilinear", name="upsample")(x)
    weights = str(cached_imagenet_weights()) if imagenet else None
    trunk = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(internal, internal, 3))
    momentum = arch.get("bn_momentum")
    if momentum is not None:
        for layer in trunk.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = float(momentum)
    trunk.trainable = not arch.get("frozen_trunk", False)
    x = trunk(x, training=None if trunk.trainable else False)
    head = arch.get("head", "flatten")
    if head == "flatten":
        x = layers.Flatten(name="flatten")(x)
    elif head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        raise ValueError(f"unsupported head {head!r}")
    if arch.get("dropout"):
        x = layers.Dropout(float(arch["dropout"]), name="dropout")(x)
    act = arch.get("activation", "linear")
    outputs = layers.Dense(int(arch.get("outputs", 2)), activation=None if act == "linear" else act, name="out")(x)
    return keras.Model(inputs, outputs, name=arch.get("name", "ct_resnet50"))
