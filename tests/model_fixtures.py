"""A tiny but real model package (random weights) for tests that must not need
the bundled model: same code path, 32x32 input to stay fast."""

from __future__ import annotations

from pathlib import Path


def make_model_package(folder: Path, size: int = 32, temperature: float = 1.0, tta=None) -> Path:
    from ctviewer.imaging.preprocess import PreprocessParams
    from ctviewer.inference.architecture import build_model
    from ctviewer.inference.card import ModelCard, sha256_file

    import keras

    keras.utils.set_random_seed(1)
    arch = {"trunk": "resnet50", "input_size": size, "head": "gap", "outputs": 2, "activation": "linear"}
    model = build_model(arch)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.weights.h5"
    model.save_weights(weights)
    card = ModelCard(
        name="tiny-test-model",
        version="0.0.1",
        architecture=arch,
        preprocessing=PreprocessParams(size=size).to_dict(),
        classes=["COVID", "non-COVID"],
        weights_file=weights.name,
        sha256=sha256_file(weights),
        temperature=temperature,
    )
    if tta:
        card.extra["tta"] = list(tta)
    card.save(folder)
    return folder
