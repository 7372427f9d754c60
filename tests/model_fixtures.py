"""A tiny but real model package (random weights) for tests that must not need the bundled
model: the same code path (an ONNX file verified by its card, run by ONNX Runtime), 32x32
input to stay fast.

The ONNX file is exported from a Keras model by the training package's own exporter, so
these fixtures need the training extra (TensorFlow).  Exports are cached per input size for
the whole test session: the graph depends only on the size and the seed, while temperature
and TTA are card fields.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_CACHE: dict[int, Path] = {}


def _exported(size: int) -> Path:
    if size in _CACHE and _CACHE[size].is_file():
        return _CACHE[size]
    import keras

    from training.architecture import build_model
    from training.export import to_onnx

    keras.utils.set_random_seed(1)
    model = build_model(_arch(size))
    path = Path(tempfile.mkdtemp(prefix="ctviewer-tiny-onnx-")) / "model.onnx"
    to_onnx(model, size, path)
    _CACHE[size] = path
    return path


def _arch(size: int) -> dict:
    return {"trunk": "resnet50", "input_size": size, "head": "gap", "outputs": 2, "activation": "linear"}


def make_model_package(folder: Path, size: int = 32, temperature: float = 1.0, tta=None) -> Path:
    from ctviewer.imaging.preprocess import PreprocessParams
    from ctviewer.inference.card import ModelCard, sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.onnx"
    shutil.copyfile(_exported(size), model)
    card = ModelCard(
        name="tiny-test-model",
        version="0.0.1",
        architecture=_arch(size),
        preprocessing=PreprocessParams(size=size).to_dict(),
        classes=["COVID", "non-COVID"],
        weights_file=model.name,
        sha256=sha256_file(model),
        temperature=temperature,
    )
    if tta:
        card.extra["tta"] = list(tta)
    card.save(folder)
    return folder
