"""The attention pipeline: maps of every layer and head whose rows sum to 1, drawn as a PNG grid and as a
self-contained HTML viewer rendered in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bertforge.pipelines import pipeline


@pytest.fixture(scope="module")
def attention_maps():
    return pipeline("attention")("Paris is a beautiful city", "I love Paris")


def test_attention_maps_cover_every_layer_and_head(attention_maps):
    maps = attention_maps
    assert maps.tokens[:3] == ["[CLS]", "paris", "is"] and maps.segment_ids[-1] == 1
    assert maps.weights.shape == (6, 12, len(maps.tokens), len(maps.tokens))
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)


def test_attention_png_has_size_and_content(attention_maps, tmp_path):
    import matplotlib.image

    image = matplotlib.image.imread(attention_maps.save_png(tmp_path / "grid.png"))
    height, width = image.shape[:2]
    assert height >= 400 and width >= 800
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 100


def test_attention_html_renders_in_headless_chromium(attention_maps, tmp_path):
    page_file = attention_maps.save_html(tmp_path / "attention.html")
    text = page_file.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # self-contained, no network
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (/usr/bin/chromium): the HTML viewer is not rendered")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())
        assert page.inner_text("#from").split() == attention_maps.tokens
        page.select_option("#layer", index=2)  # the third layer (labels count from 1)
        page.select_option("#head", index=4)
        page.hover("#from .token:nth-child(2)")
        shades = page.locator("#to .token").evaluate_all("spans => spans.map(s => s.style.background)")
        browser.close()
    assert errors == []
    expected = attention_maps.weights[2, 4, 1]
    alphas = [float(s.rsplit(",", 1)[1].rstrip(")")) for s in shades]
    np.testing.assert_allclose(alphas, expected, atol=3e-3)  # the browser keeps alpha to 8 bits
