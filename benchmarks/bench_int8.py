"""ONNX Runtime fp32 against int8 (static QDQ quantisation, calibrated on training slices) and,
where its wheel is installed, OpenVINO (fp32 and bf16), on the same model in the same run
(issue 24, part 1).

For each runtime: ms per slice of the raw forward at batch 1 and batch 64 (2 intra-op threads,
median of --repeat), the largest |delta p(COVID)| against ONNX Runtime fp32 (softmax of the
logits over the card's temperature, no TTA) and the AUC per source.  The issue's parity budget:
|delta p| <= 0.01 and AUC within 0.002 on every source; only a runtime inside it may ship.

Data: up to --per-class slices of each class of each shared source (sarscov2-dev, ucsd, mosmed),
through the app's own reader and preprocessing; calibration: --calib other SARS-CoV-2 slices.

    .venv/bin/python benchmarks/bench_int8.py [--model DIR] [--per-class 100] [--calib 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = {"sarscov2-dev": DATA / "sarscov2-dev", "ucsd": DATA / "foreign-dev" / "ucsd",
           "mosmed": DATA / "foreign-dev" / "mosmed"}


def inputs(files, params) -> np.ndarray:
    from ctviewer.imaging.io import load_slices
    from ctviewer.imaging.preprocess import to_model_input

    return np.stack([to_model_input(load_slices(str(f))[0], params) for f in files]).astype(np.float32)


def session(path_or_bytes, threads: int = 2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path_or_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def timed(run, x: np.ndarray, repeat: int) -> tuple[float, float]:
    """ms per slice at batch 1 (median over 32 slices x repeat) and at batch 64."""
    run(x[:1])
    one = [min(_t(run, x[i:i + 1]) for _ in range(repeat)) for i in range(32)]
    b64 = x[:64] if len(x) >= 64 else np.concatenate([x] * (64 // len(x) + 1))[:64]
    run(b64)
    many = [_t(run, b64) for _ in range(repeat)]
    return statistics.median(one) * 1000, statistics.median(many) * 1000 / 64


def _t(run, x) -> float:
    t0 = time.perf_counter()
    run(x)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "resources" / "models" / "ct-resnet50"))
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    if not all(p.is_dir() for p in SOURCES.values()):
        print("bench_int8: ../shared/data is missing", file=sys.stderr)
        return 2
    card, sources, rows = runtime_rows(a.model, a.per_class, a.calib, a.repeat)
    print(f"\n{card.name} {card.version}, 2 intra-op threads, median of {a.repeat}")
    print(runtime_table(sources, rows))
    return 0


def runtime_table(sources, rows) -> str:
    """The rows of ``runtime_rows`` as a Markdown table."""
    base64 = rows[0][2]
    lines = ["| runtime | ms/slice batch 1 | ms/slice batch 64 | x fp32 (b64) | max abs dp | "
             + " | ".join(f"AUC {k}" for k in sources) + " | within budget |",
             "|---|---|---|---|---|" + "---|" * len(sources) + "---|"]
    ref_auc = rows[0][4]
    for rt, ms1, ms64, dp, aucs in rows:
        ok = dp <= 0.01 and all(abs(aucs[k] - ref_auc[k]) <= 0.002 for k in sources)
        lines.append(f"| {rt} | {ms1:.2f} | {ms64:.2f} | {base64 / ms64:.2f}x | {dp:.4f} | "
                     + " | ".join(f"{aucs[k]:.4f}" for k in sources) + f" | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def runtime_rows(model_dir, per_class: int = 100, calib_n: int = 128, repeat: int = 5):
    """(card, source names, [(runtime, ms/slice b1, ms/slice b64, max |dp| vs ORT fp32, {source: AUC})])."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sklearn.metrics import roc_auc_score

    from ctviewer.inference import load_classifier

    clf = load_classifier(model_dir)
    card, params = clf.card, clf.params
    pos = card.classes.index(card.positive_class)
    t0 = time.time()
    sets, calib_files = {}, []
    for name, root in SOURCES.items():
        xs, ys = [], []
        for k, cls in enumerate(card.classes):
            files = sorted((root / cls).glob("*"))
            step = max(1, len(files) // per_class)
            chosen = files[::step][:per_class]
            xs.append(inputs(chosen, params))
            ys += [int(k == pos)] * len(chosen)
            if name == "sarscov2-dev":
                calib_files += [f for f in files if f not in set(chosen)][: calib_n // 2]
        sets[name] = (np.concatenate(xs), np.array(ys))
    calib = inputs(calib_files, params)
    print(f"data: {', '.join(f'{k} {len(v[1])}' for k, v in sets.items())} slices; calibration {len(calib)} "
          f"SARS-CoV-2 slices not among them ({time.time() - t0:.0f} s)", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp())
    # The shipped file stores its weights in float16 behind Casts (training halve): ONNX Runtime's
    # basic optimisation folds them, which gives the float32 graph the quantiser and OpenVINO take.
    import onnxruntime as ort

    fold = ort.SessionOptions()
    fold.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    fold.optimized_model_filepath = str(tmp / "fp32.onnx")
    ort.InferenceSession(str(Path(model_dir) / card.weights_file), sess_options=fold,
                         providers=["CPUExecutionProvider"])
    model = tmp / "fp32.onnx"
    quant_pre_process(str(model), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    name_in = session(str(model)).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name_in: calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    t0 = time.time()
    quantize_static(str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    print(f"int8 QDQ model written ({(tmp / 'int8.onnx').stat().st_size >> 20} MB, {time.time() - t0:.0f} s)",
          file=sys.stderr)

    runtimes = {}
    fp32 = session(str(Path(model_dir) / card.weights_file))  # the shipped file
    runtimes["ORT fp32"] = lambda x: fp32.run(["logits"], {name_in: x})[0]
    int8 = session(str(tmp / "int8.onnx"))
    runtimes["ORT int8 (QDQ)"] = lambda x: int8.run(["logits"], {name_in: x})[0]
    try:
        import openvino as ov

        core = ov.Core()
        for precision in ("f32", "bf16"):
            compiled = core.compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "INFERENCE_NUM_THREADS": 2})
            out = compiled.output("logits")
            runtimes[f"OpenVINO {precision}"] = (lambda c, o: lambda x: c(x)[o])(compiled, out)
    except ImportError:
        print("OpenVINO is not installed: not measured", file=sys.stderr)

    def p_covid(logits):
        z = logits / float(card.temperature or 1.0)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True))[:, pos]

    ref = {k: p_covid(runtimes["ORT fp32"](x)) for k, (x, _y) in sets.items()}
    rows = []
    everything = np.concatenate([x for x, _y in sets.values()])
    for rt, run in runtimes.items():
        ms1, ms64 = timed(run, everything, repeat)
        dp = max(float(np.max(np.abs(p_covid(run(x)) - ref[k]))) for k, (x, _y) in sets.items())
        aucs = {k: roc_auc_score(y, p_covid(run(x))) for k, (x, y) in sets.items()}
        rows.append((rt, ms1, ms64, dp, aucs))
    return card, list(sets), rows


if __name__ == "__main__":
    sys.exit(main())
