"""The registry and UI commands of ``sigclass``: ``register``, ``promote``, ``models``, ``ui``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..tracking.registry import list_versions, promote, register_run
from ..tracking.store import artifact_root_for, check_store, get_client, resolve_uri
from . import children

URI_HELP = ("MLflow tracking URI (default: MLFLOW_TRACKING_URI, else mlflow.db in "
            "SIGCLASS_TRACKING_DIR or the working folder)")


def add_commands(commands) -> None:
    """Add the tracking commands to the ``sigclass`` sub-command parsers."""
    register = commands.add_parser("register", help="register a run's model in the model registry",
                                   description="Create a new version of a registered model from "
                                   "a tracked run, with its test metrics and lineage.")
    register.add_argument("run", help="run folder (trained with tracking on) or MLflow run id")
    register.add_argument("--name", required=True, help="registered model name")
    register.add_argument("--alias", help="also point this alias (e.g. champion) at the version")
    register.add_argument("--tracking-uri", help=URI_HELP)
    register.set_defaults(func=cmd_register)

    promote = commands.add_parser("promote", help="point an alias (e.g. champion) at a version")
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", type=int, help="version number")
    promote.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    promote.add_argument("--tracking-uri", help=URI_HELP)
    promote.set_defaults(func=cmd_promote)

    models = commands.add_parser("models", help="list registered models with metrics and aliases")
    models.add_argument("name", nargs="?", help="only this registered model")
    models.add_argument("--tracking-uri", help=URI_HELP)
    models.set_defaults(func=cmd_models)

    ui = commands.add_parser("ui", help="start the MLflow UI for the tracking store",
                             description="Serve the MLflow UI (runs, metrics, artifacts, "
                             "registry) on 127.0.0.1 until Ctrl-C.")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    ui.add_argument("--tracking-uri", help=URI_HELP)
    ui.set_defaults(func=cmd_ui)


def cmd_register(args: argparse.Namespace) -> int:
    version = register_run(args.run, args.name, args.tracking_uri)
    print(f"registered {args.name} version {version.version} (run {version.run_id})")
    if args.alias:
        promote(args.name, version.version, args.alias, args.tracking_uri)
        print(f"alias {args.alias} -> version {version.version}")
    print(f"load it with: sigclass predict models:/{args.name}/{version.version} ...")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    promote(args.name, args.version, args.alias, args.tracking_uri)
    print(f"models:/{args.name}@{args.alias} -> version {args.version}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    rows = list_versions(args.name, args.tracking_uri)
    if not rows:
        print("no registered models; register one with `sigclass register RUN --name NAME`")
        return 0
    header = f"{'name':<20} {'ver':>4} {'aliases':<18} {'accuracy':>8} {'f1_macro':>8} " \
             f"{'mode':<9} {'model':<20} {'created':<16} run"
    print(header)
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"] / 1000))
        print(f"{row['name']:<20} {row['version']:>4} {','.join(row['aliases']) or '-':<18} "
              f"{_number(row.get('test_accuracy')):>8} {_number(row.get('test_f1_macro')):>8} "
              f"{row.get('mode', '-'):<9} {row.get('model', '-'):<20} {created:<16} "
              f"{row['run_id']}")
    return 0


def _number(value) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "-"


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line serving ``uri``'s runs, artifacts and registry."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--registry-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    root = artifact_root_for(uri)
    if root is not None:
        command += ["--default-artifact-root", root]
    return command


def cmd_ui(args: argparse.Namespace) -> int:
    uri = resolve_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is a tracking server: open it in a browser.")
        return 0
    check_store(uri)
    get_client(uri)  # creates the store's tables, so the UI opens even before the first run
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    # The server's background job runner serves GenAI evaluations, which sigclass runs never use.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    # mlflow server runs uvicorn in a second process: both stop with this command, whatever stops it
    process = children.start(ui_command(uri, args.host, args.port), env=env)
    try:
        return process.wait()
    except KeyboardInterrupt as interrupt:
        children.stop_all(children.stop_signal(interrupt))
        return 0
