"""The training plan: epoch budgets from a number of steps, early stopping that waits for the
minimum epochs, class weights applied on skewed data only, and the tiny-validation selection rule;
on real UCR/UEA data (BasicMotions, GunPoint)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import sigclass as sc
from sigclass.config import RunConfig, TrainConfig
from sigclass.data.signals import load_signals
from sigclass.exceptions import ConfigError
from sigclass.modalities.image import ImageModality
from sigclass.modalities.signal import SignalModality
from sigclass.training.schedule import make_plan, resolve_batch_size

BALANCED_VAL = np.repeat([0, 1], 20)  # 40 items, 20 per class: not tiny


@pytest.fixture(scope="module")
def basic_motions():
    return load_signals("aeon:BasicMotions")


def test_auto_epochs_follow_steps_clamped_and_the_user_number_wins():
    train = np.repeat([0, 1], 50)
    plan = make_plan(TrainConfig(), 2, SignalModality.budget, BALANCED_VAL, train, 2)
    assert (plan.epochs_planned, plan.patience, plan.max_minutes) == (750, 188, 2.0)  # 1500 / 2
    assert make_plan(TrainConfig(), 50, SignalModality.budget, BALANCED_VAL, train, 2).epochs_planned == 30
    assert make_plan(TrainConfig(), 500, SignalModality.budget, BALANCED_VAL, train, 2).epochs_planned == 20  # min_epochs
    assert make_plan(TrainConfig(), 1, SignalModality.budget, BALANCED_VAL, train, 2).epochs_planned == 1000  # max_epochs
    image = make_plan(TrainConfig(), 4, ImageModality.budget, BALANCED_VAL, train, 2)
    assert (image.epochs_planned, image.max_minutes) == (100, 5.0)  # 400 steps / 4
    uncapped = make_plan(TrainConfig(max_minutes=None), 4, ImageModality.budget, BALANCED_VAL, train, 2)
    assert (uncapped.epochs_planned, uncapped.max_minutes) == (100, None)  # the demo's full setting
    user = make_plan(TrainConfig(epochs=7), 2, SignalModality.budget, BALANCED_VAL, train, 2)
    assert (user.epochs_planned, user.epochs_source, user.max_minutes, user.min_epochs) == (7, "user", None, 7)
    assert (user.patience, user.selection, user.monitor) == (5, "best", "val_loss_ema")


def test_train_options_are_checked_together():
    with pytest.raises(ConfigError, match=r"'train\.epochs' option must be 'auto' or a whole number.*"
                                          r"'train\.class_weights' option must be 'auto', true, 'sqrt' or false"):
        RunConfig(data="x", train=TrainConfig(epochs=0, class_weights="yes")).validate()
    assert RunConfig.from_dict({"train": {"epochs": 10, "patience": 5}}).validate().train.epochs == 10


def test_auto_epochs_are_planned_saved_and_kept(basic_motions, tmp_path):
    run = sc.train(basic_motions, mode="scratch", model="simple_cnn1d", out=tmp_path / "r", progress=False,
                   **{"train.steps": 30, "train.batch_size": 16, "train.min_epochs": 3})
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    n_train = json.loads((tmp_path / "r" / "data_report.json").read_text())["split_counts"]["train"]
    steps = n_train // 16 + (n_train % 16 > 1)  # a last batch of one item is dropped
    assert info["epochs_source"] == f"auto: 30 steps / {steps} per epoch, in [3, 1000]"
    assert info["epochs_planned"] == -(-30 // steps) == run.predictor.info["epochs_planned"]
    assert len(run.history) == info["epochs_run"] <= info["epochs_planned"]
    assert all("val_loss_ema" in h for h in run.history)


def test_auto_batch_gives_small_training_parts_four_steps_an_epoch(basic_motions, tmp_path):
    assert [resolve_batch_size("auto", n) for n in (10, 24, 50, 128, 5000)] == [8, 8, 13, 32, 32]
    assert resolve_batch_size(64, 10) == 64  # the user's number wins
    with pytest.raises(ConfigError, match=r"'train\.batch_size' option must be 'auto'"):
        RunConfig(data="x", train=TrainConfig(batch_size=0)).validate()
    sc.train(basic_motions, mode="scratch", model="simple_cnn1d", out=tmp_path / "r", progress=False,
             **{"train.epochs": 2})
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    n_train = json.loads((tmp_path / "r" / "data_report.json").read_text())["split_counts"]["train"]
    assert info["batch_size"] == resolve_batch_size("auto", n_train) < 32  # BasicMotions: ~30 cases


def test_early_stopping_waits_for_the_minimum_epochs(basic_motions, tmp_path):
    # lr 0 on a network without batch norm: the validation loss never changes, so it stops at once
    # after patience 1 -- but not before epoch 6.
    run = sc.train(basic_motions, mode="scratch", model="lstm", out=tmp_path / "r", progress=False,
                   **{"train.epochs": 12, "train.lr": 0.0, "train.weight_decay": 0.0,
                      "train.patience": 1, "train.min_epochs": 6})
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert len(run.history) == 6 and info["stopped_early"] is True
    assert info["best_epoch"] == 1  # stopped early: the best smoothed loss, the first epoch


def test_tiny_validation_keeps_the_end_of_the_schedule(basic_motions, tmp_path):
    run = sc.train(basic_motions, mode="scratch", model="simple_cnn1d", out=tmp_path / "last",
                   progress=False, **{"train.epochs": 5, "train.patience": 0})
    info = json.loads((tmp_path / "last" / "run.json").read_text())
    assert info["tiny_val"] is True and info["selection"] == "last"  # 6 validation cases
    assert info["best_epoch"] == info["epochs_run"] == len(run.history) == 5
    named = sc.train(basic_motions, mode="scratch", model="simple_cnn1d", out=tmp_path / "acc",
                     progress=False, **{"train.epochs": 5, "train.patience": 0,
                                        "train.monitor": "val_accuracy"})
    info = json.loads((tmp_path / "acc" / "run.json").read_text())
    best = max(named.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert info["selection"] == "best" and info["best_epoch"] == best["epoch"]
    big = make_plan(TrainConfig(), 2, SignalModality.budget, BALANCED_VAL, BALANCED_VAL, 2)
    assert (big.tiny_val, big.selection) == (False, "best")
    few_of_one = make_plan(TrainConfig(), 2, SignalModality.budget, np.array([0] * 36 + [1] * 4), BALANCED_VAL, 2)
    assert few_of_one.tiny_val is True


@pytest.fixture(scope="module")
def skewed_gun_point(tmp_path_factory):
    """GunPoint's training cases, one class cut to a third: 24 against 8 (ratio 3)."""
    gun = load_signals("aeon:GunPoint")
    train = [i for i, case in enumerate(gun.ids) if case not in set(gun.fixed_test)]
    labels = np.asarray(gun.labels)[train]
    keep = [i for i, y in zip(train, labels, strict=True) if y == labels[0]]
    keep += [i for i, y in zip(train, labels, strict=True) if y != labels[0]][: len(keep) // 3]
    path = tmp_path_factory.mktemp("data") / "skewed.npz"
    np.savez(path, X=gun.X[keep].astype(np.float32), y=np.asarray(gun.labels)[keep].astype(str))
    return path


def test_a_weighted_head_leans_towards_the_weighted_class():
    from sigclass.training.heads import fit_head

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (60, 4)), rng.normal(0.6, 1, (20, 4))])
    labels = np.array(["a"] * 60 + ["b"] * 20, dtype=object)
    grid = rng.normal(0.3, 1, (400, 4))
    share = {}
    for name in ("logreg", "rbf_svm"):
        plain, _ = fit_head(name, features, labels, params={"C": 1.0})
        weighted, _ = fit_head(name, features, labels, params={"C": 1.0, "class_weight": {"a": 1.0, "b": 3.0}})
        share[name] = (np.mean(plain.predict(grid) == "b"), np.mean(weighted.predict(grid) == "b"))
        assert share[name][1] > share[name][0], share


def test_class_weights_are_applied_on_skewed_data_and_reported(skewed_gun_point, basic_motions, tmp_path):
    run = sc.train(str(skewed_gun_point), mode="scratch", model="simple_cnn1d", out=tmp_path / "s",
                   progress=False, **{"train.epochs": 2})
    info = json.loads((tmp_path / "s" / "run.json").read_text())
    weights = info["class_weights"]
    reason = info["class_weights_reason"]
    assert reason.startswith("square root of inverse class frequency (auto: largest/smallest class ")
    skew = float(re.search(r"largest/smallest class ([0-9.]+)", reason).group(1))
    assert skew > 2  # 24 against 8 before the split
    assert weights is not None and max(weights) == pytest.approx(np.sqrt(skew) * min(weights), rel=0.01)
    assert run.predictor.info["class_weights"] == weights
    sc.train(basic_motions, mode="scratch", model="simple_cnn1d", out=tmp_path / "b", progress=False,
             **{"train.epochs": 1})
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["class_weights"] is None and info["class_weights_reason"].startswith("not needed")
    headless = sc.train(str(skewed_gun_point), mode="headless", out=tmp_path / "h", progress=False)
    # a head under "auto" gets the square root of inverse class frequency of the cases it is fitted
    # on (train + validation), as sample weights (MiniRocket's calibrated ridge head takes them too)
    weight = headless.predictor.info["head"]["class_weights"]
    split = json.loads((tmp_path / "h" / "split.json").read_text())
    data = load_signals(str(skewed_gun_point))
    fitted = set(split["train"]) | set(split["val"])
    counts = {c: sum(1 for i, y in zip(data.ids, data.labels, strict=True) if i in fitted and y == c)
              for c in weight}
    rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
    assert weight[rare] / weight[common] == pytest.approx(np.sqrt(counts[common] / counts[rare]), rel=1e-3)
    assert headless.predictor.info["head"]["class_weights"] == weight
    assert headless.predictor.info["head"]["class_weights_reason"].startswith("square root")


def test_budget_image_size_shrinks_only_when_the_minimum_epochs_do_not_fit():
    from sigclass.training.schedule import budget_image_size

    # 4 s a step at 224 px, 56 steps an epoch: 1 epoch ~ 5 minutes; 20 epochs cannot fit in 5
    size, reason = budget_image_size(224, 4.0, 56, 5.0, 20)
    assert size == 128 and "128 px instead of the network's 224" in reason
    # fast steps: 20 epochs fit at the network's own size
    assert budget_image_size(224, 0.01, 4, 5.0, 20)[0] == 224
    # a little short: the size shrinks by the square root of the missing time, in steps of 32
    size, _ = budget_image_size(224, 0.1, 100, 5.0, 20)  # 13 s an epoch: 23 fit
    assert size == 224
    size, _ = budget_image_size(224, 0.3, 100, 5.0, 20)  # 39 s an epoch: 7.7 fit
    assert size == 128  # 224 * sqrt(7.7 / 20) = 139 -> 128
    size, _ = budget_image_size(320, 0.2, 100, 5.0, 20)  # 11.5 fit: 320 * 0.76 = 242 -> 224
    assert size == 224


def test_a_short_budget_fine_tunes_at_a_smaller_size_and_says_so(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="finetune", model="efficientnet_lite0", out=tmp_path / "run",
                   progress=False, **{"train.max_minutes": 0.02, "cam_examples": 0})
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["image_size"] == 128, summary
    assert "128 px instead of the network's 224" in summary["image_size_reason"]
    assert run.predictor.data_config["input_size"] == [3, 128, 128]
    # a size given by the user is kept whatever the budget
    kept = sc.train(colour_folder, mode="finetune", model="efficientnet_lite0", image_size=64,
                    out=tmp_path / "kept", progress=False,
                    **{"train.max_minutes": 0.02, "cam_examples": 0})
    assert kept.predictor.data_config["input_size"] == [3, 64, 64]
    assert "image_size_reason" not in json.loads((tmp_path / "kept" / "run.json").read_text())


class _Series(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.targets = x, np.asarray(y)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.x[index], int(self.targets[index])


@pytest.mark.parametrize("setting, clip", [("auto", 1.0), (0.25, 0.25), (None, None)])
def test_recurrent_networks_clip_the_gradient_norm_by_default(setting, clip):
    """``clip_grad_norm="auto"`` takes the network's own clip (1.0 for the LSTM), a number wins,
    ``null`` turns it off; the plan says so and a step's gradient norm stays under it."""
    from sigclass.models.signal import RecurrentNet
    from sigclass.training.trainer import Trainer

    torch.manual_seed(0)
    network = RecurrentNet(n_classes=2, in_chans=3)
    with torch.no_grad():
        network.fc.weight.mul_(100.0)  # large logits: large gradients through the LSTM
    x, y = torch.randn(16, 3, 40), np.repeat([0, 1], 8)
    trainer = Trainer(network, TrainConfig(epochs=1, clip_grad_norm=setting), mode="scratch",
                      device="cpu", progress=False)
    trainer._setup(_Series(x, y), _Series(x, y))
    trainer.train_step(x, torch.as_tensor(y))
    norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in network.parameters()])))
    assert trainer.summary()["clip_grad_norm"] == clip
    if clip is None:
        assert norm > 1.0 and "clipped" not in trainer.describe_plan()
    else:
        assert norm <= clip * 1.001 and f"gradient norm clipped at {clip:g}" in trainer.describe_plan()


def test_networks_without_their_own_clip_are_not_clipped():
    train = np.repeat([0, 1], 50)
    assert make_plan(TrainConfig(), 2, SignalModality.budget, BALANCED_VAL, train, 2).clip_grad_norm is None
    with pytest.raises(ConfigError, match=r"'train\.clip_grad_norm' option must be 'auto', null or a positive"):
        RunConfig(data="x", train=TrainConfig(clip_grad_norm=0)).validate()


def test_the_moving_average_of_the_weights_is_on_when_fine_tuning():
    train = np.repeat([0, 1], 50)

    def plan(mode="scratch", **options):
        return make_plan(TrainConfig(**options), 4, ImageModality.budget, BALANCED_VAL, train, 2,
                         mode=mode)

    assert plan("finetune").ema_decay == 0.999 and plan("scratch").ema_decay is None
    assert plan("scratch", ema=0.99).ema_decay == 0.99 and plan("finetune", ema=None).ema_decay is None
    with pytest.raises(ConfigError, match=r"'train\.ema' option must be 'auto', null or a decay"):
        RunConfig(data="x", train=TrainConfig(ema=1.0)).validate()


def test_the_moving_average_is_validated_kept_and_resumed(tmp_path):
    """With ``ema``, validation scores the averaged weights, the run keeps them (tiny validation
    part: the end of the schedule), and a checkpoint carries the average to a resumed run."""
    from sigclass.models.signal import FCN
    from sigclass.training.trainer import Trainer

    torch.manual_seed(0)
    x, y = torch.randn(24, 2, 32), np.repeat([0, 1], 12)
    x[y == 1] += 0.5
    config = TrainConfig(epochs=3, ema=0.9, lr=1e-2)
    trainer = Trainer(FCN(n_classes=2, in_chans=2, width=8, depth=2), config, mode="scratch",
                      device="cpu", progress=False).fit(_Series(x, y), _Series(x[:8], y[:8]))
    assert "moving average of the weights (decay up to 0.9)" in trainer.describe_plan()
    assert trainer.summary()["ema_decay"] == 0.9 and trainer.plan_.selection == "last"
    kept, averaged = trainer.network.state_dict(), trainer.ema_.module.state_dict()
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)
    # the last epoch's validation loss was measured on the weights now kept
    again = trainer.run_epoch(_Series(x[:8], y[:8]), 3, training=False)
    assert again["loss"] == pytest.approx(trainer.history_[-1]["val_loss"], rel=1e-5)
    checkpoint = trainer.save_checkpoint(tmp_path / "last.pt")
    resumed = Trainer(FCN(n_classes=2, in_chans=2, width=8, depth=2), TrainConfig(epochs=4, ema=0.9),
                      mode="scratch", device="cpu", progress=False)
    resumed._setup(_Series(x, y), _Series(x[:8], y[:8]))
    resumed.load_checkpoint(checkpoint)
    restored = resumed.ema_.module.state_dict()
    assert all(torch.equal(restored[k], averaged[k]) for k in averaged)
