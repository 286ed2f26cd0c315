"""``sigclass serve`` and ``sigclass export``: the service and the ONNX export on the command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..choices import BACKENDS, PRECISIONS
from ..exceptions import ConfigError
from ..serve.settings import Settings


def add_commands(commands) -> None:
    """Add ``serve`` and ``export`` to the ``sigclass`` sub-command parser."""
    serve = commands.add_parser(
        "serve", help="serve a model over HTTP (REST API, quick-test page)",
        description="Serve a trained model with FastAPI under uvicorn: POST /predict, "
        "/predict/batch, GET /health, /ready, /metadata, /metrics (Prometheus), /docs and a "
        "quick-test page at /.")
    serve.add_argument("model", help="run folder, model folder, models:/NAME@ALIAS, or a bundle "
                       "folder (`sigclass export --format bundle`: served without PyTorch)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes, each with the model")
    serve.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="auto: PyTorch on CUDA, on a CPU the faster of ONNX Runtime and PyTorch")
    serve.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    serve.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="int8: the graph made by `sigclass export --quantize int8`, on ONNX Runtime")
    serve.add_argument("--max-batch-size", type=int, default=16, metavar="N",
                       help="most requests scored together (1: no micro-batching; default: 16)")
    serve.add_argument("--max-wait-ms", type=float, default=2.0, metavar="MS",
                       help="longest a request waits for a batch to fill (default: 2)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="require this X-API-Key header (default: $SIGCLASS_API_KEY; none)")
    serve.add_argument("--max-request-bytes", type=int, default=20 * 1024 * 1024, metavar="BYTES",
                       help="larger request bodies get HTTP 413 (default: 20 MiB)")
    serve.add_argument("--max-image-pixels", type=int, default=40_000_000, metavar="PIXELS",
                       help="larger images are refused before decoding (default: 40 million)")
    serve.add_argument("--reject-unknown", action="store_true",
                       help="answer class null for inputs far from the training data (the "
                       "model's out-of-distribution score; needs a model trained with it)")
    _add_guard_options(serve)
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=cmd_serve)

    export = commands.add_parser("export", help="export a model's network to ONNX, or a bundle",
                                 description="Export the network of a trained model to ONNX "
                                 "(dynamic batch axis), or the whole model as a serving bundle "
                                 "(--format bundle), and check that ONNX Runtime gives the "
                                 "PyTorch outputs.")
    export.add_argument("model", help="run folder, model folder or models:/NAME@ALIAS")
    export.add_argument("--format", choices=("onnx", "bundle"), default="onnx",
                        help="onnx: the network as one .onnx file; bundle: a folder the lean "
                        "runtime serves without PyTorch (graph, model.json, head coefficients, "
                        "checksums; it needs only the `serve` extra, README: Lean serving bundle)")
    export.add_argument("-o", "--output", type=Path, required=True,
                        help="destination .onnx file (a folder with --format bundle)")
    export.add_argument("--quantize", choices=("int8",), default=None,
                        help="int8: ONNX Runtime static quantization calibrated on the run's own "
                        "training items, checked on its test part (writes quantization.json)")
    export.add_argument("--calibration-items", type=int, default=200, metavar="N",
                        help="with --quantize: training items the ranges are calibrated on (default: 200)")
    export.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"),
                        default="minmax", help="with --quantize: how activation ranges are read "
                        "from the calibration items (default: minmax)")
    export.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                        help="with --quantize: --precision int8 refuses a graph that loses more "
                        "test accuracy than this (default: 1.0 point)")
    export.set_defaults(func=cmd_export)


# The guards against costly inputs and slow clients: (flag, setting, type, metavar, help).
GUARD_OPTIONS = (
    ("--max-aspect-ratio", "max_aspect_ratio", float, "R",
     "images whose long side exceeds R times the short one get 422 (default: 20)"),
    ("--max-batch-pixels", "max_batch_pixels", int, "PIXELS",
     "most image pixels in one request, all inputs together; more get 413 (default: 100 million)"),
    ("--max-concurrent-decodes", "max_concurrent_decodes", int, "N",
     "most inputs decoded at once across all requests, which bounds memory (default: 2)"),
    ("--max-explain-pixels", "max_explain_pixels", int, "PIXELS",
     "larger images are scaled down to this size before their map is computed (default: 512x512)"),
    ("--max-pending-explanations", "max_pending_explanations", int, "N",
     "most explanations queued on their worker; more get 503 (default: 4)"),
    ("--request-timeout", "request_timeout_s", float, "S",
     "a request not answered within S seconds gets 504; 0: no limit (default: 60)"),
    ("--header-timeout", "header_timeout_s", float, "S",
     "a connection that sends no complete request head within S seconds is closed (default: 10)"),
    ("--body-timeout", "body_timeout_s", float, "S",
     "a request body not received in full within S seconds gets 408 (default: 30)"),
    ("--keep-alive", "keep_alive_s", float, "S",
     "idle keep-alive connections are closed after S seconds (default: 5)"),
    ("--limit-concurrency", "limit_concurrency", int, "N",
     "most connections and requests at once; more get 503 (default: 256)"),
    ("--max-number-chars", "max_number_chars", int, "N",
     "longest number in a JSON signal, in characters; longer gets 422 (default: 64)"),
    ("--max-csv-cell-chars", "max_csv_cell_chars", int, "N",
     "longest CSV cell, in characters; longer gets 422 (default: 256)"),
    ("--drift-window", "drift_window", int, "N",
     "recent inputs the drift statistic and mean confidence of /metrics cover (default: 500)"),
    ("--drift-threshold", "drift_threshold", float, "PSI",
     "population stability index above which /metadata reports drift (default: 0.25)"),
)


def _add_guard_options(serve) -> None:
    defaults = Settings()
    for flag, name, kind, metavar, text in GUARD_OPTIONS:
        serve.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name),
                           metavar=metavar, help=text)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..runtime import is_bundle

    settings = Settings(
        model=args.model, backend=args.backend, device=args.device, precision=args.precision,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        api_key=args.api_key or os.environ.get("SIGCLASS_API_KEY") or None,
        max_request_bytes=args.max_request_bytes, max_image_pixels=args.max_image_pixels,
        reject_unknown=args.reject_unknown,
        **{name: getattr(args, name) for _, name, *_ in GUARD_OPTIONS},
    )
    os.environ.update(settings.to_env())  # every worker process reads the same settings
    # A broken model fails here, as one line and exit code 2, before the port is bound; each
    # worker then loads it again in its lifespan.
    if is_bundle(args.model):  # the lean runtime: no PyTorch, timm, scikit-learn or MLflow
        from ..runtime.serving import BundleServedModel

        BundleServedModel(settings)
    else:
        from ..serve.model import load_servable

        load_servable(args.model, settings.reject_unknown, settings)
    uvicorn.run("sigclass.serve.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=10,
                http="sigclass.serve.protocol:HeaderTimeoutProtocol",
                timeout_keep_alive=settings.keep_alive_s)  # the protocol and the app limit concurrency
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..serve.export import export_model  # loads the model: when the command runs

    if args.format == "bundle":
        if args.quantize:
            raise ConfigError("--quantize int8 makes an .onnx file; a bundle holds the fp32 graph. "
                              "Drop --quantize, or export --format onnx.")
        from ..workflows.bundle import export_bundle

        report = export_bundle(args.model, args.output)
        head = f", head as {report['head']} coefficients" if report["head"] else ""
        ood = (f", {report['ood']} OOD score {report['max_ood_diff']:.2e}" if report.get("ood")
               else "")
        print(f"Bundle written to {report['path']} ({', '.join(report['files'])}{head}; "
              f"max |runtime - PyTorch| probability = {report['max_abs_diff']:.2e}{ood} on "
              f"{report['n_checked']} inputs); serve it with `sigclass serve {report['path']}`")
        return 0
    if args.quantize:
        from ..workflows.quantize import quantize_model

        report = quantize_model(args.model, args.output, n_calibration=args.calibration_items,
                                max_accuracy_drop=args.max_accuracy_drop,
                                calibration_method=args.calibration_method)
        accuracy, speed = report["accuracy"], report["items_per_second"]
        print(f"int8 graph written to {report['path']}: test accuracy {accuracy['int8']:.1%} "
              f"(fp32 {accuracy['fp32']:.1%}, {report['accuracy_drop_points']:+.1f} points lost), "
              f"{speed['int8']:.1f} vs {speed['fp32']:.1f} items/s ({report['speedup']:.2f}x); "
              f"largest probability change {report['probability_difference']['max']:.3f}")
        if not report["accepted"]:
            print(f"--precision int8 will refuse it: more than {args.max_accuracy_drop:g} "
                  "accuracy points lost (see quantization.json in the run folder)")
        return 0
    report = export_model(args.model, args.output)
    if "max_box_diff" in report:  # a detector
        print(f"ONNX detector written to {report['path']} (ORT vs PyTorch on {report['n_checked']} "
              f"images, {report['n_boxes']} boxes: max box difference {report['max_box_diff']:.2e} "
              f"px, max score difference {report['max_score_diff']:.2e})")
        return 0
    print(f"ONNX model written to {report['path']} (max |ORT - PyTorch| = "
          f"{report['max_abs_diff']:.2e} on {report['n_checked']} inputs)")
    return 0
