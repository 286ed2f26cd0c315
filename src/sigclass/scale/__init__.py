"""Scale out: hyperparameter search with Optuna (:mod:`.tune`) and distributed data-parallel
training under ``torchrun`` (:mod:`.distributed`). Importing this package loads neither."""
