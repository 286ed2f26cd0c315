"""``sigclass train``, ``sigclass compare`` and ``sigclass update``, and how a finished run is printed.

A command imports its workflow when it runs (PyTorch and scikit-learn load then), so that
``sigclass --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError
from ..tracking.record import describe_run
from .options import add_run_options, resolve_config


def add_commands(commands) -> None:
    """Add ``train``, ``compare`` and ``update`` to the ``sigclass`` sub-command parser."""
    train = commands.add_parser("train", help="train, evaluate and save one model",
                                description="Train one model (headless, finetune or scratch), "
                                "evaluate it on the test part and save it in a run folder.")
    train.add_argument("data", nargs="?", help="image folder, CSV manifest, signal file or named dataset")
    train.add_argument("--out", type=Path, help="run folder (default: runs/<mode>-<model>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    train.add_argument("--task", choices=("auto", "classification", "detection"), default="auto",
                       help="detection: boxes from a Pascal VOC folder, a COCO JSON or a CSV "
                       "path,xmin,ymin,xmax,ymax,label (auto: detected from that layout)")
    add_run_options(train)
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
    add_run_options(compare)
    compare.set_defaults(func=cmd_compare)

    update = commands.add_parser(
        "update", help="add a class (or examples) to a headless model in seconds",
        description="Refit only the head of the headless model in RUN on its training items and "
        "the items of NEW_DATA (a new class, or more examples of old ones), and save the result "
        "as a new run folder; RUN's test items are tested again, NEW_DATA's are split too.")
    update.add_argument("run", type=Path, help="run folder of a headless model")
    update.add_argument("new_data", help="the items to add: a folder of class subfolders (one "
                        "class is enough), a manifest or a signal file")
    update.add_argument("--out", type=Path, required=True, help="the new run folder (must not "
                        "exist or be empty)")
    update.add_argument("--register", metavar="NAME", help="also register the new model under NAME "
                        "(the names that hold RUN's model get a new version anyway)")
    update.add_argument("--tracking-uri", help="MLflow tracking URI (default: the run's)")
    update.add_argument("--no-track", action="store_true", help="do not record the update in MLflow")
    update.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    update.set_defaults(func=cmd_update)


def cmd_train(args: argparse.Namespace) -> int:
    from ..workflows.train import train

    progress = not args.quiet
    if args.resume and _is_detection_run(args.out):
        return _train_detection(None, args.out, None, progress, resume=True)
    if args.resume:
        result = train(args.data, out=args.out, resume=True, progress=progress)
    else:
        config = resolve_config(args)
        data = args.data or config.data
        if not data:
            raise ConfigError("No data given: pass DATA or set 'data' in --config.")
        if args.task == "detection" or args.task == "auto" and _is_detection(data):
            return _train_detection(data, args.out, config, progress)
        result = train(data, out=args.out, config=config, progress=progress)
    if result.predictor is None or not result.metrics:  # not rank 0 of a distributed run
        return 0
    print_split(result.dir)
    print_training(result.predictor.info)
    print_metrics(result.metrics)
    print(f"run folder: {result.dir}")
    print_tracking(result.dir)
    return 0


def _is_detection(data) -> bool:
    from ..workflows.detect import is_detection_data

    return is_detection_data(data)


def _is_detection_run(out) -> bool:
    from ..workflows.detect import is_detection_run

    return is_detection_run(out)


def _train_detection(data, out, config, progress: bool, resume: bool = False) -> int:
    from ..workflows.detect import train_detection

    result = train_detection(data, out, config, progress, resume=resume)
    metrics = result.metrics
    print(f"test part ({metrics['part']}, {metrics['n_images']} images, {metrics['n_boxes']} boxes): "
          f"mAP@[.5:.95] {metrics['map']:.3f}  mAP@0.5 {metrics['map_50']:.3f}")
    for name, values in metrics["per_class"].items():
        if values["ap"] is not None:
            print(f"  {name:<20} AP {values['ap']:.3f}  AP@0.5 {values['ap_50']:.3f}  "
                  f"recall@0.5 {values['recall_50']:.3f}  ({values['n_boxes']} boxes)")
    print(f"run folder: {result.dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..workflows.compare import compare, parse_entries, parse_time_limit

    entries = parse_entries(args.entries) if args.entries else None
    time_limit = parse_time_limit(args.time_limit) if args.time_limit else None
    board = compare(args.data, args.out, entries=entries, config=resolve_config(args),
                    progress=not args.quiet, time_limit=time_limit, ensemble=not args.no_ensemble)
    print(board.to_markdown())
    print_split(args.out)
    print(f"comparison folder: {args.out}")
    print_tracking(args.out)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from ..workflows.update import update

    overrides: dict[str, Any] = {}
    if args.no_track:
        overrides["tracking.enabled"] = False
    if args.tracking_uri:
        overrides["tracking.uri"] = args.tracking_uri
    result = update(args.run, args.new_data, args.out, progress=not args.quiet,
                    register=args.register, **overrides)
    summary = result.summary
    print(f"added: {summary['added']['n_items']} item(s) of {summary['added']['data']} "
          f"({', '.join(f'{c}: {n}' for c, n in summary['added']['counts'].items())})")
    print(f"classes: {', '.join(summary['classes_after'])}"
          + (f" (new: {', '.join(summary['new_classes'])})" if summary["new_classes"] else ""))
    for note in summary["notes"]:
        print(f"note: {note}")
    print_split(result.dir)
    before, after = summary["old_test_accuracy_before"], summary["old_test_accuracy_after"]
    if before is not None and after is not None:
        print(f"old test items     accuracy {before:.4f} before, {after:.4f} after")
    print_metrics(result.metrics)
    print(f"head refitted in {summary['update_seconds']:.1f} s")
    for version in summary["registered"]:
        print(f"registered: {version['name']} version {version['version']}")
    print(f"run folder: {result.dir}")
    print_tracking(result.dir)
    return 0


def print_split(folder: Path) -> None:
    """Where each part of the run's split came from (train, val, test)."""
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


def print_training(info: dict[str, Any]) -> None:
    """The training plan and how it went: epochs planned and run, the epoch kept, class weights."""
    if "epochs_planned" in info:
        stop = ", stopped early" if info.get("stopped_early") else ""
        print(f"training: {info['epochs_run']} of {info['epochs_planned']} planned epochs "
              f"({info['epochs_source']}){stop}; kept epoch {info['best_epoch']} "
              f"({'end of the schedule' if info['selection'] == 'last' and not stop else 'best ' + info['monitor']})")
    weights = info.get("class_weights_reason") or (info.get("head") or {}).get("class_weights_reason")
    if weights:
        print(f"class weights: {weights}")


def print_tracking(folder: Path) -> None:
    line = describe_run(folder)
    if line:
        print(line)


def print_metrics(metrics: dict[str, Any]) -> None:
    keys = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
            "roc_auc_ovr", "items_per_second")
    for key in keys:
        value = metrics.get(key)
        if value is not None:
            print(f"{key:<18} {value:.4f}")
    calibration = metrics.get("calibration") or {}
    for key in ("ece", "brier"):
        if calibration.get(key) is not None:
            print(f"{key:<18} {calibration[key]:.4f}")
