"""The fast sentence splitter against pysbd, the reference it replaces (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertforge.errors import ConfigError
from bertforge.pretraining.sentences import PysbdSplitter, RuleSplitter, make_splitter

FIXTURE = Path(__file__).parent / "fixtures" / "sentences" / "paragraphs.jsonl"
AGREEMENT_BOUND = 0.97  # the bound on sentence boundaries shared with pysbd


def boundaries(paragraph: str, sentences: list[str]) -> set[int]:
    """Where in `paragraph` (spaces normalised) each sentence but the last ends."""
    text, ends, position = " ".join(paragraph.split()), set(), 0
    for sentence in sentences[:-1]:
        position = text.index(sentence, position) + len(sentence)
        ends.add(position)
    return ends


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    return [json.loads(line)["text"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def reference(paragraphs) -> list[list[str]]:
    splitter = PysbdSplitter()
    return [splitter.split(p) for p in paragraphs]


def test_boundaries_agree_with_pysbd(paragraphs, reference):
    splitter = RuleSplitter()
    shared = either = 0
    differing = []
    for paragraph, expected in zip(paragraphs, reference, strict=True):
        ours, theirs = boundaries(paragraph, splitter.split(paragraph)), boundaries(paragraph, expected)
        shared += len(ours & theirs)
        either += len(ours | theirs)
        if ours != theirs:
            differing.append(paragraph[:80])
    assert either > 400  # the fixture really has many boundaries to agree on
    agreement = shared / either
    assert agreement >= AGREEMENT_BOUND, f"agreement {agreement:.4f}; first differences: {differing[:5]}"


def test_sentences_keep_the_text(paragraphs, reference):
    """Every character of a paragraph (but spaces) lands in exactly one sentence, in order."""
    splitter = RuleSplitter()
    for paragraph in paragraphs:
        assert "".join(splitter.split(paragraph)).replace(" ", "") == "".join(paragraph.split())


@pytest.mark.parametrize("text", [
    "Mr. Smith met Dr. Watson at 221 B. Baker St. in London. They talked.",
    "It cost $3.50 on p. 45 of vol. ii. He paid, i.e. at once. The end.",
    '"Her decease," he said, "would leave him the last." While he spoke, she left.',
    "‘Will you come in here?’ said Knight. He did not.",
    "Wait... What was that? I don't know!! Let's go.",
    "The list: 1. eggs 2. milk 3. bread. Then home.",
    "He waited--and yet. No one came--so he left. Alone.",
    "[Footnote 12: See Gibbon, l. ii. p. 93. The rest is lost.]",
    "THE END",
    "A private-use \ue001 character. And pysbd's own ∯ placeholder. Both go to pysbd.",
])
def test_examples_as_pysbd(text):
    assert RuleSplitter().split(text) == PysbdSplitter().split(text)


def test_paragraphs_and_hard_wrapping():
    text = "First line of a\nwrapped sentence. Second one.\n\n  \nNew paragraph without a stop"
    assert RuleSplitter().split(text) == ["First line of a wrapped sentence.", "Second one.",
                                          "New paragraph without a stop"]
    assert RuleSplitter().split(" \n\n ") == []


def test_unknown_splitter_names_the_option():
    assert isinstance(make_splitter("pysbd"), PysbdSplitter)
    with pytest.raises(ConfigError, match="--splitter"):
        make_splitter("spacy")
