"""What the pipelines refuse in their inputs, and how the message names it: the one check every caller (the
command line, the server, a script) goes through."""

from __future__ import annotations

import pytest

from bertforge.errors import InputError
from bertforge.pipelines import pipeline
from conftest import REPO

BUNDLED = REPO / "src" / "bertforge" / "pretrained"


@pytest.fixture(scope="module")
def mini():
    return BUNDLED / "bertforge-mini"


def test_next_sentence_refuses_an_empty_sentence(mini):
    """The command line and the server refused a pair with an empty half; the pipeline scored it (a
    probability that nothing follows a sentence, or that a sentence follows nothing)."""
    nsp = pipeline("next-sentence", model=mini)
    with pytest.raises(InputError, match=r"^pair 1: sentence B is empty; the head scores whether B follows A$"):
        nsp(("The man went to the store.", ""))
    with pytest.raises(InputError, match=r"^pair 2: sentence A is empty"):
        nsp([("a", "b"), {"text": " \u200b", "text_pair": "He bought milk."}])
    assert nsp(("The man went to the store.", "He bought milk."))["label"] in ("isNext", "notNext")


def test_contextual_similarity_names_examples_that_are_no_list(mini):
    """A number failed in list() with a TypeError; a string was read a character at a time ("example 1:
    expected (sentence, word), got 'a'"), a dict by its keys; one pair alone was taken for two examples."""
    similarity = pipeline("contextual-similarity", model=mini)
    for given, kind in ((5, "int"), ("a bank", "str"), ({"a bank": "bank", "the bank": "bank"}, "dict")):
        with pytest.raises(InputError, match=rf"^examples must be a list of \(sentence, word\) pairs, got {kind}$"):
            similarity(given)
    with pytest.raises(InputError, match=r"^contextual similarity needs at least two \(sentence, word\) examples$"):
        similarity(("We sat on the bank", "bank"))
    pair, = similarity([("We sat on the bank", "bank"), ("She went to the bank", "bank")]).pairs()
    assert pair["word"] == "bank"
