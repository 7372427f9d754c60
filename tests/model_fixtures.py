"""A tiny but real model package (random weights) for tests that must not need the bundled
model: the same code path (an ONNX file verified by its card, run by ONNX Runtime), 32x32
input and the miniature trunk (``training.architecture.tiny_resnet``) to stay fast and small.

The ONNX file is exported from a Keras model by the training package's own exporter, in a
child process: TensorFlow never returns the memory of the models a process built, and the
suite's own process stays free of it.  Exports are cached per input size for the whole test
session: the graph depends only on the size and the seed, while temperature and TTA are card
fields.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CACHE: dict[int, Path] = {}
_ROOT = Path(__file__).resolve().parents[1]

EXPORT = """
import sys, keras
from training.architecture import build_model
from training.export import to_onnx
keras.utils.set_random_seed(1)
size = int(sys.argv[2])
to_onnx(build_model({"trunk": "tiny", "input_size": size, "head": "gap", "outputs": 2, "activation": "linear"}),
        size, __import__("pathlib").Path(sys.argv[1]))
"""


def _exported(size: int) -> Path:
    if size in _CACHE and _CACHE[size].is_file():
        return _CACHE[size]
    path = Path(tempfile.mkdtemp(prefix="ctviewer-tiny-onnx-")) / "model.onnx"
    done = subprocess.run([sys.executable, "-c", EXPORT, str(path), str(size)], capture_output=True, text=True,
                          cwd=_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600)
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(f"tiny model export failed: {done.stderr[-2000:]}")
    _CACHE[size] = path
    return path


def _arch(size: int) -> dict:
    return {"trunk": "tiny", "input_size": size, "head": "gap", "outputs": 2, "activation": "linear"}


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
