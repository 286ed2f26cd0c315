"""The commands that use trained models and labeled data: ``evaluate``, ``predict``,
``explain``, ``audit`` and ``networks``.

A command imports what it runs when it runs, so that ``sigclass --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..choices import BACKENDS, BAD_FILE_POLICIES, CAM_METHODS, MODALITIES, PARTS, PRECISIONS
from ..data.file_checks import DEFAULT_MAX_FILE_MB
from ..data.split import Split
from ..exceptions import ConfigError
from .train import print_metrics


def add_commands(commands) -> None:
    """Add the commands of this module to the ``sigclass`` sub-command parser."""
    evaluate = commands.add_parser("evaluate", help="score a trained model on labeled data")
    evaluate.add_argument("run", help="run folder, model folder or models:/NAME@ALIAS")
    evaluate.add_argument("data", help="labeled data (folder, manifest, signal file, named dataset)")
    evaluate.add_argument("--split", type=Path, help="a split file; evaluate only its --part")
    evaluate.add_argument("--part", default="test", choices=PARTS, help="part of --split, or of the data's own split folders (default: test)")
    evaluate.add_argument("--out", type=Path, help="folder for metrics.json, confusion matrix, predictions.csv")
    evaluate.add_argument("--root", help="dataset root of a CSV manifest")
    evaluate.add_argument("--on-bad-file", default="error", choices=BAD_FILE_POLICIES)
    add_file_options(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.set_defaults(func=cmd_evaluate)

    predict = commands.add_parser("predict", help="predict the class of files")
    predict.add_argument("run", help="run folder, model folder, models:/NAME@ALIAS or a serving "
                         "bundle (`sigclass export --format bundle`)")
    predict.add_argument("inputs", nargs="+", help="image files or folders; signal files (.npz, .csv, "
                         ".parquet, .ts): one row per case")
    predict.add_argument("-o", "--output", type=Path, required=True,
                         help="output .csv, .parquet, .json (records) or .jsonl; an interrupted "
                         "run resumes where it stopped")
    predict.add_argument("--batch-size", type=int, default=None,
                         help="inputs scored and written at a time (default: 64; detection "
                         "models: 8 images)")
    predict.add_argument("--backend", choices=BACKENDS, default="auto",
                         help="auto: ONNX Runtime on a CPU, PyTorch on CUDA")
    predict.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="int8: the graph made by `sigclass export --quantize int8`")
    predict.add_argument("--reject-unknown", action="store_true",
                         help="leave 'predicted' empty for inputs far from the training data (the "
                         "model's out-of-distribution score; needs a model trained with it)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.add_argument("--engine", choices=("local", "spark"), default="local",
                         help="spark: score on Apache Spark (the model broadcast once per "
                         "executor, resumable by partition; needs the 'spark' extra and Java)")
    predict.add_argument("--spark-master", help="Spark master URL (default: the one spark-submit "
                         "or the Spark configuration sets, else local[*])")
    predict.add_argument("--partitions", type=int, help="Spark partitions of the inputs")
    predict.add_argument("--score-threshold", type=float, default=None,
                         help="detection models: lowest score of a box written (default 0.05)")
    predict.add_argument("--max-detections", type=int, default=None,
                         help="detection models: most boxes per image (default 100)")
    predict.set_defaults(func=cmd_predict)

    explain = commands.add_parser("explain", help="class activation maps of files (PNG + .npy)",
                                  description="Class activation maps of image files or of the "
                                  "cases of signal files: an overlay PNG and the map as .npy per "
                                  "input, and explanations.json.")
    explain.add_argument("run", help="run folder, model folder or models:/NAME@ALIAS")
    explain.add_argument("inputs", nargs="*", help="image files or folders; signal files")
    explain.add_argument("--out", type=Path, required=True, help="output folder")
    explain.add_argument("--target", help="class to explain (default: each input's predicted class)")
    explain.add_argument("--method", default="auto", choices=CAM_METHODS,
                         help="auto: CAM where the head allows it, else Grad-CAM")
    explain.add_argument("--report", metavar="DATA", help="instead: an HTML report of labeled DATA "
                         "(best and worst predictions with their maps)")
    explain.add_argument("--masks", type=Path, metavar="DIR",
                         help="with --report: instead, flag the images whose map of their true class "
                         "lies mostly inside their mask's area (guided training's check)")
    explain.add_argument("--threshold", type=float, default=0.5,
                         help="with --masks: flag above this fraction of the map inside the area")
    explain.add_argument("--split", type=Path, help="with --report: a split file; use its --part")
    explain.add_argument("--part", choices=PARTS,
                         help="with --split: the part to use (default: test; train with --masks)")
    explain.add_argument("--n", type=int, default=8, help="with --report: items per section")
    explain.add_argument("--score-threshold", type=float, default=None,
                         help="detection models: lowest score of an explained box (default 0.3)")
    explain.add_argument("--max-detections", type=int, default=None,
                         help="detection models: most boxes explained per image (default 50)")
    explain.set_defaults(func=cmd_explain)

    audit = commands.add_parser("audit", help="find items whose label is most likely wrong",
                                description="Label-error audit: out-of-fold probabilities from frozen "
                                "features and a cross-validated head, then cleanlab's confident "
                                "learning; writes label_issues.csv/.json/.html to --out.")
    audit.add_argument("data", help="labeled data (folder, manifest, signal file, named dataset)")
    audit.add_argument("--out", type=Path, default=Path("audit"), help="output folder (default: audit)")
    audit.add_argument("--root", help="dataset root of a CSV manifest")
    audit.add_argument("--model", default=None,
                       help="image backbone of the features (default: the default headless one, "
                            "efficientnet_lite2, whose features a default training run caches)")
    audit.add_argument("--on-bad-file", default="error", choices=BAD_FILE_POLICIES)
    add_file_options(audit)
    audit.set_defaults(func=cmd_audit)

    networks = commands.add_parser("networks", help="list the registered networks")
    networks.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'efficientnet*'")
    networks.add_argument("--modality", choices=MODALITIES)
    networks.set_defaults(func=cmd_networks)


def add_file_options(parser: argparse.ArgumentParser) -> None:
    """The options on which data files are read (as ``train``'s)."""
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB, metavar="MB",
                        help="largest data file read, in MB (default: 512); only regular files are read")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="read symbolic links that leave the dataset root (default: refused)")


def _file_options(args: argparse.Namespace) -> dict:
    return {"max_file_mb": args.max_file_mb, "follow_symlinks": args.follow_symlinks}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..loading import load
    from ..workflows.prepare import load_dataset

    predictor = load(args.run)
    if getattr(predictor, "task", "classification") == "detection":
        from ..workflows.detect import evaluate_box_data

        metrics = evaluate_box_data(predictor, args.data, args.part, args.out, args.on_bad_file,
                                    **_file_options(args))
        print(f"{metrics['part']} ({metrics['n_images']} images, {metrics['n_boxes']} boxes): "
              f"mAP@[.5:.95] {metrics['map']:.3f}  mAP@0.5 {metrics['map_50']:.3f}")
        return 0
    dataset = load_dataset(args.data, predictor.modality, args.root, args.on_bad_file,
                           signal=predictor.data_config.get("reader"), **_file_options(args))
    indices = Split.load(args.split).indices(dataset)[args.part] if args.split else None
    predefined = getattr(dataset, "predefined", None)
    if indices is None and predefined is not None:  # split folders: score the held-out part
        part = args.part if args.part in predefined.parts else "test"
        position = {item_id: i for i, item_id in enumerate(dataset.ids)}
        indices = [position[i] for i in predefined.parts[part]]
        print(f"evaluating {part} = {predefined.sources[part]} ({len(indices)} items)")
    metrics = evaluate(predictor, dataset, indices, args.out, args.batch_size, progress=True)
    print_metrics(metrics)
    if args.out:
        print(f"results: {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..loading import load
    from ..predictor import require_ood
    from ..runtime.bundle import is_bundle
    from ..workflows.predict_files import predict_files

    bundle = _bundle_for_predict(args) if is_bundle(args.run) else None
    if args.engine != "spark" and (args.spark_master or args.partitions is not None):
        raise ConfigError("--spark-master and --partitions are options of --engine spark")
    if args.engine == "spark":
        from ..workflows.predict_spark import predict_spark

        if args.reject_unknown:
            raise ConfigError("--reject-unknown runs with --engine local only; score with the "
                              "local engine, or drop it (the output's 'unknown' column still "
                              "says which inputs are unknown)")
        if args.score_threshold is not None or args.max_detections is not None:
            raise ConfigError("--score-threshold and --max-detections are options of detection "
                              "models, which --engine spark does not score; drop them")
        if args.partitions is not None and args.partitions < 1:
            raise ConfigError(f"--partitions must be 1 or more, got {args.partitions}")
        count = predict_spark(args.run, args.inputs, args.output, batch_size=args.batch_size or 64,
                              partitions=args.partitions, master=args.spark_master,
                              backend=args.backend, precision=args.precision)
        print(f"{count} predictions written to {args.output}")
        return 0
    predictor = bundle or load(args.run)
    if getattr(predictor, "task", "classification") == "detection":
        if args.reject_unknown:
            raise ConfigError(f"'{args.run}' is a detection model: --reject-unknown applies to "
                              "classification models only. Drop it.")
        from ..workflows.detect import predict_box_files

        predictor.use_backend(args.backend, precision=args.precision)
        count = predict_box_files(predictor, args.inputs, args.output, args.score_threshold,
                                  args.max_detections, batch_size=args.batch_size or 8,
                                  progress=not args.quiet)
        print(f"{count} boxes written to {args.output}")
        return 0
    if args.score_threshold is not None or args.max_detections is not None:
        raise ConfigError(f"'{args.run}' is a classification model: --score-threshold and "
                          "--max-detections apply to detection models only. Drop them, or pass "
                          "a detection model (trained with --task detection).")
    if args.reject_unknown:
        require_ood(predictor, args.run)
    if bundle is None:
        predictor.use_backend(args.backend, precision=args.precision)
    count = predict_files(predictor, args.inputs, args.output, batch_size=args.batch_size or 64,
                          progress=not args.quiet, reject_unknown=args.reject_unknown)
    print(f"{count} predictions written to {args.output}")
    return 0


def _bundle_for_predict(args: argparse.Namespace):
    """The lean runtime's predictor of a bundle folder, for the local engine and its own fp32
    ONNX graph only."""
    from ..runtime import load_bundle

    if args.engine == "spark":
        raise ConfigError(f"'{args.run}' is a serving bundle; --engine spark scores a run or model "
                          "folder (or models:/NAME@ALIAS). Pass the folder it was exported from, "
                          "or drop --engine spark.")
    if args.backend == "torch" or args.precision == "int8":
        raise ConfigError(f"'{args.run}' is a serving bundle, which runs its fp32 ONNX graph on "
                          "ONNX Runtime: drop --backend torch and --precision int8, or score the "
                          "run or model folder it was exported from.")
    return load_bundle(args.run)


def cmd_explain(args: argparse.Namespace) -> int:
    from ..detector import require_classifier
    from ..explain.guided import mask_report
    from ..explain.report import explain_files, explain_report
    from ..loading import load
    from ..workflows.prepare import load_dataset

    predictor = load(args.run)
    if getattr(predictor, "task", "classification") == "detection":
        return _explain_boxes(args, predictor)
    if args.score_threshold is not None or args.max_detections is not None:
        raise ConfigError(f"'{args.run}' is a classification model: --score-threshold and "
                          "--max-detections apply to detection models only. Drop them.")
    predictor = require_classifier(predictor, "class activation maps")
    if args.report:
        dataset = load_dataset(args.report, predictor.modality,
                               signal=predictor.data_config.get("reader"))
        part = args.part or ("train" if args.masks else "test")
        indices = Split.load(args.split).indices(dataset)[part] if args.split else None
        if args.masks:
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


def _explain_boxes(args: argparse.Namespace, predictor) -> int:
    """`sigclass explain` on a detection model: an overlay PNG and the box maps per image."""
    from ..explain.boxes import explain_box_files

    if args.report or args.masks or args.target:
        raise ConfigError(f"'{args.run}' is a detection model: --report, --masks and --target "
                          "apply to classification models. Explain its boxes with "
                          "`sigclass explain MODEL IMAGES --out DIR`.")
    if args.method in ("auto", "cam"):
        if args.method == "cam":
            raise ConfigError("A detection model has no pooling + linear head for plain CAM; use "
                              "--method layercam (the default) or gradcam.")
        args.method = "layercam"
    if not args.inputs:
        raise ConfigError("No inputs given: pass image FILES or folders.")
    threshold = 0.3 if args.score_threshold is None else args.score_threshold
    limit = 50 if args.max_detections is None else args.max_detections
    summaries = explain_box_files(predictor, args.inputs, args.out, threshold, limit, args.method)
    failed = [s for s in summaries if "error" in s]
    for entry in failed:
        print(f"error: {entry['name']}: {entry['error']}", file=sys.stderr)
    boxes = sum(len(s.get("boxes", [])) for s in summaries)
    print(f"{boxes} boxes of {len(summaries) - len(failed)} images explained in {args.out}")
    return 1 if failed else 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ..workflows.audit import audit_labels
    from ..workflows.prepare import load_dataset

    dataset = load_dataset(args.data, root=args.root, on_bad_file=args.on_bad_file,
                           **_file_options(args))
    issues = audit_labels(dataset, args.out, model=args.model)
    for issue in issues[:20]:
        print(f"{issue['id']}: given '{issue['given']}', suggested '{issue['suggested']}' "
              f"(score {issue['score']:.3f})")
    print(f"{len(issues)} of {len(dataset)} items with a likely wrong label; "
          f"{args.out / 'label_issues.csv'} (edit it and use it as a manifest with --root /), "
          f"{args.out / 'label_issues.html'}")
    return 0


def cmd_networks(args: argparse.Namespace) -> int:
    from ..models import list_models, model_entry

    for name in list_models(args.pattern, modality=args.modality):
        entry = model_entry(name)
        weights = "pretrained" if entry.has_pretrained else "scratch"
        print(f"{name:<24} {entry.modality:<7} {weights:<10} {entry.description}")
    print("Any timm architecture name works too, with --weights or a local Hugging Face cache.")
    return 0
