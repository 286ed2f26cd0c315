"""The ``sigclass tune`` command (hyperparameter search with Optuna)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..exceptions import ConfigError
from .options import add_run_options, resolve_config


def add_commands(commands) -> None:
    """Add ``tune`` to the ``sigclass`` sub-command parser."""
    tune = commands.add_parser(
        "tune", help="hyperparameter search with Optuna (several workers may share a study)",
        description="Search the settings that matter for the mode with Optuna, one trained run per "
        "trial on one split, poor network trials pruned; write the best configuration to "
        "OUT/best.yaml (`sigclass train --config OUT/best.yaml` trains it again). Start the "
        "command several times (or on several machines with --storage postgresql://...) to run "
        "workers that share the study.")
    tune.add_argument("data", nargs="?", help="image folder, CSV manifest, signal file or named dataset")
    tune.add_argument("--trials", type=int, default=20, metavar="N",
                      help="trials of the whole study, all workers together (default: 20)")
    tune.add_argument("--storage", metavar="URL",
                      help="Optuna storage shared by the workers (default: sqlite:///OUT/study.db; "
                      "postgresql://USER:PASSWORD@HOST/DB for several machines)")
    tune.add_argument("--timeout", type=float, metavar="MIN",
                      help="this worker starts no new trial after MIN minutes")
    tune.add_argument("--study", metavar="NAME", help="study name (default: MODE-MODEL)")
    tune.add_argument("--out", type=Path, default=Path("runs/tune"),
                      help="study folder: split, trials, best.yaml (default: runs/tune)")
    tune.add_argument("--no-prune", action="store_true", help="train every trial to the end")
    tune.add_argument("--sampler-seed", type=int, metavar="SEED", help="seed of the TPE sampler")
    add_run_options(tune)
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..workflows.tune import tune  # loads PyTorch and Optuna: when the command runs

    config = resolve_config(args)
    data = args.data or config.data
    if not data:
        raise ConfigError("No data given: pass DATA or set 'data' in --config.")
    try:
        result = tune(data, args.out, trials=args.trials, storage=args.storage,
                      study_name=args.study, timeout_minutes=args.timeout, config=config,
                      pruning=not args.no_prune, sampler_seed=args.sampler_seed,
                      progress=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: run the same `sigclass tune` command again to continue the study",
              file=sys.stderr)
        return 130
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts.items()))
    print(f"study {result.study}: {counts}")
    if result.best_value is None:
        print("no trial completed; see the trial folders' run.json for the errors")
        return 1
    print(f"best trial {result.best_trial}: {result.metric} {result.best_value:.4f}")
    for key, value in result.best_params.items():
        print(f"  {key:<18} {value}")
    print(f"best config: {result.best_config}  (sigclass train --config {result.best_config})")
    return 0
