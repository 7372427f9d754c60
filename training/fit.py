"""``python -m training train``: fit a recipe, calibrate, evaluate, write the model package."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ctviewer.imaging.preprocess import PreprocessParams
from ctviewer.inference.calibration import covid_score, fit_temperature, sigmoid
from ctviewer.inference.card import ModelCard, sha256_file

from . import evaluate
from .compare import SCORES, write_scores
from .dataset import (balance_weights, decode_all, discover, exclude_from_training, positive_class,
                      preprocessing_block, source_split)
from .decoded import DecodedFileError, is_decoded_file
from .decoded import load as load_decoded
from .keras_model import KERAS_WEIGHTS as WEIGHTS
from .recipes import all_layers, compile_model, make_recipe, zero_init_residuals

LEFT_OUT_SCORES = "scores-left-out.csv"  # a --leave-out run's scores on all of the left-out source (compare --left-out)
SOURCE_LICENCES = {  # by data folder name: what a model trained on that source carries
    "ucsd": "UCSD-AI4H COVID-CT (Zhao et al. 2020, arXiv:2003.13865), research use",
    "mosmed": "MosMedData (Morozov et al. 2020, arXiv:2005.06465), CC BY-NC-ND 3.0",
}
LICENCE_NOTE = (
    "Trained on the SARS-CoV-2 CT-scan dataset (Soares et al., medRxiv 2020, doi:10.1101/2020.04.24.20078584), "
    "CC BY-NC-SA 4.0: non-commercial use only, cite the dataset; the weights carry that licence."
)


def log(*args, **kw):
    kw.setdefault("file", sys.stderr)
    print(*args, **kw, flush=True)


def set_determinism(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


class EpochLog:
    """One line per epoch on stderr."""

    def __new__(cls, total: int):
        import keras

        class _Cb(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = [f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
                log(f"epoch {epoch + 1:3d}/{total}  " + "  ".join(parts) + f"  ({time.time() - self.t0:.0f} s)")

        return _Cb()


def train(data: str | list[str], out: str, recipe_name: str = "default", seed: int = 0, epochs: int | None = None,
          learning_rate: float | None = None, mixup: float | None = None, precise_bn: bool | None = None,
          internal_size: int | None = None, zero_init_residual: bool | None = None, clipnorm: float | None = None,
          block: int = 25, val_fraction: float = 0.2, size: int = 80, name: str | None = None,
          version: str = "1.0.0", command: str | None = None, leave_out: str | None = None,
          balance: bool = True, init: str | None = None, warmup_epochs: int | None = None,
          source_aug: bool | None = None, train_exclude: list[str] | None = None,
          source_weights: dict[str, float] | None = None, raster_intensity: str = "landmarks",
          model_input: str = "lungs", cv_fold: tuple[int, int] | None = None, resume: bool = False,
          stop_after: int | None = None, time_limit: float | None = None, trunk: str | None = None) -> dict:
    import keras

    from .architecture import build_model, cached_imagenet_weights

    t_start = time.time()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:  # everything a resume needs to rebuild the same run
        run_args = {k: v for k, v in locals().items() if k in RUN_ARGS}
        _write_json(out_dir / RUN_FILE, run_args)
    set_determinism(seed)
    imagenet = cached_imagenet_weights() is not None
    recipe = make_recipe(recipe_name, size=size, epochs=epochs, imagenet_available=imagenet,
                         internal_size=internal_size, trunk=trunk)
    if learning_rate:
        recipe.learning_rate = learning_rate
    if mixup is not None:
        recipe.mixup = mixup
    if precise_bn is not None:
        recipe.precise_bn = precise_bn
    if zero_init_residual is not None:
        recipe.zero_init_residual = zero_init_residual
    if clipnorm is not None:
        recipe.clipnorm = clipnorm
    if warmup_epochs is not None:
        recipe.warmup_epochs = warmup_epochs
    if source_aug is False and recipe.augmentation:
        recipe.augmentation = {k: v for k, v in recipe.augmentation.items() if k != "source"}
    init_sha = None
    if init:  # fine-tuning: start from a trained model's weights (same architecture)
        if not Path(init).is_file():
            raise SystemExit(f"error: --init {init}: no such weights file")
        init_sha = sha256_file(init)
        recipe.zero_init_residual = False  # would erase the loaded residual branches
    if recipe_name == "seed" and not imagenet:
        log("note: no ImageNet ResNet50 weights in the Keras cache (~/.keras/models); the seed recipe trains "
            "its trunk from scratch (a frozen random trunk could not learn). Results differ from the notebook's.")
    params = PreprocessParams(size=size, raster_intensity=raster_intensity, input=model_input)

    data_dirs = [data] if isinstance(data, str) else list(data)
    dec, decoded_from = None, None
    if is_decoded_file(data_dirs):  # python -m training decode: the same images, decoded once
        try:
            ds, dec, meta = load_decoded(data_dirs[0], preprocessing_block(params), block)
        except DecodedFileError as exc:
            raise SystemExit(f"error: --data {exc}") from None
        log(f"data: {len(dec.images)} decoded slices from {data_dirs[0]} (decoded from {', '.join(meta['data'])})")
        decoded_from = {"file": Path(data_dirs[0]).name, "data": meta["data"], "max_box": meta.get("max_box", 0)}
        if decoded_from["max_box"]:
            log(f"  its images were shrunk to boxes of at most {decoded_from['max_box']} px: augmented training "
                "inputs approximate the full-resolution ones; validation and test inputs are exact")
    else:
        ds = discover(data_dirs, block=block)
    pos = positive_class(ds.classes)
    classes = ds.classes
    for src in ds.source_names:
        m = ds.sources == src
        log(f"data: {src}: {m.sum()} slices in {len(np.unique(ds.groups[m]))} groups; "
            + ", ".join(f"{c} {int(np.sum(ds.labels[m] == i))}" for i, c in enumerate(classes)))
    if leave_out is not None and leave_out not in ds.source_names:
        raise SystemExit(f"error: --leave-out {leave_out!r} is not one of the sources {ds.source_names}")
    if dec is None:
        dec = decode_all(ds, params, log=log)
    labels, groups, sources = ds.labels[dec.keep], ds.groups[dec.keep], ds.sources[dec.keep]
    cv = tuple(cv_fold) if cv_fold else None
    tr, va = source_split(sources, groups, labels, val_fraction, seed, cv=cv)
    if cv:
        log(f"cross-validation fold {cv[0] + 1} of {cv[1]}: every source's groups in {cv[1]} folds, this one validates")
    kept_paths = [ds.paths[i] for i in dec.keep]
    if train_exclude:
        before = len(tr)
        tr = exclude_from_training(kept_paths, tr, list(train_exclude))
        log(f"--train-exclude {' '.join(train_exclude)}: {before - len(tr)} training slices left out (validation unchanged)")
    held_out = np.zeros(0, np.int64)
    if leave_out is not None:  # the left-out source is never trained on: all of it is a test set
        held_out = np.flatnonzero(sources == leave_out)
        tr, va = tr[sources[tr] != leave_out], va[sources[va] != leave_out]
    log(f"split by group within each source: {len(tr)} training, {len(va)} validation slices "
        f"({len(np.unique(groups[va]))} groups held out)" + (f"; {len(held_out)} slices of {leave_out} left out" if leave_out else ""))

    from .augment import SliceBatches

    pick = lambda idx: ([dec.images[i] for i in idx], dec.boxes[idx], labels[idx])  # noqa: E731
    weights = None
    if balance or source_weights:
        try:
            weights = balance_weights(sources[tr], labels[tr], balance, source_weights)
        except ValueError as exc:
            raise SystemExit(f"error: --source-weight: {exc}") from None
    aug = recipe.augmentation
    if aug and params.input == "lungs":
        aug = {**aug, "blank": True}  # blanked pixels stay 0 through intensity augmentation
    train_seq = SliceBatches(*pick(tr), size, recipe.batch_size, aug=aug, seed=seed, shuffle=True,
                             mixup=recipe.mixup, weights=weights)
    val_seq = SliceBatches(*pick(va), size, 64, plain=dec.inputs(va, size))

    model = build_model(recipe.architecture, imagenet=recipe.imagenet)
    if init:
        try:
            model.load_weights(init)
        except Exception as exc:  # noqa: BLE001 - a file of another architecture
            raise SystemExit(f"error: --init {init} does not fit the recipe's architecture: {exc}") from None
        log(f"initialised from {Path(init).name} (SHA-256 {init_sha[:12]}…)")
    if recipe.zero_init_residual and not recipe.imagenet:
        log(f"zero-initialised the last BatchNorm of {zero_init_residuals(model)} residual branches")
    compile_model(model, recipe, len(train_seq))
    callbacks = [EpochLog(recipe.epochs)]
    if recipe.early_stopping:
        callbacks += [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=recipe.patience, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoint.weights.h5"), monitor="val_loss",
                                            save_best_only=True, save_weights_only=True),
        ]
    log(f"training recipe '{recipe.name}' for up to {recipe.epochs} epochs, batch {recipe.batch_size}")
    t_fit = time.time()
    state = {"epoch": 0, "history": {}, "fit_seconds": 0.0}
    if resume:
        state = resume_state(model, out_dir)
        train_seq.epoch = state["epoch"]
        train_seq.order = train_seq._order()
        log(f"resumed {out_dir} after epoch {state['epoch']}/{recipe.epochs} (weights, optimizer and schedule restored)")
    callbacks.append(EpochCheckpoint(out_dir, state))
    if stop_after:
        callbacks.append(StopAfter(stop_after))
    time_stop = {}
    if time_limit:
        callbacks.append(TimeLimit(t_start, time_limit, time_stop))
    # shuffle=False: SliceBatches shuffles by (seed, epoch) itself; Keras' own shuffle would reorder
    # the batches with the process's global NumPy state, which a resumed run cannot restore.
    hist = model.fit(train_seq, validation_data=val_seq, epochs=recipe.epochs, callbacks=callbacks, verbose=0,
                     initial_epoch=state["epoch"], shuffle=False)
    fit_seconds = state["fit_seconds"] + time.time() - t_fit
    done = json.loads((out_dir / LAST_STATE).read_text(encoding="utf-8"))["epoch"] if (out_dir / LAST_STATE).is_file() else 0
    if stop_after and done < recipe.epochs:
        log(f"stopped after epoch {done}/{recipe.epochs} as asked (--stop-after); continue with: "
            f"python -m training train --resume {out_dir}")
        return {"stopped_after": done}
    history = {k: list(state["history"].get(k, [])) + [float(v) for v in vals] for k, vals in hist.history.items()}
    precise_bn_report = None
    if recipe.precise_bn:
        t_bn = time.time()
        x_val, y_val = val_seq.inputs(), labels[va]
        before = _quick_metrics(model, x_val, y_val, classes.index(pos))
        recalibrate_batchnorm(model, dec.inputs(tr, size))
        after = _quick_metrics(model, x_val, y_val, classes.index(pos))
        precise_bn_report = {"before": before, "after": after}
        log(f"BatchNorm statistics recomputed on {len(tr)} un-augmented training slices ({time.time() - t_bn:.0f} s); "
            f"validation without TTA: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
            f"AUC {before['roc_auc']:.3f} -> {after['roc_auc']:.3f}")

    weights = out_dir / WEIGHTS
    save_plain_weights(model, recipe.architecture, weights)
    (out_dir / "checkpoint.weights.h5").unlink(missing_ok=True)
    (out_dir / LAST_WEIGHTS).unlink(missing_ok=True)
    (out_dir / LAST_STATE).unlink(missing_ok=True)

    # Calibrate and evaluate on the held-out groups with the app's own prediction path.
    card = ModelCard(
        name=name or f"ct-resnet50-{recipe.name}",
        version=version,
        architecture=recipe.architecture,
        preprocessing=preprocessing_block(params),
        classes=classes,
        positive_class=pos,
        weights_file=WEIGHTS,
        sha256=sha256_file(weights),
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        licence=licence_note(ds.source_names if leave_out is None else [n for n in ds.source_names if n != leave_out]),
    )
    card.extra["tta"] = recipe.tta
    from .keras_model import KerasClassifier

    y, p_raw, p_cal, metrics = calibrate_and_measure(
        KerasClassifier(card, model, out_dir), out_dir, kept_paths, lambda idx: dec.inputs(idx, size), va, held_out, leave_out, labels, groups,
        sources, classes.index(pos), size)
    temperature = card.temperature
    card.training = {
        "recipe": recipe.name,
        "command": command,
        "recipe_settings": recipe.describe(),
        "data": (decoded_from["data"] if decoded_from else os.path.abspath(data_dirs[0]) if len(data_dirs) == 1
                 else [os.path.abspath(d) for d in data_dirs]),
        "sources": {src: {c: int(np.sum((labels == i) & (sources == src))) for i, c in enumerate(classes)}
                    for src in ds.source_names},
        "left_out": leave_out,
        "init": None if not init else {"file": Path(init).name, "sha256": init_sha},
        "class_balance": "within each source" if balance else "none",
        "source_weights": dict(source_weights or {}),
        "train_exclude": list(train_exclude or []),
        "classes": {c: int(np.sum(labels == i)) for i, c in enumerate(classes)},
        "split": {"grouping": f"class/(file number // {block})", "val_fraction": None if cv else val_fraction,
                  "cv_fold": None if not cv else {"fold": cv[0] + 1, "of": cv[1]}, "seed": seed,
                  "train_slices": int(len(tr)), "val_slices": int(len(va)),
                  "val_groups": sorted(np.unique(groups[va]).tolist())},
        "epochs_run": len(history.get("loss", [])),
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "imagenet_weights": recipe.imagenet,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "history": history,
    }
    if precise_bn_report:
        card.training["precise_bn"] = precise_bn_report
    if time_stop:
        card.training["time_limit"] = time_stop
    if decoded_from:
        card.training["decoded"] = decoded_from
    card.limitations = [
        ("Trained on about 120 patients from hospitals in Sao Paulo, Brazil; performance on other hospitals, "
         "scanners, countries and DICOM series is not measured and is expected to be lower.")
        if len(ds.source_names) == 1 else
        (f"Trained on {len(ds.source_names)} sources ({', '.join(ds.source_names)}): 8-bit slices only, no DICOM "
         "study; other hospitals are measured by leaving one source out (metrics.leave_one_source_out), "
         "and a hospital unlike all of them may see lower numbers."),
        "non-COVID slices come from patients with other lung findings, not healthy controls.",
        "Validation groups are blocks of consecutive file numbers, an approximation of patients: some patients "
        "may straddle a block boundary, which makes validation numbers optimistic.",
        "A slice-level second opinion, not a diagnosis; slices without lung (neck, abdomen) get meaningless scores.",
        "The temperature is fitted on the same validation data that the metrics are reported on.",
    ]
    card.save(out_dir)
    figures = evaluate.write_plots(out_dir, y, p_raw, p_cal, classes, pos, history)
    rep = evaluate.text_report(y, p_cal, classes, pos)
    (out_dir / "classification_report.txt").write_text(rep, encoding="utf-8")
    evaluate.write_html(out_dir, f"{card.title}: validation report", metrics, figures, rep, [
        f"Recipe {recipe.name}, {card.training['epochs_run']} epochs, {fit_seconds / 60:.1f} min training, seed {seed}.",
        f"Validation: {len(va)} slices in {metrics['n_groups']} held-out groups of {block} consecutive file numbers.",
        f"Temperature {temperature:.3f} fitted on validation; ECE {metrics['ece_before']:.3f} -> {metrics['ece_after']:.3f}.",
    ])
    from .export import export_run, onnx_export_unavailable

    why = onnx_export_unavailable()
    if why:  # e.g. trained on an accelerator machine with the JAX backend and no TensorFlow
        log(f"no ONNX export here ({why}); the run is complete otherwise: export it where TensorFlow is "
            f"installed with: python -m training export {out_dir}")
        return card.to_dict()
    card = export_run(out_dir)  # the app's model file: ONNX, parity with Keras measured on real slices
    log(summary_text(card))
    return card.to_dict()


def calibrate_and_measure(clf, out_dir: Path, paths: list[str], inputs, va: np.ndarray, held_out: np.ndarray,
                          leave_out: str | None, labels, groups, sources, pos: int, size: int):
    """Fit the temperature on the validation slices and put the metrics (overall, per source,
    and on all of a left-out source) into ``clf.card``; write ``scores.csv``.  Shared by
    ``train`` and ``soup``; ``inputs(idx)`` gives the un-augmented inputs of those slices
    (``Decoded.inputs``).  Returns (y, p_raw, p_cal, validation metrics)."""
    card = clf.card
    y = (labels[va] == pos).astype(int)
    scores = clf.raw_scores(inputs(va))
    temperature = fit_temperature(scores, y)
    p_raw, p_cal = sigmoid(scores), sigmoid(scores / temperature)
    metrics = evaluate.summarise(y, p_raw, p_cal, groups[va])
    metrics["temperature"] = temperature
    card.temperature = temperature
    card.metrics = {"validation": metrics,
                    "per_source": evaluate.per_source(y, p_raw, p_cal, groups[va], sources[va])}
    if leave_out is not None:
        y_out = (labels[held_out] == pos).astype(int)
        s_out = clf.raw_scores(inputs(held_out))
        card.metrics["left_out"] = {leave_out: evaluate.summarise(
            y_out, sigmoid(s_out), sigmoid(s_out / temperature), groups[held_out])}
        write_scores(out_dir / LEFT_OUT_SCORES, [paths[i] for i in held_out], sources[held_out], groups[held_out],
                     y_out, sigmoid(s_out), sigmoid(s_out / temperature))
    write_scores(out_dir / SCORES, [paths[i] for i in va], sources[va], groups[va], y, p_raw, p_cal)
    for src, m in card.metrics["per_source"].items():
        log(f"validation {src}: {m['n_slices']} slices, accuracy {m['accuracy']:.3f}, AUC {m['roc_auc']:.3f}, "
            f"sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}, ECE {m['ece_after']:.3f}")
    for src, m in card.metrics.get("left_out", {}).items():
        log(f"left out {src}: {m['n_slices']} slices, accuracy {m['accuracy']:.3f}, AUC {m['roc_auc']:.3f}, "
            f"sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}, ECE {m['ece_after']:.3f}")
    return y, p_raw, p_cal, metrics


RUN_FILE = "run.json"  # train()'s arguments, written when a run starts: what --resume rebuilds the run from
RUN_ARGS = ("data", "recipe_name", "seed", "epochs", "learning_rate", "mixup", "precise_bn", "internal_size",
            "zero_init_residual", "clipnorm", "block", "val_fraction", "size", "name", "version", "command",
            "leave_out", "balance", "init", "warmup_epochs", "source_aug", "train_exclude", "source_weights",
            "raster_intensity", "model_input", "cv_fold", "trunk")
LAST_WEIGHTS = "last-epoch.weights.h5"  # the compiled model after the last finished epoch: weights + optimizer
LAST_STATE = "last-epoch.json"  # that epoch's number, the history so far, the training time so far


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_arguments(run_dir: str | Path) -> dict:
    """The arguments a run was started with (``run.json``), for ``train --resume``."""
    path = Path(run_dir) / RUN_FILE
    if not (Path(run_dir) / LAST_STATE).is_file() or not path.is_file():
        raise SystemExit(f"error: --resume {run_dir}: not a training run with a finished epoch "
                         f"(no {RUN_FILE} and {LAST_STATE})")
    try:
        args = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --resume {run_dir}: {RUN_FILE} unreadable: {exc}") from None
    unknown = set(args) - set(RUN_ARGS)
    if unknown:
        raise SystemExit(f"error: --resume {run_dir}: {RUN_FILE} has unknown arguments {sorted(unknown)}")
    return args


def resume_state(model, out_dir: Path) -> dict:
    """Load the last finished epoch into the compiled ``model``: weights, the optimizer's
    moments and iteration count (so the learning-rate schedule goes on where it stopped) and the
    dropout layers' random state; returns the epoch number, history and training time so far."""
    state = json.loads((out_dir / LAST_STATE).read_text(encoding="utf-8"))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(out_dir / LAST_WEIGHTS)
    _set_seed_states(model, state.get("seed_states", []))
    return state


def _seed_generators(model) -> list:
    from .recipes import all_layers

    gens = []
    for layer in all_layers(model):
        gens.extend(getattr(layer, "_seed_generators", []) or [])
    return gens


def _set_seed_states(model, states: list) -> None:
    gens = _seed_generators(model)
    if len(states) != len(gens):
        return
    for g, v in zip(gens, states):
        g.state.assign(np.asarray(v, dtype=g.state.dtype))


class EpochCheckpoint:
    """After every epoch: the compiled model (weights and optimizer state) and a small JSON with
    the epoch number, the history and the dropout layers' random state, each replaced
    atomically (the JSON last): a run stopped by a crash or the end of a session resumes from
    its last finished epoch (``train --resume RUN_DIR``) and ends as an uninterrupted run would."""

    def __new__(cls, out_dir: Path, state: dict):
        import keras

        t_start = time.time()
        history = {k: list(v) for k, v in state.get("history", {}).items()}

        class _Cb(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                for k, v in (logs or {}).items():
                    history.setdefault(k, []).append(float(v))
                path = out_dir / LAST_WEIGHTS
                tmp = path.with_name(path.name + ".tmp.weights.h5")
                self.model.save_weights(tmp)
                os.replace(tmp, path)
                seeds = [np.asarray(g.state).tolist() for g in _seed_generators(self.model)]
                _write_json(out_dir / LAST_STATE, {
                    "epoch": epoch + 1, "history": history, "seed_states": seeds,
                    "fit_seconds": float(state.get("fit_seconds", 0.0)) + time.time() - t_start})

        return _Cb()


class StopAfter:
    """Stop training once ``epoch`` epochs are done (after their checkpoint): a run sized to a session."""

    def __new__(cls, epoch: int):
        import keras

        class _Cb(keras.callbacks.Callback):
            def on_epoch_end(self, e, logs=None):
                if e + 1 >= epoch:
                    self.model.stop_training = True

        return _Cb()


class TimeLimit:
    """``--time-limit SECONDS``: end training after the epoch past which the next one would not
    finish within SECONDS of the run's start (with a reserve of one and a half epochs for the
    evaluation that follows).  The run then ends as a finished one, with fewer epochs than its
    schedule planned (the learning rate not annealed to its end): the card records it."""

    def __new__(cls, t_start: float, limit: float, record: dict):
        import keras

        class _Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t_fit = time.time()
                self.done = 0

            def on_epoch_end(self, epoch, logs=None):
                now = time.time()
                self.done += 1
                per_epoch = (now - self.t_fit) / self.done
                if now - t_start + 2.5 * per_epoch > limit and epoch + 1 < self.params.get("epochs", epoch + 2):
                    self.model.stop_training = True
                    record.update({"seconds": limit, "stopped_after_epoch": epoch + 1,
                                   "planned_epochs": int(self.params.get("epochs", 0))})
                    log(f"--time-limit {limit:.0f} s: stopping after epoch {epoch + 1} "
                        f"({per_epoch:.1f} s per epoch, {now - t_start:.0f} s since the start)")

        return _Cb()


def licence_note(sources: list[str]) -> str:
    extra = [SOURCE_LICENCES[k] for k in SOURCE_LICENCES if any(n.lower().startswith(k) for n in sources)]
    if not extra:
        return LICENCE_NOTE
    return LICENCE_NOTE + " Also trained on " + "; ".join(extra) + ": the most restrictive terms apply (non-commercial)."


def recalibrate_batchnorm(model, x: np.ndarray, batch_size: int = 128) -> None:
    """Precise BatchNorm (Wu & Johnson 2021): replace every BN layer's moving mean and variance by
    the average of its batch statistics over ``x`` (the un-augmented training slices).

    The moving averages kept during training follow the last ten or so augmented batches of a
    changing network; inference sees un-augmented slices.  In training mode a BN layer normalises
    with the batch's own statistics, so its inputs do not depend on the other layers' moving
    statistics, and one pass with momentum ``(k - 1) / k`` on the k-th batch leaves each layer
    with the plain mean of the batch statistics.  Only BN statistics change; no weight is trained.
    """
    import keras

    bns = [l for l in all_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    if not bns:
        return
    saved = [l.momentum for l in bns]
    try:
        for k, start in enumerate(range(0, len(x), batch_size), start=1):
            for l in bns:
                l.momentum = (k - 1) / k
            model(x[start:start + batch_size], training=True)  # dropout sits after the last BN: harmless
    finally:
        for l, m in zip(bns, saved):
            l.momentum = m


def _quick_metrics(model, x: np.ndarray, labels: np.ndarray, pos: int) -> dict:
    """Accuracy and ROC AUC of the raw model (no TTA, no temperature), for ablations in the log."""
    from sklearn.metrics import roc_auc_score

    out = np.concatenate([np.asarray(model(x[i:i + 128], training=False)) for i in range(0, len(x), 128)])
    y = (labels == pos).astype(int)
    score = out[:, pos] - out[:, 1 - pos]
    auc = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")
    return {"accuracy": float(np.mean((score >= 0) == y)), "roc_auc": auc}


def save_plain_weights(model, architecture: dict, path: Path) -> None:
    """The model's weights only: Keras 3 ``save_weights`` on a compiled model also writes the
    optimizer's state (twice the model's size with Adam-type optimizers), which inference never needs."""
    from .architecture import build_model

    plain = build_model(architecture, imagenet=False)
    plain.set_weights(model.get_weights())
    plain.save_weights(path)


def summary_text(card: ModelCard) -> str:
    m = card.metrics["validation"]
    ci = m["ci95"]
    lines = [f"\n{card.title} written; validation on {m['n_slices']} slices / {m['n_groups']} groups:"]
    for k in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        lo, hi = ci.get(k, [float("nan")] * 2)
        lines.append(f"  {k:12s} {m[k]:.3f}  (95% {lo:.3f}-{hi:.3f})")
    lines.append(f"  ECE {m['ece_before']:.3f} -> {m['ece_after']:.3f} with temperature {m['temperature']:.3f}")
    lines.append(f"  training time {card.training['fit_seconds'] / 60:.1f} min, {card.training['epochs_run']} epochs")
    return "\n".join(lines)


def dump(d: dict) -> str:
    return json.dumps(d, indent=2)
