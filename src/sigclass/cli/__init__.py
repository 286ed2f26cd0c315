"""The ``sigclass`` command line: a thin layer over the Python API.

Configuration flows one way: dataclass defaults, then ``--config FILE`` (YAML), then flags
(``--set key=value`` reaches any key). ``sigclass COMMAND --help`` documents every option. Each
module of this package adds its commands: :mod:`.train` (``train``, ``compare``, ``update``), :mod:`.use`
(``evaluate``, ``predict``, ``explain``, ``audit``, ``networks``), :mod:`.serve` (``serve``,
``export``), :mod:`.tracking` (``register``, ``promote``, ``models``, ``ui``) and :mod:`.tune`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..exceptions import ArtifactError, SigclassError
from . import children, serve, tracking, train, tune, use
from .options import RUN_OPTIONS, add_run_options, resolve_config

__all__ = ["RUN_OPTIONS", "add_run_options", "build_parser", "main", "resolve_config"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigclass",
        description="Images or IoT sensor signals to an evaluated, explained, deployed classifier.",
    )
    parser.add_argument("--version", action="version", version=f"sigclass {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, use, serve, tracking, tune):
        module.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before PyTorch loads: OpenMP threads that spin while they wait stall ONNX Runtime and the
    # image decoding that share the CPU with them (a batch's torch.stack took 250 ms instead of 8).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "matplotlib", "PIL", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM and SIGHUP stop a command as Ctrl-C does; the processes it started stop with it
    with children.guarded():
        try:
            return int(args.func(args) or 0)
        except ArtifactError as exc:  # one line: the file, the field, the fix
            print("error: " + " ".join(str(exc).split()), file=sys.stderr)
            return 2
        except SigclassError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:
            print("interrupted: `sigclass train --resume --out RUN` continues a training run",
                  file=sys.stderr)
            return 128 + children.stop_signal(interrupt)
