"""A model folder is validated against its schema and itself before use: tampered copies of real
model folders are refused with one ArtifactError naming the file and the field, by the API and
by every command (exit code 2, one line, no traceback), and ``serve`` refuses before binding."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sigclass as sc
from servers import free_port
from sigclass.exceptions import ArtifactError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A headless image model trained on a tiny generated folder (4 classes), a signal network
    and an ensemble of two signal networks, saved once for the module."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(3)
    colours = {"blue": (30, 40, 200), "gray": (120, 120, 120), "green": (30, 180, 40),
               "red": (200, 30, 30)}
    for name, rgb in colours.items():
        (root / name).mkdir()
        for i in range(6):
            array = np.clip(np.array(rgb) + rng.integers(-30, 30, (24, 24, 3)), 0, 255)
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{i}.png")
    out = tmp_path_factory.mktemp("models")
    sc.train(root, mode="headless", model="efficientnet_lite0", image_size=32, head="logreg",
             backend="torch", tta="none", cv_folds=2, cam_examples=0, out=out / "image",
             progress=False, **{"tracking.enabled": False})
    signal = [_signal_predictor(seed) for seed in (0, 1)]
    signal[0].save(out / "signal")
    from sigclass.ensemble import EnsemblePredictor

    EnsemblePredictor(signal, [0.6, 0.4], ["a", "b"]).save(out / "ensemble")
    return {"image": out / "image" / "model", "signal": out / "signal", "ensemble": out / "ensemble",
            "data": root}


def _signal_predictor(seed: int):
    """A small 1D CNN (2 channels, 50 time points, 3 classes) as saved after training."""
    import torch

    torch.manual_seed(seed)
    network = sc.create_model("simple_cnn1d", n_classes=3, in_chans=2, n_timepoints=50)
    data_config = {"modality": "signal", "n_channels": 2, "n_timepoints": 50,
                   "channel_names": ["x", "y"], "mean": [0.0, 0.5], "std": [1.0, 2.0],
                   "length_policy": "error", "reader": {"window": None, "length_policy": "error"}}
    return sc.Predictor(network, ["idle", "run", "walk"], data_config, modality="signal",
                        mode="scratch")


def tampered(source: Path, tmp_path: Path, change=None, name: str = "model") -> Path:
    """A copy of the model folder ``source`` with ``change(document, folder)`` applied to its
    ``model.json`` (returning a document writes it back)."""
    folder = Path(shutil.copytree(source, tmp_path / name, symlinks=True))
    if change is not None:
        document = json.loads((folder / "model.json").read_text())
        changed = change(document, folder)
        if changed is not None:
            (folder / "model.json").write_text(changed if isinstance(changed, str)
                                               else json.dumps(changed))
    return folder


def _set(path: str, value):
    """A change that sets the dotted ``path`` of the document to ``value``."""
    def change(document, folder):
        *parents, last = path.split(".")
        target = document
        for key in parents:
            target = target[key]
        target[last] = value
        return document
    return change


def _deep(document, folder):
    document["info"]["deep"] = "DEEP"
    return json.dumps(document).replace('"DEEP"', "[" * 5000 + "1" + "]" * 5000)


def _symlink_weights_out(document, folder):
    outside = folder.parent / "elsewhere.safetensors"
    shutil.move(folder / "weights.safetensors", outside)
    (folder / "weights.safetensors").symlink_to(outside)


def _missing_head(document, folder):
    (folder / "head.skops").unlink()


def _duplicate_key(document, folder):
    return json.dumps(document)[:-1] + ', "mode": "scratch"}'


def _head_outside(document, folder):
    document["head"]["file"] = "../head.skops"
    document["files"]["../head.skops"] = document["files"].pop("head.skops")
    return document


IMAGE_CASES = {
    "classes cut to 3 for a 4-class head": (_set("classes", ["blue", "gray", "green"]),
                                            r"field 'classes': 3 class\(es\) listed, the head .* has 4"),
    "classes renamed": (_set("classes", ["azure", "gray", "green", "red"]),
                        r"field 'classes'.*not in the head: \['azure'\]"),
    "an extra class": (_set("classes", ["blue", "gray", "green", "red", "pink"]),
                       r"field 'classes': 5 class\(es\) listed"),
    "a class twice": (_set("classes", ["blue", "blue", "green", "red"]),
                      r"field 'classes': \['blue'\] listed more than once"),
    "classes as a string": (_set("classes", "blue,gray"), r"field 'classes': expected a valid list"),
    "strings in input_size": (_set("data_config.input_size", ["3", "32", "32"]),
                              r"field 'data_config.input_size\[0\]': expected a valid integer"),
    "input_size of two values": (_set("data_config.input_size", [32, 32]),
                                 r"field 'data_config.input_size': List should have at least 3"),
    "a negative image side": (_set("data_config.input_size", [3, -32, 32]),
                              r"field 'data_config.input_size\[1\]': expected greater than or equal to 1"),
    "a string format_version": (_set("format_version", "1"),
                                r"field 'format_version': expected a valid integer, got '1'"),
    "a newer format_version": (_set("format_version", 99),
                               r"field 'format_version': 99 was written by a newer sigclass .*; fix: upgrade sigclass"),
    "a list for files": (_set("files", ["weights.safetensors", "head.skops"]),
                         r"field 'files': expected a valid dictionary"),
    "a checksum that is not one": (lambda d, f: {**d, "files": {**d["files"], "weights.safetensors": 42}},
                                   r"field 'files.weights.safetensors': expected a valid string"),
    "deeply nested JSON": (_deep, r"model.json' is corrupted: JSON nested 5002 levels deep"),
    "malformed JSON": (lambda d, f: '{"format": "sigclass-model", ',
                       r"model.json' is corrupted \(Expecting property name"),
    "a JSON list": (lambda d, f: "[1, 2]", r"is not a sigclass model description \(a JSON list"),
    "a duplicated key": (_duplicate_key, r"the key\(s\) \['mode'\] appear more than once"),
    "NaN in mean": (lambda d, f: json.dumps(d).replace('"mean": [0.5', '"mean": [NaN'),
                    r"NaN is not a JSON number"),
    "a zero std": (_set("data_config.std", [0.5, 0.0, 0.5]),
                   r"field 'data_config.std\[1\]': expected greater than 0"),
    "an unknown interpolation": (_set("data_config.interpolation", "magic"),
                                 r"field 'data_config.interpolation': expected 'nearest'"),
    "an unknown mode": (_set("mode", "fine-tune"), r"field 'mode': expected 'headless', 'finetune'"),
    "an unknown field": (_set("run_this", "rm -rf /"), r"field 'run_this': unknown field"),
    "a headless network with a classifier": (_set("network.n_classes", 4),
                                             r"field 'network.n_classes': a headless model's network"),
    "a file outside the folder": (lambda d, f: {**d, "files": {**d["files"], "../../etc/passwd": "0" * 64}},
                                  r"field 'files\['../../etc/passwd'\]': names a file outside the model folder"),
    "an absolute file": (lambda d, f: {**d, "files": {**d["files"], "/etc/passwd": "0" * 64}},
                         r"field 'files\['/etc/passwd'\]': names a file outside the model folder"),
    "a head outside the folder": (_head_outside, r"field 'head.file': names a file outside"),
    "weights linked from outside": (_symlink_weights_out,
                                    r"field 'files\['weights.safetensors'\]': 'weights.safetensors' "
                                    r"is a link that leads outside the model folder"),
    "a checkpoint_path option": (_set("network.kwargs.checkpoint_path", "/etc/passwd"),
                                 r"field 'network.kwargs.checkpoint_path': an option that can name a file"),
    "a weights option": (_set("network.kwargs.weights", "x"), r"field 'network.kwargs.weights'"),
    "a path as an option value": (_set("network.kwargs.drop_rate", "../../secret"),
                                  r"field 'network.kwargs.drop_rate': '../../secret' looks like a path"),
    "a file as an option value": (_set("network.kwargs.drop_rate", "model.pth"),
                                  r"field 'network.kwargs.drop_rate': 'model.pth' looks like a path"),
    "a URL as a network name": (_set("network.name", "hf-hub:timm/resnet18"),
                                r"field 'network.name': String should match pattern"),
    "a missing head file": (_missing_head, r"Model file '.*head.skops' is missing"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_a_tampered_image_model_is_refused_naming_the_field(models, tmp_path, case):
    change, message = IMAGE_CASES[case]
    folder = tampered(models["image"], tmp_path, change)
    with pytest.raises(ArtifactError, match=message) as caught:
        sc.load(folder)
    assert "\n" not in str(caught.value)
    assert "model.json" in str(caught.value) or "Model file" in str(caught.value)


def test_every_problem_is_reported_at_once(models, tmp_path):
    def change(document, folder):
        document["format_version"] = "1"
        document["data_config"]["input_size"] = [3, "a", 32]
        document["network"]["kwargs"]["pretrained_file"] = "/tmp/x.pth"
        return document

    folder = tampered(models["image"], tmp_path, change)
    with pytest.raises(ArtifactError) as caught:
        sc.load(folder)
    text = str(caught.value)
    assert text.startswith(f"'{folder / 'model.json'}': field 'format_version'")
    assert "field 'data_config.input_size[1]'" in text
    assert "field 'network.kwargs.pretrained_file'" in text
    assert text.endswith("; fix: restore the model folder from its run or the model registry "
                         "(the file was modified or damaged).")


def _cut_signal_classes(document, folder):
    document["classes"] = ["idle", "run"]
    document["network"]["n_classes"] = 2
    return document


SIGNAL_CASES = {
    "classes cut, n_classes left": (_set("classes", ["idle", "run"]),
                                    r"field 'classes': 2 class\(es\) listed but 'network.n_classes' is 3"),
    "classes and n_classes cut": (_cut_signal_classes,
                                  r"weights.safetensors' does not fit field 'network' of model.json: "
                                  r"'.*' has shape \[3, .*\], the network built from model.json \[2,"),
    "channel names for 3 channels": (_set("data_config.channel_names", ["x", "y", "z"]),
                                     r"field 'data_config.channel_names': 3 value\(s\) for 2 channel"),
    "a string n_channels": (_set("data_config.n_channels", "2"),
                            r"field 'data_config.n_channels': expected a valid integer"),
    "in_chans against the data": (_set("network.in_chans", 3),
                                  r"field 'network.in_chans': 3 differs from the 2 input channel"),
    "an unknown reader option": (_set("data_config.reader.shell", "ls"),
                                 r"field 'data_config.reader': 'shell' is not a reading option"),
    "no time points": (_set("data_config.n_timepoints", 0),
                       r"field 'data_config.n_timepoints': expected greater than or equal to 1, got 0"),
    "a signal detector": (_set("task", "detection"),
                          r"field 'task': a signal model does 'detection'; it can do 'classification'"),
}


@pytest.mark.parametrize("case", list(SIGNAL_CASES))
def test_a_tampered_signal_model_is_refused_naming_the_field(models, tmp_path, case):
    change, message = SIGNAL_CASES[case]
    with pytest.raises(ArtifactError, match=message):
        sc.load(tampered(models["signal"], tmp_path, change))


ENSEMBLE_CASES = {
    "a member outside": (_set("members", [{"folder": "../../elsewhere", "weight": 1.0},
                                          {"folder": "members/b", "weight": 1.0}]),
                         r"field 'members\[0\].folder': names a member outside the model folder"),
    "a negative weight": (lambda d, f: {**d, "members": [{**d["members"][0], "weight": -1}, d["members"][1]]},
                          r"field 'members\[0\].weight': expected greater than or equal to 0"),
    "one member": (lambda d, f: {**d, "members": d["members"][:1]},
                   r"field 'members': List should have at least 2 items"),
    "classes renamed": (_set("classes", ["idle", "run", "sprint"]),
                        r"field 'classes': the ensemble lists signal classes .* but members\[0\]"),
}


@pytest.mark.parametrize("case", list(ENSEMBLE_CASES))
def test_a_tampered_ensemble_is_refused_naming_the_field(models, tmp_path, case):
    change, message = ENSEMBLE_CASES[case]
    with pytest.raises(ArtifactError, match=message):
        sc.load(tampered(models["ensemble"], tmp_path, change))


def test_the_untampered_folders_load_and_the_path_is_where_they_were_loaded_from(models, tmp_path):
    folder = tampered(models["signal"], tmp_path, _set("info.path", str(models["image"])))
    predictor = sc.load(folder)
    assert predictor.classes == ["idle", "run", "walk"]
    assert predictor.info["path"] == str(folder)  # the ONNX cache is never another model's
    assert sc.load(models["ensemble"]).classes == ["idle", "run", "walk"]


def sigclass_cli(*args, cwd=None, env=None, timeout=240):
    environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done, *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0]


CLI_CASES = {
    "predict, classes cut": ("predict", _set("classes", ["blue", "gray", "green"]), "field 'classes'"),
    "predict, a list for files": ("predict", _set("files", ["weights.safetensors"]), "field 'files'"),
    "evaluate, a string format_version": ("evaluate", _set("format_version", "1"),
                                          "field 'format_version'"),
    "explain, a path option": ("explain", _set("network.kwargs.checkpoint_path", "/etc/passwd"),
                               "field 'network.kwargs.checkpoint_path'"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_commands_refuse_a_tampered_model_in_one_line_with_exit_code_2(models, tmp_path, case):
    command, change, fragment = CLI_CASES[case]
    folder = tampered(models["image"], tmp_path, change)
    image = next(models["data"].glob("red/*.png"))
    arguments = {"predict": [image, "-o", tmp_path / "p.csv", "-q"],
                 "evaluate": [models["data"]],
                 "explain": [image, "--out", tmp_path / "maps"]}[command]
    done = sigclass_cli(command, folder, *arguments)
    assert_one_line_error(done, fragment, str(folder / "model.json"))
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "maps").exists()


def test_serve_refuses_a_bad_model_before_binding_its_port(models, tmp_path):
    folder = tampered(models["image"], tmp_path, _set("classes", ["azure", "gray", "green", "red"]))
    port = free_port()
    done = sigclass_cli("serve", folder, "--port", port)
    assert_one_line_error(done, "field 'classes'", "not in the head: ['azure']")
    assert "Uvicorn running" not in done.stderr + done.stdout
    with socket.socket() as sock:  # nothing was left listening there
        sock.bind(("127.0.0.1", port))


def test_serve_of_a_registry_uri_creates_no_tracking_store(tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "SIGCLASS_TRACKING_DIR")}
    done = subprocess.run([sys.executable, "-m", "sigclass", "serve", "models:/evil@prod",
                           "--port", str(free_port())], cwd=cwd,
                          env={**env, "PYTHONPATH": str(REPO / "src")},
                          capture_output=True, text=True, timeout=240)
    assert_one_line_error(done, "Cannot load 'models:/evil@prod': there is no model registry at",
                          str(cwd / "mlflow.db"))
    assert sorted(p.name for p in cwd.iterdir()) == []
