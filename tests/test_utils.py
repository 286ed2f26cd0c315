"""Small shared helpers: run records."""

from sigclass._utils import environment_info


def test_environment_info_names_versions_and_device():
    info = environment_info("cpu")
    assert info["device"] == "cpu"
    assert {"python", "torch", "timm", "scikit-learn"} <= set(info["versions"])
