"""The quick-test page at GET /, driven in headless Chromium against a real server."""

from __future__ import annotations

import shutil

import httpx
import pytest

from detection_models import needs_bccd, train_detection_model
from servers import running_server, train_image_model

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(fridge, tmp_path_factory):
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("page")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(out / "cache"))
        model = train_image_model(fridge, out)
        with running_server(model, "--backend", "torch") as (base, _):
            yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    with sync_playwright() as playwright:  # one per module: Playwright's sync API cannot nest
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(server, browser):
    page = browser.new_page()
    page.goto(server + "/")
    yield page
    page.close()


def test_page_shows_class_bars_and_overlay(server, page, fridge):
    from playwright.sync_api import expect

    photo = sorted((fridge / "milk_bottle").iterdir())[-1]
    expected = httpx.post(server + "/predict", files={"file": (photo.name, photo.read_bytes())},
                          timeout=60).json()
    expect(page.locator("#model")).to_contain_text("classes: can, carton, milk_bottle, water_bottle")
    page.set_input_files("#file", str(photo))
    page.click("#submit")
    expect(page.locator("#result")).to_be_visible(timeout=60_000)
    expect(page.locator("#predicted")).to_have_text(expected["class"])
    bars = page.locator("#bars .bar")
    expect(bars).to_have_count(4)
    assert bars.first.get_attribute("data-class") == expected["class"]
    shown = page.locator(f'#bars .bar[data-class="{expected["class"]}"] .value').inner_text()
    assert shown == f"{100 * expected['confidence']:.1f}%"
    overlay = page.locator("#overlay")
    expect(overlay).to_be_visible()
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('overlay').naturalWidth") > 0
    expect(page.locator("#caption")).to_contain_text(f"map of class {expected['class']}")
    expect(page.locator("#set-classes")).to_have_text("{" + ", ".join(expected["prediction_set"]) + "}")
    expect(page.locator("#unknown")).to_be_hidden()
    expect(page.locator("#ood")).to_contain_text(f"score {expected['ood_score']:.3f}")


def test_page_shows_the_unknown_badge_for_noise(page, tmp_path):
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3)).astype(np.uint8)).save(noise)
    page.set_input_files("#file", str(noise))
    page.click("#submit")
    expect(page.locator("#unknown")).to_be_visible(timeout=60_000)
    expect(page.locator("#ood")).to_contain_text("far from the training data")


def test_page_shows_the_error_of_a_bad_file(page, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    page.set_input_files("#file", str(bad))
    page.click("#submit")
    expect(page.locator("#status")).to_contain_text("Error: notes.jpg: is not an image",
                                                    timeout=30_000)
    expect(page.locator("#result")).to_be_hidden()


@pytest.fixture(scope="module")
def detection_server(tmp_path_factory):
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    run = train_detection_model(tmp_path_factory.mktemp("page-detect"))
    with running_server(run / "model", "--device", "cpu") as (base, _):
        yield base, run


@needs_bccd
def test_page_draws_the_boxes_of_a_detection_model(detection_server, browser):
    from playwright.sync_api import expect

    base, run = detection_server
    image = sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[0]
    expected = httpx.post(base + "/predict?score_threshold=0", timeout=60,
                          files={"file": (image.name, image.read_bytes())}).json()["boxes"]
    assert expected
    page = browser.new_page()
    try:
        page.goto(base + "/")
        expect(page.locator("#model")).to_contain_text("detection, classes: Platelets, RBC, WBC")
        expect(page.locator("#explain-label")).to_be_hidden()
        page.fill("#threshold", "0")
        page.set_input_files("#file", str(image))
        page.click("#submit")
        expect(page.locator("#detections")).to_be_visible(timeout=60_000)
        boxes = page.locator("#photo-boxes .box")
        expect(boxes).to_have_count(len(expected))
        first = expected[0]
        expect(boxes.first.locator(".label")).to_have_text(
            f"{first['class']} {100 * first['score']:.0f}%")
        expect(page.locator("#found")).to_have_text(
            f"{len(expected)} object{'' if len(expected) == 1 else 's'} found")
        photo, drawn = page.locator("#photo").bounding_box(), boxes.first.bounding_box()
        scale = photo["width"] / 160  # the tiny BCCD images are 160 px wide
        assert abs(drawn["x"] - photo["x"] - first["xmin"] * scale) < 3
        assert abs(drawn["y"] - photo["y"] - first["ymin"] * scale) < 3
        assert abs(drawn["width"] - (first["xmax"] - first["xmin"]) * scale) < 3
    finally:
        page.close()
