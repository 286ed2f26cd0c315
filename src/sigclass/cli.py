"""The ``sigclass`` command line: a thin layer over the Python API.

Configuration flows one way: dataclass defaults, then ``--config FILE`` (YAML), then flags
(``--set key=value`` reaches any key). ``sigclass COMMAND --help`` documents every option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .config import HEADS, MODES, RunConfig, load_config
from .data.views import TTA_CHOICES
from .exceptions import ConfigError, SigclassError

logger = logging.getLogger("sigclass")

# (flags, config key, argparse options) of the options shared by train, compare and tune.
RUN_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--mode",), "mode", {"choices": MODES, "help": "training mode (default: headless)"}),
    (("--model",), "model", {"help": "network name (see `sigclass networks`); default per mode"}),
    (("--epochs",), "train.epochs", {"type": int, "help": "training epochs (default: auto, from "
                                                 "a number of optimisation steps, capped by --max-minutes)"}),
    (("--batch-size",), "train.batch_size", {"type": int, "help": "batch size (default: auto, 32 or fewer so an epoch has 4 steps)"}),
    (("--lr",), "train.lr", {"type": float, "help": "peak learning rate of the head (default: 1e-3)"}),
    (("--max-minutes",), "train.max_minutes", {"type": float, "help": "training budget per model in minutes "
                                                     "(default with auto epochs: 2 for signals, 5 for images)"}),
    (("--class-weights",), "train.class_weights", {"action": "store_true", "help": "classes weigh "
                                                 "equally: loss (networks) or head (headless) weighted "
                                                 "by inverse class frequency (default: only when the "
                                                 "largest class has over 1.5x the smallest)"}),
    (("--patience",), "train.patience", {"type": int, "help": "early-stopping patience in epochs "
                                                 "(default: a quarter of the planned epochs)"}),
    (("--image-size",), "image_size", {"type": int, "help": "square input size (default: the network's)"}),
    (("--resize",), "resize", {"choices": ("center_crop", "squash", "letterbox"),
                               "help": "center_crop as in pretraining, squash the whole image, or "
                                       "letterbox (pad to a square, then resize)"}),
    (("--tta",), "tta", {"nargs": "?", "const": "hflip", "choices": TTA_CHOICES,
                         "help": "test-time views averaged: none, hflip (the mirror; plain --tta), "
                                 "flips (four flips), dihedral (flips and quarter turns) or auto "
                                 "(default: headless picks none/hflip/flips by cross-validation, "
                                 "networks none)"}),
    (("--pooling",), "pooling", {"choices": ("auto", "final", "stages"),
                                 "help": "headless features: final (mean of the last map), stages "
                                         "(mean and max of the last stages too) or auto (default: "
                                         "stages where the backbone has them)"}),
    (("--head",), "head", {"choices": HEADS, "help": "classic ML head of headless mode (default: auto, logreg; ridge above 5,000 features)"}),
    (("--weights",), "weights", {"help": "local .safetensors/.pth weights for the network"}),
    (("--masks",), "masks", {"help": "images: folder of mask files mirroring the data "
                             "(<class>/<stem>.png, white = area blanked while training)"}),
    (("--cam-examples",), "cam_examples", {"type": int, "help": "maps of this many best and worst test "
                                           "predictions in the run's cam/ folder (default: 4; 0: off)"}),
    (("--no-pretrained",), "pretrained", {"action": "store_false", "help": "start from random weights"}),
    (("--split",), "split", {"help": "reuse this split file (e.g. another run's split.json)"}),
    (("--val-dir",), "val_dir", {"help": "a folder, manifest or signal file whose items are the "
                                 "validation part (DATA is then the training pool)"}),
    (("--test-dir",), "test_dir", {"help": "a folder, manifest or signal file whose items are the "
                                   "held-out test part (never trained on)"}),
    (("--on-leak",), "on_leak", {"choices": ("error", "warn", "ignore"),
                                 "help": "near-duplicates on both sides of the split: warn (default), error or ignore"}),
    (("--no-audit",), "audit", {"action": "store_false",
                                "help": "leave the label-error audit out of data_report.json"}),
    (("--near-duplicates",), "near_duplicates", {"choices": ("phash", "dhash", "off"),
                                                 "help": "how near-duplicate images are found (default: phash)"}),
    (("--val-size",), "val_size", {"type": float, "help": "validation fraction (default: 0.15)"}),
    (("--test-size",), "test_size", {"type": float, "help": "test fraction (default: 0.2)"}),
    (("--seed",), "seed", {"type": int, "help": "seed of split, initialisation and data order (default: 0)"}),
    (("--on-bad-file",), "on_bad_file", {"choices": ("error", "skip"),
                                         "help": "stop on bad files (error, default) or leave them out (skip)"}),
    (("--modality",), "modality", {"choices": ("auto", "image", "signal"), "help": "data modality (default: auto)"}),
    (("--root",), "root", {"help": "dataset root of a CSV manifest (default: its folder)"}),
    (("--device",), "device", {"help": "auto (CUDA when present), cpu or cuda"}),
    (("--backend",), "backend", {"choices": ("auto", "torch", "onnx"), "help": "featurizer inference backend"}),
    (("--cache-dir",), "cache_dir", {"help": "feature cache folder (default: ~/.cache/sigclass)"}),
    (("--window",), "signal.window", {"type": int, "help": "signals: cut recordings into windows of this length"}),
    (("--stride",), "signal.stride", {"type": int, "help": "signals: step between windows (default: --window)"}),
    (("--resample",), "signal.resample", {"help": "signals, long tables: one regular grid, e.g. 50Hz or 20ms"}),
    (("--max-gap",), "signal.max_gap", {"help": "signals with --resample: fill gaps up to this (e.g. 2s), split at longer"}),
    (("--length-policy",), "signal.length_policy", {"choices": ("error", "pad", "truncate"),
                                                    "help": "signals of unequal length: error (default), pad or truncate"}),
    (("--tracking-uri",), "tracking.uri", {"help": "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else mlflow.db here)"}),
    (("--experiment",), "tracking.experiment", {"help": "MLflow experiment (default: named after the data)"}),
    (("--no-track",), "tracking.enabled", {"action": "store_false", "help": "do not record the run in MLflow"}),
]


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options (override --config)")
    group.add_argument("--config", type=Path, help="YAML config file (e.g. a run's config.yaml)")
    for flags, key, options in RUN_OPTIONS:
        if "choices" not in options and "action" not in options:
            options = {"metavar": flags[0].lstrip("-").upper().replace("-", "_"), **options}
        group.add_argument(*flags, dest=f"cfg:{key}", default=argparse.SUPPRESS, **options)
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set any config key, e.g. --set train.label_smoothing=0.0 (repeatable)")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults → ``--config`` → flags → ``--set``."""
    import yaml

    config = RunConfig.from_dict(load_config(args.config)) if getattr(args, "config", None) else RunConfig()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        overrides[key.strip()] = yaml.safe_load(value)
    return config.updated(overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigclass",
        description="Images or IoT sensor signals to an evaluated, explained, deployed classifier.",
    )
    parser.add_argument("--version", action="version", version=f"sigclass {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train, evaluate and save one model",
                                description="Train one model (headless, finetune or scratch), "
                                "evaluate it on the test part and save it in a run folder.")
    train.add_argument("data", nargs="?", help="image folder, CSV manifest, signal file or named dataset")
    train.add_argument("--out", type=Path, help="run folder (default: runs/<mode>-<model>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    _add_run_options(train)
    train.set_defaults(func=cmd_train)

    compare = commands.add_parser("compare", help="several modes and models on one split",
                                  description="Train several modes/models on one split and print "
                                  "a leaderboard (Markdown and JSON in --out).")
    compare.add_argument("data", help="image folder, CSV manifest, signal file or named dataset")
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), help="comparison folder")
    compare.add_argument("--entries", help="comma-separated MODE[:MODEL], e.g. "
                         "'headless:efficientnet_lite2,finetune,scratch:vgg_like_2'")
    compare.add_argument("--no-ensemble", action="store_true",
                         help="leave out the ensemble row (weighted soft voting of the top 3 entries)")
    compare.add_argument("--time-limit", help="total time, e.g. '10m', '90s', '1h' (a plain number "
                         "is minutes): headless entries first, networks share what is left, "
                         "entries without time left are not run")
    _add_run_options(compare)
    compare.set_defaults(func=cmd_compare)

    evaluate = commands.add_parser("evaluate", help="score a trained model on labeled data")
    evaluate.add_argument("run", help="run folder, model folder or models:/NAME@ALIAS")
    evaluate.add_argument("data", help="labeled data (folder, manifest, signal file, named dataset)")
    evaluate.add_argument("--split", type=Path, help="a split file; evaluate only its --part")
    evaluate.add_argument("--part", default="test", choices=("train", "val", "test"), help="part of --split, or of the data's own split folders (default: test)")
    evaluate.add_argument("--out", type=Path, help="folder for metrics.json, confusion matrix, predictions.csv")
    evaluate.add_argument("--root", help="dataset root of a CSV manifest")
    evaluate.add_argument("--on-bad-file", default="error", choices=("error", "skip"))
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="predict the class of files")
    predict.add_argument("run", help="run folder, model folder or models:/NAME@ALIAS")
    predict.add_argument("inputs", nargs="+", help="image files or folders; signal files (.npz, .csv, "
                         ".parquet, .ts): one row per case")
    predict.add_argument("-o", "--output", type=Path, required=True,
                         help="output .csv or .parquet; an interrupted run resumes where it stopped")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                         help="auto: ONNX Runtime on a CPU, PyTorch on CUDA")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)

    explain = commands.add_parser("explain", help="class activation maps of files (PNG + .npy)",
                                  description="Class activation maps of image files or of the "
                                  "cases of signal files: an overlay PNG and the map as .npy per "
                                  "input, and explanations.json.")
    explain.add_argument("run", help="run folder, model folder or models:/NAME@ALIAS")
    explain.add_argument("inputs", nargs="*", help="image files or folders; signal files")
    explain.add_argument("--out", type=Path, required=True, help="output folder")
    explain.add_argument("--target", help="class to explain (default: each input's predicted class)")
    explain.add_argument("--method", default="auto", choices=("auto", "cam", "gradcam", "layercam"),
                         help="auto: CAM where the head allows it, else Grad-CAM")
    explain.add_argument("--report", metavar="DATA", help="instead: an HTML report of labeled DATA "
                         "(best and worst predictions with their maps)")
    explain.add_argument("--masks", type=Path, metavar="DIR",
                         help="with --report: instead, flag the images whose map of their true class "
                         "lies mostly inside their mask's area (guided training's check)")
    explain.add_argument("--threshold", type=float, default=0.5,
                         help="with --masks: flag above this fraction of the map inside the area")
    explain.add_argument("--split", type=Path, help="with --report: a split file; use its --part")
    explain.add_argument("--part", choices=("train", "val", "test"),
                         help="with --split: the part to use (default: test; train with --masks)")
    explain.add_argument("--n", type=int, default=8, help="with --report: items per section")
    explain.set_defaults(func=cmd_explain)

    audit = commands.add_parser("audit", help="find items whose label is most likely wrong",
                                description="Label-error audit: out-of-fold probabilities from frozen "
                                "features and a cross-validated head, then cleanlab's confident "
                                "learning; writes label_issues.csv/.json/.html to --out.")
    audit.add_argument("data", help="labeled data (folder, manifest, signal file, named dataset)")
    audit.add_argument("--out", type=Path, default=Path("audit"), help="output folder (default: audit)")
    audit.add_argument("--root", help="dataset root of a CSV manifest")
    audit.add_argument("--model", default="efficientnet_lite0", help="image backbone of the features")
    audit.add_argument("--on-bad-file", default="error", choices=("error", "skip"))
    audit.set_defaults(func=cmd_audit)

    networks = commands.add_parser("networks", help="list the registered networks")
    networks.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'efficientnet*'")
    networks.add_argument("--modality", choices=("image", "signal"))
    networks.set_defaults(func=cmd_networks)

    from .serve.cli import add_commands as add_serve_commands

    add_serve_commands(commands)

    from .tracking.cli import add_commands as add_tracking_commands

    add_tracking_commands(commands)

    from .scale.cli import add_commands as add_scale_commands

    add_scale_commands(commands)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import train

    progress = not args.quiet
    if args.resume:
        result = train(args.data, out=args.out, resume=True, progress=progress)
    else:
        config = resolve_config(args)
        data = args.data or config.data
        if not data:
            raise ConfigError("No data given: pass DATA or set 'data' in --config.")
        result = train(data, out=args.out, config=config, progress=progress)
    if result.predictor is None or not result.metrics:  # not rank 0 of a distributed run
        return 0
    _print_split(result.dir)
    _print_training(result.predictor.info)
    _print_metrics(result.metrics)
    print(f"run folder: {result.dir}")
    _print_tracking(result.dir)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, parse_entries, parse_time_limit

    entries = parse_entries(args.entries) if args.entries else None
    time_limit = parse_time_limit(args.time_limit) if args.time_limit else None
    board = compare(args.data, args.out, entries=entries, config=resolve_config(args),
                    progress=not args.quiet, time_limit=time_limit, ensemble=not args.no_ensemble)
    print(board.to_markdown())
    _print_split(args.out)
    print(f"comparison folder: {args.out}")
    _print_tracking(args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.split import Split
    from .evaluation import evaluate
    from .runs import load, load_dataset

    predictor = load(args.run)
    dataset = load_dataset(args.data, predictor.modality, args.root, args.on_bad_file,
                           signal=predictor.data_config.get("reader"))
    indices = Split.load(args.split).indices(dataset)[args.part] if args.split else None
    predefined = getattr(dataset, "predefined", None)
    if indices is None and predefined is not None:  # split folders: score the held-out part
        part = args.part if args.part in predefined.parts else "test"
        position = {item_id: i for i, item_id in enumerate(dataset.ids)}
        indices = [position[i] for i in predefined.parts[part]]
        print(f"evaluating {part} = {predefined.sources[part]} ({len(indices)} items)")
    metrics = evaluate(predictor, dataset, indices, args.out, args.batch_size, progress=True)
    _print_metrics(metrics)
    if args.out:
        print(f"results: {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .batch import predict_files, use_fast_backend
    from .runs import load

    predictor = load(args.run)
    use_fast_backend(predictor, args.backend)
    count = predict_files(predictor, args.inputs, args.output, batch_size=args.batch_size,
                          progress=not args.quiet)
    print(f"{count} predictions written to {args.output}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain.report import explain_files, explain_report
    from .runs import load, load_dataset

    predictor = load(args.run)
    if args.report:
        from .data.split import Split

        dataset = load_dataset(args.report, predictor.modality,
                               signal=predictor.data_config.get("reader"))
        part = args.part or ("train" if args.masks else "test")
        indices = Split.load(args.split).indices(dataset)[part] if args.split else None
        if args.masks:
            from .explain.guided import mask_report

            entries = mask_report(predictor, dataset, args.masks, indices, args.threshold, args.out)
            flagged = [e for e in entries if e["flagged"]]
            for entry in flagged:
                print(f"flagged: {entry['name']}: {entry['mass_inside']:.0%} of the map of "
                      f"'{entry['explained']}' inside the masked area")
            print(f"{len(flagged)} of {len(entries)} images with a mask flagged; "
                  f"report: {args.out / 'mask_report.html'}")
            return 0
        page = explain_report(predictor, dataset, indices, args.out, args.n, args.method)
        print(f"report: {page}")
        return 0
    if args.masks:
        raise ConfigError("The --masks option checks labeled data: give it with --report DATA.")
    if not args.inputs:
        raise ConfigError("No inputs given: pass image or signal FILES, or --report DATA.")
    summaries = explain_files(predictor, args.inputs, args.out, args.target, args.method)
    failed = [s for s in summaries if "error" in s]
    for entry in failed:
        print(f"error: {entry['name']}: {entry['error']}", file=sys.stderr)
    print(f"{len(summaries) - len(failed)} explanations written to {args.out}")
    return 1 if failed else 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit_labels
    from .runs import load_dataset

    dataset = load_dataset(args.data, root=args.root, on_bad_file=args.on_bad_file)
    issues = audit_labels(dataset, args.out, model=args.model)
    for issue in issues[:20]:
        print(f"{issue['id']}: given '{issue['given']}', suggested '{issue['suggested']}' "
              f"(score {issue['score']:.3f})")
    print(f"{len(issues)} of {len(dataset)} items with a likely wrong label; "
          f"{args.out / 'label_issues.csv'} (edit it and use it as a manifest with --root /), "
          f"{args.out / 'label_issues.html'}")
    return 0


def cmd_networks(args: argparse.Namespace) -> int:
    from .models import list_models, model_entry

    for name in list_models(args.pattern, modality=args.modality):
        entry = model_entry(name)
        weights = "pretrained" if entry.has_pretrained else "scratch"
        print(f"{name:<24} {entry.modality:<7} {weights:<10} {entry.description}")
    print("Any timm architecture name works too, with --weights or a local Hugging Face cache.")
    return 0


def _print_split(folder: Path) -> None:
    """Where each part of the run's split came from (train, val, test)."""
    import json

    for name in ("data_report.json", "split.json"):
        try:
            values = json.loads((Path(folder) / name).read_text())
        except (OSError, ValueError):
            continue
        lines = values.get("split_sources") if name == "data_report.json" else [
            f"{part} = {values['sources'][part]} ({values['counts'][part]} items)"
            for part in ("train", "val", "test") if part in values.get("sources", {})]
        for line in lines or []:
            print(f"split: {line}")
        if lines:
            return


def _print_training(info: dict[str, Any]) -> None:
    """The training plan and how it went: epochs planned and run, the epoch kept, class weights."""
    if "epochs_planned" in info:
        stop = ", stopped early" if info.get("stopped_early") else ""
        print(f"training: {info['epochs_run']} of {info['epochs_planned']} planned epochs "
              f"({info['epochs_source']}){stop}; kept epoch {info['best_epoch']} "
              f"({'end of the schedule' if info['selection'] == 'last' and not stop else 'best ' + info['monitor']})")
    weights = info.get("class_weights_reason") or (info.get("head") or {}).get("class_weights_reason")
    if weights:
        print(f"class weights: {weights}")


def _print_tracking(folder: Path) -> None:
    from .tracking.cli import describe_run

    line = describe_run(folder)
    if line:
        print(line)


def _print_metrics(metrics: dict[str, Any]) -> None:
    keys = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
            "roc_auc_ovr", "items_per_second")
    for key in keys:
        value = metrics.get(key)
        if value is not None:
            print(f"{key:<18} {value:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "matplotlib", "PIL", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except SigclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: `sigclass train --resume --out RUN` continues a training run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
