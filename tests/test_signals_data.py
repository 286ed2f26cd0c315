"""Signal readers (NPZ, CSV/Parquet wide and long, .ts, aeon datasets), their error messages,
windowing, group-aware splitting, the stored preprocessing and augmentation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import sigclass as sc
from sigclass.config import ConfigError, RunConfig
from sigclass.data.signal_augment import SignalAugmentConfig, augment_signal
from sigclass.data.signal_preprocess import (
    SignalPreprocessor,
    as_case,
    signal_data_config,
    standardize,
)
from sigclass.data.signals import load_signals
from sigclass.exceptions import DataError


def write_npz(path, X, y, **extra):
    np.savez(path, X=X, y=np.asarray(y), **extra)
    return str(path)


def two_class_cases(n=6, channels=2, length=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, channels, length))
    y = np.array(["a", "b"] * (n // 2))
    return X, y


# -- aeon's bundled datasets ------------------------------------------------------------------


def test_aeon_dataset_keeps_its_own_split():
    data = load_signals("aeon:BasicMotions")
    assert data.X.shape == (80, 6, 100) and data.X.dtype == np.float32
    assert data.classes == ["badminton", "running", "standing", "walking"]
    assert data.fixed_test == [f"test-{i:04d}" for i in range(40)]
    split = sc.make_split(data, val_size=0.15, fixed_test=data.fixed_test)
    assert split.test == data.fixed_test
    assert not set(split.train + split.val) & set(split.test)
    assert len(split.train) + len(split.val) == 40


def test_aeon_random_split_and_univariate_promotion():
    data = load_signals("aeon:GunPoint?split=random")
    assert data.fixed_test is None and data.X.shape == (200, 1, 150)
    split = sc.make_split(data, val_size=0.15, test_size=0.2, seed=0)
    assert len(split.test) == 40


def test_unknown_and_regression_aeon_datasets_are_refused_with_the_list():
    with pytest.raises(DataError) as caught:
        load_signals("aeon:gunpoint")
    message = str(caught.value)
    assert message.startswith("aeon:gunpoint: not a classification dataset bundled with aeon "
                              "(readable offline). Did you mean aeon:GunPoint? Bundled: ACSF1, ")
    assert "Covid3Month," not in message  # regression data is not offered
    with pytest.raises(DataError, match=r"the only option is split"):
        load_signals("aeon:GunPoint?split=half")


def test_unequal_lengths_are_an_error_unless_padded_or_truncated():
    with pytest.raises(DataError) as caught:
        load_signals("aeon:JapaneseVowels")
    assert str(caught.value) == (
        "aeon:JapaneseVowels: cases have unequal lengths, from 7 to 29 timepoints (case "
        "'train-0068' has 7, case 'test-0007' has 29); set signal.length_policy to 'pad' or "
        "'truncate' (and signal.length) to equalize them")
    padded = load_signals("aeon:JapaneseVowels", options={"length_policy": "pad"})
    assert padded.X.shape == (640, 12, 29)
    cut = load_signals("aeon:JapaneseVowels", options={"length_policy": "truncate"})
    assert cut.X.shape == (640, 12, 7) and cut.summary["lengths"]["truncated"] == 638
    with pytest.raises(DataError) as caught:
        load_signals("aeon:JapaneseVowels", options={"length_policy": "truncate", "length": 10})
    assert str(caught.value) == (
        "aeon:JapaneseVowels: 12 case(s) are shorter than signal.length 10 (case 'train-0068' has "
        "7); 'truncate' only cuts: use 'pad', or a smaller signal.length")


# -- NPZ --------------------------------------------------------------------------------------


def test_npz_reader_promotes_univariate_and_reads_groups(tmp_path):
    X, y = two_class_cases(channels=1)
    path = write_npz(tmp_path / "d.npz", X[:, 0, :], y, groups=np.array(["g1", "g1", "g2", "g2", "g3", "g3"]))
    data = load_signals(path)
    assert data.X.shape == (6, 1, 20) and data.ids[0] == "case-00000"
    assert list(data.groups) == ["g1", "g1", "g2", "g2", "g3", "g3"]
    np.testing.assert_allclose(data.X[:, 0], X[:, 0].astype(np.float32))


def test_npz_problems_are_reported_together_with_case_channel_and_time(tmp_path):
    X, y = two_class_cases()
    X[1, 1, 4] = np.nan
    X[3, 0, 7] = np.inf
    with pytest.raises(DataError) as caught:
        load_signals(write_npz(tmp_path / "bad.npz", X, y))
    assert str(caught.value).splitlines()[:3] == [
        "2 problem(s) found in the data:",
        "  - bad.npz case 'case-00001': missing value (NaN) at channel 'ch1', time 4",
        "  - bad.npz case 'case-00003': infinite value (inf) at channel 'ch0', time 7",
    ]
    with pytest.warns(UserWarning, match="Skipped 2 bad case"):
        data = load_signals(str(tmp_path / "bad.npz"), on_bad_file="skip")
    assert data.ids == ["case-00000", "case-00002", "case-00004", "case-00005"]
    assert [p.path for p in data.skipped] == ["bad.npz case 'case-00001'", "bad.npz case 'case-00003'"]


def test_npz_label_count_mismatch_and_missing_arrays(tmp_path):
    X, y = two_class_cases()
    with pytest.raises(DataError) as caught:
        load_signals(write_npz(tmp_path / "m.npz", X, y[:5]))
    assert str(caught.value) == "m.npz: 'y' holds 5 labels for 6 cases in 'X'; give one per case"
    np.savez(tmp_path / "nox.npz", data=X)
    with pytest.raises(DataError, match=r"^nox.npz: has no array 'X'; found \['data'\]"):
        load_signals(str(tmp_path / "nox.npz"))
    np.savez(tmp_path / "obj.npz", X=np.array([np.zeros(3), np.zeros(4)], dtype=object), y=y[:2])
    with pytest.raises(DataError, match=r"^obj.npz: holds object arrays, which are not loaded"):
        load_signals(str(tmp_path / "obj.npz"))


def test_trailing_nan_marks_a_shorter_case(tmp_path):
    X, y = two_class_cases()
    X[2, :, 15:] = np.nan
    path = write_npz(tmp_path / "short.npz", X, y)
    with pytest.raises(DataError, match=r"from 15 to 20 timepoints \(case 'case-00002' has 15"):
        load_signals(path)
    padded = load_signals(path, options={"length_policy": "pad"})
    assert padded.X.shape == (6, 2, 20) and (padded.X[2, :, 15:] == 0).all()


def test_too_few_cases_per_class(tmp_path):
    X, y = two_class_cases(n=6)
    y = np.array(["a", "a", "a", "a", "a", "b"])
    with pytest.raises(DataError) as caught:
        load_signals(write_npz(tmp_path / "few.npz", X, y), min_per_class=3)
    assert str(caught.value) == ("class 'b': 1 case(s), at least 3 needed for the split; add cases, "
                                 "merge or remove the class, or lower --val-size/--test-size")
    with pytest.raises(DataError, match=r"need at least 2 classes, found \['a'\]"):
        load_signals(write_npz(tmp_path / "one.npz", X, ["a"] * 6))


# -- CSV and Parquet --------------------------------------------------------------------------


WIDE = """case_id,label,acc_x_0,acc_x_1,acc_x_2,acc_y_0,acc_y_1,acc_y_2
c0,walk,1,2,3,4,5,6
c1,walk,1,2,abc,4,5,6
c2,run,1,,3,4,5,6
c3,,1,2,3,4,5,6
c4,run,1,2,3,4,5,inf
c5,run,6,5,4,3,2,1
"""


def test_wide_csv_reports_every_bad_cell_naming_case_row_and_column(tmp_path):
    (tmp_path / "w.csv").write_text(WIDE)
    with pytest.raises(DataError) as caught:
        load_signals(str(tmp_path / "w.csv"))
    assert str(caught.value) == "\n".join([
        "4 problem(s) found in the data:",
        "  - w.csv case 'c1': non-numeric value 'abc' at row 3, column 'acc_x_2'",
        "  - w.csv case 'c2': missing value (NaN) at row 4, column 'acc_x_1'",
        "  - w.csv case 'c3': empty label in column 'label'",
        "  - w.csv case 'c4': infinite value (inf) at row 6, column 'acc_y_2'",
        "Fix these values, or pass --on-bad-file skip to leave bad cases out (they are listed in "
        "the run report).",
    ])
    with pytest.warns(UserWarning, match="Skipped 4 bad case"):
        data = load_signals(str(tmp_path / "w.csv"), on_bad_file="skip")
    assert data.ids == ["c0", "c5"] and data.channel_names == ["acc_x", "acc_y"]
    np.testing.assert_array_equal(data.X[1], [[6, 5, 4], [3, 2, 1]])
    assert len(data.report()["skipped"]) == 4


def test_wide_csv_with_plain_index_columns_and_parquet_give_the_same_data(tmp_path):
    X, y = two_class_cases(channels=1, length=5)
    frame = pd.DataFrame(X[:, 0], columns=[str(i) for i in range(5)])
    frame.insert(0, "label", y)
    frame.to_csv(tmp_path / "u.csv", index=False)
    frame.to_parquet(tmp_path / "u.parquet")
    from_csv, from_parquet = load_signals(str(tmp_path / "u.csv")), load_signals(str(tmp_path / "u.parquet"))
    assert from_csv.X.shape == (6, 1, 5) and from_csv.ids[0] == "row-2"
    np.testing.assert_allclose(from_csv.X, from_parquet.X)
    assert from_csv.fingerprint() == from_parquet.fingerprint()


def test_wide_table_with_an_unknown_column(tmp_path):
    (tmp_path / "x.csv").write_text("label,weird,a_0\nx,1,2\n")
    with pytest.raises(DataError, match=r"^x.csv: column 'weird' is not a value column of a wide table"):
        load_signals(str(tmp_path / "x.csv"))


def long_table(n_recordings=2, length=6, labels=None):
    rows = []
    for r in range(n_recordings):
        for t in reversed(range(length)):  # rows out of order: sorted by time on reading
            label = labels(r, t) if labels else f"class{r % 2}"
            rows.append({"case_id": f"r{r}", "time": t, "acc_x": 10 * r + t, "acc_y": -t, "label": label})
    return pd.DataFrame(rows)


def test_long_csv_is_sorted_by_time_and_one_case_per_id(tmp_path):
    long_table(4).to_csv(tmp_path / "long.csv", index=False)
    data = load_signals(str(tmp_path / "long.csv"))
    assert data.ids == ["r0", "r1", "r2", "r3"] and data.channel_names == ["acc_x", "acc_y"]
    np.testing.assert_array_equal(data.X[1], [[10, 11, 12, 13, 14, 15], [0, -1, -2, -3, -4, -5]])
    assert list(data.labels) == ["class0", "class1", "class0", "class1"]


def test_long_csv_errors_name_case_row_and_column(tmp_path):
    frame = long_table(2, labels=lambda r, t: "a" if t < 3 else "b")
    frame["acc_y"] = frame["acc_y"].astype(object)
    frame.loc[2, "acc_y"] = "x"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_signals(str(tmp_path / "bad.csv"))
    lines = str(caught.value).splitlines()
    assert lines[1] == ("  - bad.csv case 'r0': column 'label' changes within the case ('a' at "
                        "timepoint 0, 'b' at timepoint 3); set signal.window to cut labeled windows, "
                        "or give one label per case")
    assert "  - bad.csv case 'r0': non-numeric value 'x' at row 4, column 'acc_y'" in lines


def test_ts_file_is_read_with_aeons_loader(tmp_path):
    import aeon.datasets

    source = aeon.datasets.__file__.replace("__init__.py", "data/GunPoint/GunPoint_TRAIN.ts")
    shutil.copy(source, tmp_path / "gp.ts")
    data = load_signals(str(tmp_path / "gp.ts"))
    assert data.X.shape == (50, 1, 150) and data.classes == ["1", "2"]
    (tmp_path / "broken.ts").write_text("@problemName x\n@classLabel true a b\n@data\n1,2,x:a\n")
    with pytest.raises(DataError, match=r"^broken.ts: cannot be read as a .ts file: could not "
                       r"convert string to float: 'x'$"):
        load_signals(str(tmp_path / "broken.ts"))


# -- windowing and group-aware splitting ------------------------------------------------------


def test_windowing_labels_ids_and_groups(tmp_path):
    frame = long_table(2, length=10, labels=lambda r, t: "rest" if t < 6 else "move")
    frame.to_csv(tmp_path / "rec.csv", index=False)
    options = {"window": 4, "stride": 3}
    majority = load_signals(str(tmp_path / "rec.csv"), options=options)
    assert majority.ids == ["r0@0", "r0@3", "r0@6", "r1@0", "r1@3", "r1@6"]
    assert list(majority.groups) == ["r0"] * 3 + ["r1"] * 3
    # windows cover t 0-3, 3-6, 6-9: labels rest x4 | rest x3 + move | move x4
    assert list(majority.labels) == ["rest", "rest", "move"] * 2
    np.testing.assert_array_equal(majority.X[1, 0], [3, 4, 5, 6])
    last = load_signals(str(tmp_path / "rec.csv"), options={**options, "label_rule": "last"})
    assert list(last.labels)[:3] == ["rest", "move", "move"]
    center = load_signals(str(tmp_path / "rec.csv"), options={**options, "label_rule": "center"})
    assert list(center.labels)[:3] == ["rest", "rest", "move"]
    assert majority.summary["windowing"]["timepoints_not_in_a_window"] == 0


def test_recording_shorter_than_a_window(tmp_path):
    X, y = two_class_cases(length=30)
    X[0, :, 5:] = np.nan  # a 5-timepoint recording
    path = write_npz(tmp_path / "rec.npz", X, y)
    with pytest.raises(DataError) as caught:
        load_signals(path, options={"window": 10})
    assert str(caught.value).splitlines()[1] == (
        "  - rec.npz case 'case-00000': recording of 5 timepoints is shorter than one window (10); "
        "lower signal.window")
    with pytest.warns(UserWarning):
        data = load_signals(path, options={"window": 10}, on_bad_file="skip")
    assert len(data) == 5 * 3 and data.ids[0] == "case-00001@0"


def test_a_recording_never_straddles_train_and_test(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3, 200))
    y = np.repeat(["a", "b", "c"], 4)
    data = load_signals(write_npz(tmp_path / "rec.npz", X, y), options={"window": 50, "stride": 25})
    assert len(data) == 12 * 7
    split = sc.make_split(data, val_size=0.2, test_size=0.25, seed=3)
    assert split.grouped
    recording = {case: case.split("@")[0] for case in data.ids}
    parts = [{recording[c] for c in split.part(name)} for name in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert all(len(part) for part in parts)
    assert {data.labels[data.ids.index(c)] for c in split.test} == {"a", "b", "c"}


def test_window_options_are_checked():
    with pytest.raises(ConfigError, match=r"'signal.stride' option needs 'signal.window'"):
        load_signals("aeon:GunPoint", options={"stride": 5})
    with pytest.raises(ConfigError, match=r"must be one of 'majority', 'last', 'center'. Got 'mode'"):
        RunConfig().updated({"signal.label_rule": "mode"}).validate()


# -- preprocessing and augmentation -----------------------------------------------------------


def test_data_config_is_fitted_on_the_training_part_only_and_is_json():
    data = load_signals("aeon:BasicMotions")
    train = np.arange(40)
    config = signal_data_config(data, train)
    assert config["n_channels"] == 6 and config["n_timepoints"] == 100
    np.testing.assert_allclose(config["mean"], data.X[:40].mean(axis=(0, 2)), rtol=1e-5)
    changed = data.subset(np.arange(80))
    changed.X = changed.X.copy()
    changed.X[40:] += 1000.0  # test cases do not move the statistics
    assert signal_data_config(changed, train) == config
    assert json.loads(json.dumps(config)) == config
    standardized = standardize(data.X[:40], config)
    np.testing.assert_allclose(standardized.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=(0, 2)), 1, atol=1e-3)


def test_preprocessor_accepts_every_shape_and_names_bad_inputs():
    X = np.random.default_rng(0).normal(size=(4, 1, 12))
    config = signal_data_config(X, np.arange(4))
    pre = SignalPreprocessor(config)
    assert pre.item_shape == (1, 12)
    one = pre(pre.as_list(X[0, 0]))  # (T,) is one univariate case
    assert one.shape == (1, 1, 12)
    assert pre(pre.as_list(X)).shape == (4, 1, 12)
    assert pre(pre.as_list([X[0], X[1, 0]])).shape == (2, 1, 12)
    np.testing.assert_allclose(pre(pre.as_list(X)).numpy(), standardize(X, config), rtol=1e-5)
    bad = [np.zeros((2, 12)), np.zeros(10), np.r_[np.zeros(5), np.nan, np.zeros(6)]]
    with pytest.raises(DataError) as caught:
        pre(bad)
    assert str(caught.value).splitlines()[1:] == [
        "  - input 0: has 2 channel(s); the model expects 1 (ch0) (several one-channel cases go in "
        "an (N, 1, T) array)",
        "  - input 1: has 10 timepoints; the model takes 12 (length policy 'error'); cut or pad the "
        "input to 12",
        "  - input 2: contains NaN at channel 0 ('ch0'), time 5",
    ]
    padding = SignalPreprocessor({**config, "length_policy": "pad"})
    assert padding([np.ones(10), np.ones(15)]).shape == (2, 1, 12)
    with pytest.raises(DataError, match="takes arrays, not file names"):
        pre.as_list("data.npz")
    assert as_case([1.0, 2.0]).shape == (1, 2)


def test_to_torch_and_augmentation():
    import torch

    data = load_signals("aeon:BasicMotions")
    config = signal_data_config(data, np.arange(40))
    plain = data.to_torch(config)
    x, target = plain[3]
    assert x.dtype == torch.float32 and x.shape == (6, 100) and target == int(data.y[3])
    assert list(plain.targets) == list(data.y)
    augment = SignalAugmentConfig(enabled=True, p=1.0)
    augmented = data.to_torch(config, augment)
    torch.manual_seed(0)
    changed, _ = augmented[3]
    assert changed.shape == x.shape and not torch.equal(changed, x)
    assert torch.isfinite(changed).all()
    off = augment_signal(x, SignalAugmentConfig(jitter=0, scaling=0, time_shift=0, crop=1.0))
    assert torch.equal(off, x)
    with pytest.raises(ConfigError, match="SignalAugmentConfig"):
        data.to_torch(config, sc.AugmentConfig())


def test_dataset_protocol():
    data = load_signals("aeon:GunPoint")
    assert data.modality == "signal" and len(data) == 200
    assert data.fingerprint() == load_signals("aeon:GunPoint").fingerprint()
    part = data.subset([0, 5])
    assert part.ids == ["train-0000", "train-0005"] and part.classes == data.classes
    assert part.content_hashes == [data.content_hashes[0], data.content_hashes[5]]
    report = data.report()
    assert report["class_counts"] == {"1": 100, "2": 100} and report["n_timepoints"] == 150


def test_npz_with_a_label_per_timepoint_is_windowed(tmp_path):
    X = np.arange(2 * 1 * 12, dtype=float).reshape(2, 1, 12)
    y = np.array([["idle"] * 8 + ["spin"] * 4, ["spin"] * 12])
    data = load_signals(write_npz(tmp_path / "t.npz", X, y), options={"window": 4})
    assert data.ids == ["case-00000@0", "case-00000@4", "case-00000@8", "case-00001@0",
                        "case-00001@4", "case-00001@8"]
    assert list(data.labels) == ["idle", "idle", "spin", "spin", "spin", "spin"]
    with pytest.raises(DataError, match=r"'y' has shape \(2, 5\) but 'X' has 12 timepoints"):
        load_signals(write_npz(tmp_path / "bad.npz", X, y[:, :5]))


def test_empty_trailing_cells_of_a_wide_table_mark_a_shorter_case(tmp_path):
    (tmp_path / "s.csv").write_text("label,0,1,2,3\na,1,2,3,4\nb,1,2,,\na,4,3,2,1\nb,0,0,0,0\n")
    with pytest.raises(DataError, match=r"from 2 to 4 timepoints \(case 'row-3' has 2"):
        load_signals(str(tmp_path / "s.csv"))
    data = load_signals(str(tmp_path / "s.csv"), options={"length_policy": "pad"})
    np.testing.assert_array_equal(data.X[1, 0], [1, 2, 0, 0])
