"""The Modality contract: every registered modality implements it, the option choices name
exactly the registered modalities, and ``modality_of`` answers for every kind of object the
rest of sigclass asks about."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sigclass.choices import MODALITIES as NAMES
from sigclass.choices import MODES
from sigclass.config import RunConfig
from sigclass.exceptions import ConfigError
from sigclass.modalities import (
    LEAN,
    MODALITIES,
    LeanModality,
    Modality,
    detect_modality,
    lean_modality,
    modality_of,
    resolve_modality,
)
from sigclass.models import is_model


def test_the_option_choices_are_the_registered_modalities():
    assert tuple(MODALITIES) == tuple(LEAN) == NAMES
    for name, modality in MODALITIES.items():
        assert isinstance(modality, Modality) and modality.name == name


@pytest.mark.parametrize("name", NAMES)
def test_a_modality_names_its_modes_default_networks_and_inputs(name):
    modality = MODALITIES[name]
    assert modality.modes and set(modality.modes) <= set(MODES)
    for mode in modality.modes:
        model = modality.default_model(mode)
        assert is_model(model), f"{name}/{mode}: default '{model}' is not a network"
        modality.check_mode(mode, model)
    assert modality.map_ndim in (1, 2)
    assert modality.body_types or modality.json_inputs, "the service needs some way to send inputs"
    assert modality.upload_hint("file")
    assert {e.mode for e in modality.default_entries()} <= set(modality.modes)


def test_a_mode_that_does_not_apply_is_refused_with_the_ones_that_do():
    with pytest.raises(ConfigError, match="pretrained 1D networks"):
        modality_of("signal").check_mode("finetune", None)
    with pytest.raises(ConfigError, match="not a signal network"):
        modality_of("signal").check_mode("scratch", "efficientnet_lite0")


def test_modality_of_answers_for_names_objects_and_explanations():
    assert modality_of("image") is MODALITIES["image"]
    assert modality_of(RunConfig(modality="signal")) is MODALITIES["signal"]
    assert modality_of(SimpleNamespace(modality="image")) is MODALITIES["image"]
    assert modality_of(SimpleNamespace(map=np.zeros(50))) is MODALITIES["signal"]
    assert modality_of(SimpleNamespace(map=np.zeros((4, 4)))) is MODALITIES["image"]
    with pytest.raises(ConfigError, match="The 'modality' option must be one of 'image', 'signal'. Got 'audio'."):
        modality_of("audio")


def test_sources_are_claimed_by_their_modality(tmp_path, colour_folder):
    np.savez(tmp_path / "cases.npz", X=np.zeros((4, 2, 16)), y=np.array(["a", "b"] * 2))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nx.png,a\n")
    table = tmp_path / "table.csv"
    table.write_text("case_id,time,acc,label\n0,0,1.0,a\n")
    assert detect_modality(str(tmp_path / "cases.npz")).name == "signal"
    assert detect_modality("aeon:GunPoint").name == "signal"
    assert detect_modality(str(table)).name == "signal"
    assert detect_modality(str(manifest)).name == "image"
    assert detect_modality(str(colour_folder)).name == "image"
    assert detect_modality("elpv:binary").name == "image"
    assert resolve_modality("auto", str(table)).name == "signal"
    assert resolve_modality("image", str(table)).name == "image"  # the option wins


@pytest.mark.parametrize("name", NAMES)
def test_a_modality_reads_uploads_with_its_lean_part(name):
    """The lean serving runtime and the full service read uploads with the same code, and a
    model's data-config schema is the one of the modality its lean part names."""
    from sigclass.model_schema.data_configs import DATA_CONFIGS

    lean = lean_modality(name)
    assert isinstance(lean, LeanModality) and not isinstance(lean, Modality) and lean.name == name
    assert isinstance(MODALITIES[name], type(lean))
    assert MODALITIES[name].decode_upload.__func__ is type(lean).decode_upload
    assert callable(lean.inputs) and DATA_CONFIGS[name].modality_name == name
    with pytest.raises(ConfigError, match="Got 'audio'"):
        lean_modality("audio")
