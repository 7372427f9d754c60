"""Command line of the training package."""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a recipe on a folder of class subfolders")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a stopped run from its last finished epoch (its own arguments; give no others)")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs in total, resumable with --resume (a run sized to a session)")
    t.add_argument("--trunk", choices=["resnet50", "tiny"], default=None,
                   help="the recipe's trunk (resnet50); tiny: a miniature ResNet for tests and quick trials, never shipped")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="end training early (then evaluate as usual) so that the run ends within SECONDS")
    t.add_argument("--input", choices=["lungs", "chest"], default="lungs", dest="model_input",
                   help="the model sees the lungs only (default; preprocess.lung_view) or the chest crop (1.1.0)")
    t.add_argument("--data", nargs="+",
                   help="folder(s) with one subfolder per class; several folders = several sources")
    t.add_argument("--leave-out", default=None, metavar="SOURCE",
                   help="train without this source (a --data folder's name) and test on all of it")
    t.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these Keras weights (same architecture) instead of from scratch: fine-tuning")
    t.add_argument("--warmup-epochs", type=int, default=None, help="override the recipe's warm-up epochs")
    t.add_argument("--balance", choices=["on", "off"], default="on",
                   help="weight the loss so that classes are balanced within each source (default on)")
    t.add_argument("--out", help="output folder: weights, model-card.json, plots, report.html")
    t.add_argument("--recipe", default="default", choices=["seed", "default"])
    t.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    t.add_argument("--learning-rate", type=float, default=None, help="override the recipe's (peak) learning rate")
    t.add_argument("--mixup", type=float, default=None, help="override the recipe's mixup alpha (0 turns it off)")
    t.add_argument("--precise-bn", choices=["on", "off"], default=None,
                   help="override whether BatchNorm statistics are recomputed on the training slices after training")
    t.add_argument("--zero-init-residual", choices=["on", "off"], default=None,
                   help="override whether each residual branch's last BatchNorm starts at gamma = 0")
    t.add_argument("--clipnorm", type=float, default=None, help="override the gradient clipping norm (0 turns it off)")
    t.add_argument("--train-exclude", nargs="+", default=None, metavar="GLOB",
                   help="leave files whose name matches out of training (validation unchanged), e.g. 'CT-1_*'")
    t.add_argument("--source-weight", nargs="+", default=None, metavar="SOURCE=W",
                   help="multiply a source's share of the loss, e.g. sarscov2-dev=2 (default 1 each)")
    t.add_argument("--raster-intensity", choices=["landmarks", "none"], default="landmarks",
                   help="8-bit slices: standardised from their own landmarks (default) or taken as stored (1.1.0)")
    t.add_argument("--source-aug", choices=["on", "off"], default=None,
                   help="override whether the recipe simulates other hospitals' exports (augment.SOURCE_AUG)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--block", type=int, default=25, help="group = file number // BLOCK (0: every file its own group)")
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--cv-fold", default=None, metavar="K/N",
                   help="validate on fold K (1..N) of N-fold group cross-validation within each source, "
                        "instead of --val-fraction")
    t.add_argument("--size", type=int, default=80, help="model input size in pixels (80 for the bundled model)")
    t.add_argument("--internal-size", type=int, default=None,
                   help="upsample the input to this size inside the model (the input stays --size)")
    t.add_argument("--name", default=None)
    t.add_argument("--version", default="1.0.0")
    de = sub.add_parser("decode", help="read data folders once and save the decoded slices to one file "
                                       "(train --data FILE.npz starts at once)")
    de.add_argument("--data", required=True, nargs="+", help="folder(s) with one subfolder per class (one source each)")
    de.add_argument("--out", required=True, help="the file to write (.npz)")
    de.add_argument("--input", choices=["lungs", "chest"], default="lungs", dest="model_input")
    de.add_argument("--raster-intensity", choices=["landmarks", "none"], default="landmarks")
    de.add_argument("--size", type=int, default=80)
    de.add_argument("--block", type=int, default=25)
    de.add_argument("--max-box", type=int, default=0, metavar="PIX",
                    help="shrink each slice so its crop box is at most PIX pixels (approximate inputs; default exact)")
    e = sub.add_parser("evaluate", help="evaluate a model package on a folder of class subfolders")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True, nargs="+", help="folder(s) with one subfolder per class (one source each)")
    e.add_argument("--split", choices=["all", "validation"], default="all",
                   help="every slice, or only the slices a training run with --seed/--val-fraction held out")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--val-fraction", type=float, default=0.2)
    e.add_argument("--out", default=None, help="where to write the plots and report (default MODEL/eval-<data name>)")
    e.add_argument("--block", type=int, default=25)
    x = sub.add_parser("export", help="write a training run's ONNX model (the app's model file) and update its card")
    x.add_argument("run_dir", help="a training run's folder: model.weights.h5 and model-card.json")
    x.add_argument("--data", default=None, help="slices to measure Keras/ONNX parity on (default: ../shared/data)")
    tb = sub.add_parser("tables", help="add leave-one-source-out runs and the replaced model's numbers to a card")
    tb.add_argument("ship", help="the run that ships (trained on every source)")
    tb.add_argument("--loso", nargs="*", default=[], metavar="RUN", help="train --leave-out runs")
    tb.add_argument("--replaces", default=None, metavar="METRICS_JSON",
                    help="metrics.json of 'evaluate --split validation' for the model this one replaces")
    tb.add_argument("--replaced-card", default=None, metavar="DIR", help="that model's package (name, version, hash)")
    so = sub.add_parser("soup", help="interpolate the weights of two runs of the same model (WiSE-FT), evaluate, export")
    so.add_argument("run_a", help="a training run folder (model.weights.h5 + model-card.json): alpha 0")
    so.add_argument("run_b", help="another run of the same architecture and preprocessing: alpha 1")
    so.add_argument("--alpha", type=float, required=True, help="weight of RUN_B, between 0 and 1")
    so.add_argument("--data", required=True, nargs="+", help="the sources, as given to train (for the validation split)")
    so.add_argument("--out", required=True)
    so.add_argument("--leave-out", default=None, metavar="SOURCE", help="a leave-one-source-out fold: test on all of it")
    so.add_argument("--seed", type=int, default=0)
    so.add_argument("--val-fraction", type=float, default=0.2)
    so.add_argument("--block", type=int, default=25)
    so.add_argument("--name", default=None)
    so.add_argument("--version", default="1.0.0")
    au = sub.add_parser("audit", help="how well label-free cues (grey levels, size, format) separate the classes, per source")
    au.add_argument("--data", required=True, nargs="+", help="folder(s) with one subfolder per class (one source each)")
    au.add_argument("--out", default=None, help="also write the audit as JSON")
    au.add_argument("--block", type=int, default=25)
    au.add_argument("--raster-intensity", choices=["none", "landmarks"], default="none",
                    help="grey levels as stored (default) or after the 8-bit standardisation the model sees")
    cp = sub.add_parser("compare", help="a new model against the one it replaces, per source, with a paired bootstrap")
    cp.add_argument("old", nargs="?", help="scores.csv (or its folder) of the model in use, from train or evaluate")
    cp.add_argument("new", nargs="?", help="scores.csv (or its folder) of the candidate, on the same slices")
    cp.add_argument("--left-out", nargs=3, action="append", metavar=("SOURCE", "BUNDLED", "CANDIDATE"),
                    help="the replace rule: a left-out source, the bundled model's scores on it (or its fixed AUC "
                         "for a source it trained on) and the candidate's --leave-out run; once per source")
    cp.add_argument("--in-source", nargs="+", default=[], metavar="SCORES",
                    help="the replace rule: the candidate's validation scores (k-fold runs: one file per fold)")
    cp.add_argument("--out", default=None, help="also write the comparison as JSON")
    cp.add_argument("--bootstrap", type=int, default=2000, help="paired group resamples (default 2000)")
    sc = sub.add_parser("study-calibration",
                        help="fit the study verdict's confidence on validation pseudo-studies; store it in the card")
    sc.add_argument("--model", required=True, help="the model package (its model-card.json is updated)")
    sc.add_argument("--data", required=True, nargs="+", help="folder(s) with one subfolder per class (one source each)")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--val-fraction", type=float, default=0.2)
    sc.add_argument("--block", type=int, default=25)
    sc.add_argument("--left-out", nargs=2, action="append", default=None, metavar=("SOURCE", "SCORES"),
                    help="scores.csv of a model that never trained on SOURCE (train --leave-out, or evaluate of this "
                         "model on a source it did not train on): the verdict's reliability there caps its "
                         "confidence (card: max_confidence); once per source")
    sub.add_parser("lung-seg", help="train the lung segmenter (U-Net) on expert lung masks; write its ONNX file and card",
                   add_help=False)
    args = sys.argv[1:] if argv is None else list(argv)
    sub.add_parser("heatmaps", help="share of Grad-CAM peaks inside the lungs and the infection (expert masks)",
                   add_help=False)
    if args[:1] == ["lung-seg"]:
        from .lung_seg import main as seg_main

        return seg_main(args[1:])
    sub.add_parser("halve", help="store a model package's weights in float16 after a parity check on labelled sources",
                   add_help=False)
    if args[:1] == ["halve"]:
        from .halve import main as halve_main

        return halve_main(args[1:])
    if args[:1] == ["heatmaps"]:
        from .heatmaps import main as heatmaps_main

        return heatmaps_main(args[1:])
    a = ap.parse_args(args)
    if a.cmd == "train" and a.resume:
        from .fit import run_arguments, train

        others = [x for x in args[1:] if x not in ("--resume", a.resume, "--stop-after", str(a.stop_after))]
        if others:
            ap.error("--resume RUN_DIR takes no other arguments but --stop-after: the run continues with its own")
        train(out=a.resume, resume=True, stop_after=a.stop_after, **run_arguments(a.resume))
        return 0
    if a.cmd == "train":
        from .fit import train

        if not a.data or not a.out:
            ap.error("train needs --data and --out (or --resume RUN_DIR)")
        train(a.data, a.out, a.recipe, seed=a.seed, epochs=a.epochs, learning_rate=a.learning_rate, block=a.block,
              mixup=a.mixup, internal_size=a.internal_size, clipnorm=a.clipnorm,
              zero_init_residual=None if a.zero_init_residual is None else a.zero_init_residual == "on", precise_bn=None if a.precise_bn is None else a.precise_bn == "on",
              val_fraction=a.val_fraction, size=a.size, name=a.name, version=a.version,
              command=shlex.join(["python", "-m", "training", *args]), leave_out=a.leave_out,
              balance=a.balance == "on", init=a.init, warmup_epochs=a.warmup_epochs,
              source_aug=None if a.source_aug is None else a.source_aug == "on", train_exclude=a.train_exclude,
              source_weights=_source_weights(ap, a.source_weight),
              raster_intensity=a.raster_intensity, model_input=a.model_input, cv_fold=_cv_fold(ap, a.cv_fold),
              stop_after=a.stop_after, time_limit=a.time_limit, trunk=a.trunk)
        return 0
    if a.cmd == "decode":
        from ctviewer.imaging.preprocess import PreprocessParams

        from .decoded import SUFFIX, decode_folders

        if not a.out.endswith(SUFFIX):
            ap.error(f"decode --out must end with {SUFFIX}")
        decode_folders(a.data, a.out, PreprocessParams(size=a.size, raster_intensity=a.raster_intensity,
                                                       input=a.model_input), a.block, a.max_box)
        return 0
    if a.cmd == "tables":
        from .card_tables import attach

        attach(a.ship, a.loso, a.replaces, a.replaced_card)
        return 0
    if a.cmd == "study-calibration":
        from .study_calibration import main as study_main

        return study_main(a.model, a.data, a.seed, a.val_fraction, a.block, args,
                          left_out=[tuple(x) for x in a.left_out] if a.left_out else None)
    if a.cmd == "soup":
        from .soup import soup

        soup(a.run_a, a.run_b, a.alpha, a.data, a.out, seed=a.seed, val_fraction=a.val_fraction, block=a.block,
             leave_out=a.leave_out, name=a.name, version=a.version,
             command=shlex.join(["python", "-m", "training", *args]))
        return 0
    if a.cmd == "audit":
        from .audit import main as audit_main

        return audit_main(a.data, a.out, a.block, a.raster_intensity)
    if a.cmd == "compare":
        if a.left_out:
            from .compare import rule_main

            return rule_main(a.left_out, a.in_source, a.out, a.bootstrap)
        if not (a.old and a.new):
            ap.error("compare needs OLD and NEW scores, or --left-out ... for the replace rule")
        from .compare import main as compare_main

        return compare_main(a.old, a.new, a.out, a.bootstrap)
    if a.cmd == "export":
        from .export import main as export_main

        return export_main(a.run_dir, a.data)
    from .evaluate_cmd import evaluate_folder

    return evaluate_folder(a.model, a.data, a.out, block=a.block, split=a.split, seed=a.seed,
                           val_fraction=a.val_fraction)


def _cv_fold(ap: argparse.ArgumentParser, text: str | None) -> list[int] | None:
    """``--cv-fold K/N`` as [K - 1, N] (0-based fold, as ``dataset.group_kfold`` takes it)."""
    if text is None:
        return None
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n) and int(n) >= 2):
        ap.error(f"--cv-fold {text!r}: expected K/N with 1 <= K <= N and N >= 2, e.g. 3/5")
    return [int(k) - 1, int(n)]


def _source_weights(ap: argparse.ArgumentParser, items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not sep or not name or not w > 0:
            ap.error(f"--source-weight {item!r}: expected SOURCE=W with W > 0, e.g. sarscov2-dev=2")
        out[name] = w
    return out


if __name__ == "__main__":
    sys.exit(main())
