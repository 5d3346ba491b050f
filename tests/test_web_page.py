"""The page at `/` in headless Chromium (Debian's package, driven by Playwright): fill-mask
candidates, next sentence, NER, QA and the attention viewer against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bertforge.model import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                             BertForTokenClassification)
from bertforge.server import ServerSettings, background_server, create_app, load_served_model
from bertforge.tokenization import BertTokenizer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, default_model_dir, tiny_pretraining_checkpoint):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("page-models")
    tokenizer = BertTokenizer.from_pretrained()
    BertForTokenClassification(BertConfig.from_size("tiny", id2label={0: "O", 1: "B-PER", 2: "I-PER"})) \
        .save_pretrained(root / "ner", tokenizer=tokenizer)
    BertForQuestionAnswering(BertConfig.from_size("tiny")).save_pretrained(root / "qa", tokenizer=tokenizer)
    BertForSequenceClassification(BertConfig.from_size("tiny", id2label={0: "neg", 1: "pos"})) \
        .save_pretrained(root / "sentiment", tokenizer=tokenizer)
    models = [load_served_model("minilm", default_model_dir),
              load_served_model("pretrained", tiny_pretraining_checkpoint),
              load_served_model("ner", root / "ner"), load_served_model("qa", root / "qa"),
              load_served_model("sentiment", root / "sentiment")]
    with background_server(create_app(models, ServerSettings(inference="thread"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package 'chromium'; `make test` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield browser
        browser.close()


def test_page_fill_mask_attention_ner_qa_without_console_errors(page_server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 1500})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    requests_outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith((page_server, "data:"))
            else requests_outside.append(request.url))
    page.goto(page_server + "/")
    page.wait_for_selector("#fill-mask-section:not(.hidden)")
    # each task lists only the models that do it
    assert page.locator("#classify-model option").all_inner_texts() == ["sentiment"]
    assert page.locator("#ner-model option").all_inner_texts() == ["ner"]

    page.fill("#fill-mask-input", "The capital of France is [MASK].")
    page.click("#fill-mask-run")
    page.wait_for_selector("#fill-mask-output .bar-row")
    assert page.locator("#fill-mask-output .bar-row").count() == 5
    assert "%" in page.inner_text("#fill-mask-output")

    page.click("#nsp-run")
    page.wait_for_selector("#nsp-output .bar-row")
    assert "is next" in page.inner_text("#nsp-output")

    page.click("#classify-run")
    page.wait_for_selector("#classify-output .bar-row")
    rows = page.locator("#classify-output .bar-row > span:first-child").all_inner_texts()
    assert sorted(rows) == ["neg", "pos"]  # every label with its bar

    page.click("#ner-run")
    page.wait_for_selector("#ner-output p")
    assert "Jim" in page.inner_text("#ner-output")

    page.click("#qa-run")
    page.wait_for_selector("#qa-output .answer")
    answer = page.inner_text("#qa-output .answer")
    assert answer and answer in page.input_value("#qa-context")

    page.select_option("#attention-model", "minilm")
    page.click("#attention-run")
    page.wait_for_selector("#attention-output .tok")
    tokens = page.locator("#attention-output .tok")
    assert tokens.first.inner_text() == "[CLS]" and tokens.count() > 10
    assert page.locator("#attention-layer option").count() == 6 and page.locator("#attention-head option").count() == 12
    page.select_option("#attention-layer", "2")
    page.select_option("#attention-head", "3")
    tokens.nth(7).hover()
    page.wait_for_selector("#attention-output .tok.focus")
    shades = [tokens.nth(i).get_attribute("title") for i in range(tokens.count())]
    total = sum(float(s.rstrip("%")) for s in shades)
    assert abs(total - 100) < 1, shades  # the hovered token's attention over all tokens

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web_page.png"
    page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size[0] >= 1000 and high - low > 100  # not a blank page
    assert not problems, problems
    assert not requests_outside, requests_outside
    page.close()


def test_page_marks_the_characters_the_api_names_in_texts_with_emoji(page_server, browser):
    """The API counts code points, JavaScript UTF-16 units: before the page cut by code points, each
    emoji before an entity or answer shifted its mark one character left."""
    import json
    import urllib.request

    def api(path: str, body: dict) -> dict:
        request = urllib.request.Request(page_server + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return json.load(response)

    text = "🎉 Jim Henson 🎉 met Ann 🎉 Lee in 🎉 Paris and 🎉 Tom 🎉 Hanks in Rome 🎉 today."
    entities = api("/v1/ner", {"input": text, "model": "ner"})["results"][0]
    assert entities  # the tiny random tagger's guesses: enough to see where the page puts them
    page = browser.new_page()
    page.goto(page_server + "/")
    page.wait_for_selector("#ner-section:not(.hidden)")
    page.fill("#ner-input", text)
    page.click("#ner-run")
    page.wait_for_selector("#ner-output p")
    marked = page.locator("#ner-output mark").evaluate_all("marks => marks.map(m => m.firstChild.textContent)")
    assert marked == [text[e["start"]:e["end"]] for e in entities]

    question, context = "Who?", "🎉🎉 Jim 🎉 Henson 🎉 lives 🎉 in Paris 🎉."
    answer = api("/v1/qa", {"input": {"question": question, "context": context}, "model": "qa"})["results"][0]
    page.fill("#qa-question", question)
    page.fill("#qa-context", context)
    page.click("#qa-run")
    page.wait_for_selector("#qa-output .answer")
    assert page.inner_text("#qa-output .answer") == context[answer["start"]:answer["end"]] == answer["answer"]
    page.close()
