"""The app's own reader of ONNX initializers (``ctviewer.inference.onnx_weights``) against the
``onnx`` package (a training dependency), on float32, float16 and non-raw encodings, and on
malformed bytes (ValueError, never an IndexError or a hang)."""

from __future__ import annotations

import numpy as np
import pytest

from ctviewer.inference.onnx_weights import float_initializers

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(tensors) -> bytes:
    graph = helper.make_graph([], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              initializer=tensors)
    return helper.make_model(graph).SerializeToString()


def test_reads_what_the_onnx_package_reads():
    rng = np.random.default_rng(0)
    k32 = rng.normal(size=(7, 2)).astype(np.float32)
    k16 = rng.normal(size=(3, 4, 2)).astype(np.float16)
    k64 = rng.normal(size=(5,)).astype(np.float64)
    ints = numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "ints")
    tensors = [numpy_helper.from_array(k32, "k32"), numpy_helper.from_array(k16, "k16"),
               numpy_helper.from_array(k64, "k64"), ints,
               # not raw: float_data, and float16 bits in int32_data
               helper.make_tensor("fd", TensorProto.FLOAT, [2, 2], [1.5, -2.0, 3.25, 0.0]),
               helper.make_tensor("hd", TensorProto.FLOAT16, [3], [1, -2, 0.5])]
    data = _model(tensors)
    got = float_initializers(data)
    assert set(got) == {"k32", "k16", "k64", "fd", "hd"}  # the int64 tensor is not a float
    assert np.array_equal(got["k32"], k32) and got["k32"].dtype == np.float32
    assert np.array_equal(got["k16"], k16) and got["k16"].dtype == np.float16
    assert np.array_equal(got["k64"], k64)
    assert np.array_equal(got["fd"], [[1.5, -2.0], [3.25, 0.0]])
    assert np.array_equal(got["hd"], np.array([1, -2, 0.5], np.float16))
    assert set(float_initializers(data, rank=2)) == {"k32", "fd"}
    for name, arr in got.items():
        ref = numpy_helper.to_array(next(t for t in onnx.load_from_string(data).graph.initializer if t.name == name))
        assert np.array_equal(arr, ref), name


def test_the_bundled_models_dense_kernel_matches_onnx():
    from ctviewer.inference.model import _dense_kernel
    from ctviewer.paths import resources_dir

    data = (resources_dir() / "models" / "ct-resnet50" / "model.onnx").read_bytes()
    model = onnx.load_from_string(data)
    ref = [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) == 2 and 2 in tuple(t.dims)]
    assert len(ref) == 1
    assert np.array_equal(_dense_kernel(data, "model.onnx"), ref[0].astype(np.float64))


@pytest.mark.parametrize("cut", [1, 5, 17, 100, 300])
def test_truncated_or_garbage_bytes_raise_value_error(cut):
    data = _model([numpy_helper.from_array(np.ones((40, 2), np.float32), "k")])
    assert len(data) > cut + 40
    with pytest.raises(ValueError):
        float_initializers(data[:-cut])
    rng = np.random.default_rng(cut)
    for _ in range(200):  # random bytes: a clean ValueError or some (meaningless) result, nothing else
        try:
            float_initializers(rng.integers(0, 256, cut + 8, dtype=np.uint8).tobytes())
        except ValueError:
            pass
    with pytest.raises(ValueError):
        float_initializers(b"\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # an 11-byte varint
