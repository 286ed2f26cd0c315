"""``sigclass serve`` and ``sigclass export``: the service and the ONNX export on the command line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..choices import BACKENDS
from ..serve.settings import Settings


def add_commands(commands) -> None:
    """Add ``serve`` and ``export`` to the ``sigclass`` sub-command parser."""
    serve = commands.add_parser(
        "serve", help="serve a model over HTTP (REST API, quick-test page)",
        description="Serve a trained model with FastAPI under uvicorn: POST /predict, "
        "/predict/batch, GET /health, /ready, /metadata, /docs and a quick-test page at /.")
    serve.add_argument("model", help="run folder, model folder or models:/NAME@ALIAS")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes, each with the model")
    serve.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="auto: PyTorch on CUDA, on a CPU the faster of ONNX Runtime and PyTorch")
    serve.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
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
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=cmd_serve)

    export = commands.add_parser("export", help="export a model's network to ONNX",
                                 description="Export the network of a trained model to ONNX "
                                 "(dynamic batch axis) and check that ONNX Runtime gives the "
                                 "PyTorch outputs.")
    export.add_argument("model", help="run folder, model folder or models:/NAME@ALIAS")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    export.add_argument("-o", "--output", type=Path, required=True, help="destination .onnx file")
    export.set_defaults(func=cmd_export)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings(
        model=args.model, backend=args.backend, device=args.device,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        api_key=args.api_key or os.environ.get("SIGCLASS_API_KEY") or None,
        max_request_bytes=args.max_request_bytes, max_image_pixels=args.max_image_pixels,
    )
    os.environ.update(settings.to_env())  # every worker process reads the same settings
    # Before PyTorch loads: OpenMP threads that spin while idle slow a shared CPU down.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    uvicorn.run("sigclass.serve.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..serve.export import export_model  # loads the model: when the command runs

    report = export_model(args.model, args.output)
    print(f"ONNX model written to {report['path']} (max |ORT - PyTorch| = "
          f"{report['max_abs_diff']:.2e} on {report['n_checked']} inputs)")
    return 0
