"""Workflows: what the command line and the Python API run, built from the layers below.

- :mod:`.prepare`: a run's dataset, resolved defaults and split (shared by the others);
- :mod:`.train`: one training run in its folder (:mod:`.execute` and :mod:`.fit` do the work);
- :mod:`.compare`: several modes and models on one split, a leaderboard and an ensemble;
- :mod:`.tune`: hyperparameter search with Optuna, workers sharing a study;
- :mod:`.predict_files`: batch scoring of files, resumable;
- :mod:`.audit`: the label-error audit.
"""
