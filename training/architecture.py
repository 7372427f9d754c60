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
TRUNKS = ("resnet50", "tiny")


def cached_imagenet_weights() -> Path | None:
    """The Keras cache's ResNet50 ImageNet weights, when the machine has them."""
    import os

    base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = base / "models" / IMAGENET_NOTOP
    return path if path.is_file() else None


def build_model(arch: dict, imagenet: bool = False) -> keras.Model:
    """Build the classifier described by ``arch``.

    Keys: ``trunk`` ("resnet50", or "tiny": ``tiny_resnet``), ``input_size``, ``head`` ("flatten" or "gap"),
    ``dropout``, ``outputs`` (2), ``activation`` ("sigmoid", "softmax" or
    "linear" = logits), ``bn_momentum`` (None keeps Keras' 0.99), ``internal_size``
    (optional: the input is upsampled bilinearly to this size inside the model, so the
    trunk's stride-4 stem leaves more than 20x20 positions for fine texture; the model's
    input stays ``input_size``).
    """
    if arch.get("trunk", "resnet50") not in TRUNKS:
        raise ValueError(f"unsupported trunk {arch.get('trunk')!r}")
    size = int(arch["input_size"])
    inputs = keras.Input((size, size, 3), name="slice")
    x = layers.Normalization(mean=list(IMAGENET_MEAN), variance=[1.0, 1.0, 1.0], name="imagenet_norm")(inputs)
    internal = int(arch.get("internal_size") or size)
    if internal != size:
        x = layers.Resizing(internal, internal, interpolation="bilinear", name="upsample")(x)
    weights = str(cached_imagenet_weights()) if imagenet else None
    if arch.get("trunk", "resnet50") == "tiny":
        trunk = tiny_resnet((internal, internal, 3))
    else:
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


def tiny_resnet(input_shape, widths=(4, 8, 8, 16)) -> keras.Model:
    """A ResNet50 in miniature for tests and quick trials of the training mechanics: ResNet50's
    stride-2 stem and 3x3 stride-2 max pool (``pool1_pool``), then four stages (conv2..conv5) of one bottleneck block each, named as ResNet50 names
    its layers (``conv2_block1_3_bn``, ...; the last block's output is ``conv5_block3_out``, the
    layer Grad-CAM and the ONNX export tap), with a projection shortcut on every block: the
    feature map has ResNet50's stride of 32 (2 x 2 at 64 px).  About
    8 000 weights instead of 23.5 million: every mechanism (BatchNorm, residual branches, precise
    BN, zero-initialised residuals, the feature map, export, resume) runs in seconds.  Never
    shipped: the replace rule judges ResNet50 candidates."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", name="conv1_conv")(inp)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, width in enumerate(widths, start=2):
        name = f"conv{stage}_block1"
        stride = 1 if stage == 2 else 2
        shortcut = layers.Conv2D(4 * width, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
        y = layers.Conv2D(width, 1, strides=stride, name=f"{name}_1_conv")(x)
        y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(y)
        y = layers.Activation("relu", name=f"{name}_1_relu")(y)
        y = layers.Conv2D(width, 3, padding="same", name=f"{name}_2_conv")(y)
        y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(y)
        y = layers.Activation("relu", name=f"{name}_2_relu")(y)
        y = layers.Conv2D(4 * width, 1, name=f"{name}_3_conv")(y)
        y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_3_bn")(y)
        x = layers.Add(name=f"{name}_add")([shortcut, y])
        x = layers.Activation("relu", name="conv5_block3_out" if stage == 5 else f"{name}_out")(x)
    return keras.Model(inp, x, name="tiny_resnet")
