"""Training recipes.

``seed``    the original notebook, faithfully: ResNet50 trunk, Flatten, Dropout 0.3,
            Dense(2, sigmoid), binary cross-entropy, Adamax 1e-3, EarlyStopping on
            val_loss (patience 5, best weights restored), ModelCheckpoint.  ImageNet
            weights (frozen trunk, as in the notebook) when the Keras cache has them;
            otherwise from scratch with a trainable trunk, said loudly.
``default`` the bundled model: the same trunk and Flatten head trained from scratch
            with BatchNorm momentum 0.9 (the 0.99 default leaves the moving statistics
            far behind the weights for many epochs when training from scratch, which
            is why validation sat at chance early), AdamW with warm-up and cosine
            decay, label smoothing, augmentation before the resize, a fixed number of
            epochs (no model selection on validation data, so validation metrics stay
            honest), and horizontal-flip test-time augmentation.  Since 1.1.0 also:
            zero-initialised residual branches and gradient clipping (norm 1.0), which
            removed the loss spikes of the first epochs, mixup (alpha 0.2), and BatchNorm
            statistics recomputed on the un-augmented training slices after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .augment import DEFAULT_AUG


@dataclass
class Recipe:
    name: str
    architecture: dict
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    loss: str
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    schedule: str = "constant"  # or "cosine" (after the warm-up)
    early_stopping: bool = False
    patience: int = 5
    augmentation: dict | None = None
    mixup: float = 0.0  # Beta(alpha, alpha) mixing weight per batch; 0 = off
    zero_init_residual: bool = False  # last BN of each residual branch starts at gamma = 0 (from scratch only)
    clipnorm: float = 0.0  # clip each gradient tensor to this norm; 0 = off
    precise_bn: bool = False  # recompute BatchNorm statistics on the un-augmented training slices
    tta: list[str] = field(default_factory=list)
    imagenet: bool = False  # decided at run time for seed

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "architecture"}


def make_recipe(name: str, size: int = 80, epochs: int | None = None, imagenet_available: bool = False,
                internal_size: int | None = None, trunk: str | None = None) -> Recipe:
    recipe = _make_recipe(name, size, epochs, imagenet_available and trunk in (None, "resnet50"))
    if trunk:
        recipe.architecture["trunk"] = trunk
    if internal_size and internal_size != size:
        recipe.architecture["internal_size"] = int(internal_size)
    return recipe


def _make_recipe(name: str, size: int, epochs: int | None, imagenet_available: bool) -> Recipe:
    if name == "seed":
        arch = {
            "trunk": "resnet50",
            "input_size": size,
            "head": "flatten",
            "dropout": 0.3,
            "outputs": 2,
            "activation": "sigmoid",
            "frozen_trunk": imagenet_available,
        }
        return Recipe(
            name="seed",
            architecture=arch,
            epochs=epochs or 50,
            batch_size=32,
            optimizer="adamax",
            learning_rate=1e-3,
            loss="binary_crossentropy",
            early_stopping=True,
            imagenet=imagenet_available,
        )
    if name == "default":
        arch = {
            "trunk": "resnet50",
            "input_size": size,
            "head": "flatten",
            "dropout": 0.3,
            "outputs": 2,
            "activation": "linear",
            "bn_momentum": 0.9,
        }
        return Recipe(
            name="default",
            architecture=arch,
            epochs=epochs or 40,
            batch_size=32,
            optimizer="adamw",
            learning_rate=1e-3,
            weight_decay=0.05,
            warmup_epochs=2,
            schedule="cosine",
            loss="categorical_crossentropy",
            label_smoothing=0.1,
            augmentation=dict(DEFAULT_AUG),
            mixup=0.2,
            zero_init_residual=True,
            clipnorm=1.0,
            precise_bn=True,
            tta=["hflip"],
        )
    raise SystemExit(f"error: unknown recipe {name!r} (choose seed or default)")


def zero_init_residuals(model) -> int:
    """Set gamma = 0 in the last BatchNorm of every residual branch (``convN_blockM_3_bn``), so
    each bottleneck block starts as the identity (Goyal et al. 2017, "Accurate, Large Minibatch
    SGD"): a from-scratch ResNet50 then starts as a shallow network and trains without the loss
    spikes of its first epochs.  Returns the number of layers changed."""
    import keras

    n = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith("_3_bn") and layer.gamma is not None:
            layer.gamma.assign(keras.ops.zeros(layer.gamma.shape, dtype=layer.gamma.dtype))  # any backend
            n += 1
    return n


def all_layers(model) -> list:
    """Every layer of ``model``, nested models (the ResNet50 trunk) included."""
    out = []
    for layer in model.layers:
        out.append(layer)
        out.extend(all_layers(layer) if hasattr(layer, "layers") else [])
    return out


def compile_model(model, recipe: Recipe, steps_per_epoch: int):
    import keras

    if recipe.schedule == "cosine":
        total = max(1, recipe.epochs * steps_per_epoch)
        warm = recipe.warmup_epochs * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate * 0.01 if warm else recipe.learning_rate,
            decay_steps=max(1, total - warm),
            warmup_target=recipe.learning_rate if warm else None,
            warmup_steps=warm,
            alpha=0.0,
        )
    else:
        lr = recipe.learning_rate
    # Weight decay is decoupled (scaled by the learning rate) for both optimizers.
    wd = recipe.weight_decay or None
    clip = {"clipnorm": recipe.clipnorm} if recipe.clipnorm else {}
    if recipe.optimizer == "adamax":
        opt = keras.optimizers.Adamax(lr, weight_decay=wd, **clip)
    elif recipe.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=recipe.weight_decay, **clip)
    else:
        raise ValueError(recipe.optimizer)
    if wd:
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if recipe.loss == "binary_crossentropy":
        loss = keras.losses.BinaryCrossentropy(label_smoothing=recipe.label_smoothing)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=opt, loss=loss, metrics=metrics)
