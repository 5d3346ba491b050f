"""Token classification of texts longer than the model's length: `stride=N` reads them in overlapping windows
(transformers' option, its merge of the windows' entities and its refusals), and `/v1/ner` answers on the whole
text. On the bundled CoNLL-2003 tagger and the CoNLL-2003 fixture's sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fixture_data
from server_helpers import call

from bertforge.errors import InputError
from bertforge.io.datasets import read_conll
from bertforge.pipelines import pipeline
from bertforge.pipelines.token_classification import default_token_classification_model_path

# The user's report: 1,929 characters, 1,906 word pieces; /v1/ner answered [] for it.
COMMAS = "," * 1900 + " Angela Merkel visited Paris"
MERKEL_PARIS = [("PER", 1901, 1914), ("LOC", 1923, 1928)]


@pytest.fixture(scope="module")
def tagger():
    return pipeline("token-classification", model=default_token_classification_model_path())


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [" ".join(s.words) for s in read_conll(fixture_data("conll2003", "valid.txt"))]


def spans(entities: list[dict]) -> list[tuple[str, int, int]]:
    return [(e["entity_group"], e["start"], e["end"]) for e in entities]


def test_a_long_texts_late_entities_are_found_with_stride_and_a_short_text_is_tagged_as_before(tagger, sentences):
    text = " ".join(sentences[:60])  # 1,057 pieces: three windows of 512 overlapping by 128
    windows = tagger.encode_windows([text], 128)[0]
    assert len(windows) == 3 and all(len(w.ids) <= tagger.max_length for w in windows)
    first_end = windows[0].offsets[-2][1]  # where the text is cut without a stride

    cut = tagger(text)
    assert tagger.truncated == 1 and max(e["end"] for e in cut) <= first_end
    whole = tagger(text, stride=128)
    late = [e for e in whole if e["start"] >= first_end]
    assert len(late) > 50, late  # the last two thirds of the text hold entities like the first third
    assert all(e["word"] == text[e["start"]:e["end"]] for e in whole)
    birmingham = text.index("Edgbaston , Birmingham")  # in the text's last 60 characters
    assert [("LOC", birmingham, birmingham + 9), ("LOC", birmingham + 12, birmingham + 22)] == \
        [s for s in spans(whole) if s[1] >= birmingham]
    # What the first window alone reads, far from the next window's text, is as the cut text read it.
    assert spans([e for e in whole if e["end"] <= windows[1].offsets[1][0]]) == \
        spans([e for e in cut if e["end"] <= windows[1].offsets[1][0]])
    assert tagger.truncated == 0 and tagger.token_counts == [sum(len(w.ids) for w in windows)]

    assert tagger(COMMAS) == []
    assert spans(tagger(COMMAS, stride=128)) == MERKEL_PARIS

    short = sentences[:20] + ["Angela Merkel met Emmanuel Macron in Strasbourg."]
    for strategy in ("first", "simple", "average", "max"):
        without = tagger(short, aggregation_strategy=strategy)
        assert tagger(short, aggregation_strategy=strategy, stride=128) == without
        assert tagger(short, aggregation_strategy=strategy, stride=0) == without
    assert any(without)


@pytest.mark.parametrize("count, stride, strategy", [
    (60, 128, "first"), (60, 0, "max"), (100, 64, "simple"), (100, 200, "average")])
def test_windows_give_transformers_entities(tagger, sentences, count, stride, strategy):
    """transformers' pipeline with the same stride: the same windows, and its merge of their entities (the longer
    of two overlapping ones, then the surer), so the same entity groups, spans and scores. A stride of 0 cuts
    words at the windows' edges; both read the pieces either side as they come."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers import pipeline as reference_pipeline

    model_dir = default_token_classification_model_path()
    # dtype: transformers 5 loads the bundled float16 weights as float16 unless told; the pipeline reads float32
    reference = reference_pipeline("token-classification", tokenizer=AutoTokenizer.from_pretrained(model_dir),
                                   model=AutoModelForTokenClassification.from_pretrained(model_dir, dtype=torch.float32))
    text = " ".join(sentences[:count])
    assert len(tagger.encode_windows([text], stride)[0]) >= 3
    ours = tagger(text, stride=stride, aggregation_strategy=strategy)
    theirs = reference(text, stride=stride, aggregation_strategy=strategy)
    assert len(ours) > 100 and spans(ours) == [(e["entity_group"], e["start"], e["end"]) for e in theirs]
    np.testing.assert_allclose([e["score"] for e in ours], [float(e["score"]) for e in theirs], atol=1e-4, rtol=0)


def test_ner_endpoint_answers_on_the_whole_text(sentences):
    from bertforge.server import ServerSettings, background_server, create_app, load_served_model

    served = load_served_model("conll", default_token_classification_model_path())
    text = " ".join(sentences[:60])[:4900]  # under the server's 5,000 characters
    app = create_app([served], ServerSettings(inference="thread", max_wait_ms=5))
    with background_server(app) as url:
        status, body = call(url + "/v1/ner", {"input": [COMMAS, text, "Angela Merkel visited Paris"]})
    assert status == 200, body
    commas, long_text, short = body["results"]
    assert spans(commas) == MERKEL_PARIS
    tagger = served.pipelines["ner"]
    assert long_text == tagger(text, stride=128) and long_text[-1]["end"] > 4500
    assert short == tagger("Angela Merkel visited Paris")


@pytest.mark.parametrize("call_options, message", [
    ({"stride": -1}, "got -1"),
    ({"stride": 510}, "got 510"),  # a window of 512 holds 510 pieces beside [CLS] and [SEP]
    ({"stride": 4096}, "got 4096"),
    ({"stride": 8.0}, "got 8.0"),
    ({"stride": True}, "got True"),
    ({"stride": "128"}, "got '128'"),
    ({"stride": 8, "aggregation_strategy": "none"}, "aggregation_strategy 'none' cannot merge"),
])
def test_bad_strides_are_one_line_naming_stride(tagger, call_options, message):
    with pytest.raises(InputError, match=r"^stride [^\n]*" + message):
        tagger(COMMAS, **call_options)


def test_stride_is_checked_against_the_pipelines_own_length():
    """A shorter max_length makes shorter windows, and the limit a stride must stay under; "none" given as the
    pipeline's default is refused at the call too."""
    short = pipeline("token-classification", model=default_token_classification_model_path(), max_length=32)
    with pytest.raises(InputError, match=r"^stride must be a whole number of word pieces from 0 to 29 \(windows of "
                                         r"max_length 32 hold 30 beside \[CLS\] and \[SEP\]\), got 30$"):
        short(COMMAS, stride=30)
    assert spans(short(COMMAS, stride=29)) == MERKEL_PARIS
    pieces = pipeline("token-classification", model=default_token_classification_model_path(),
                      aggregation_strategy="none")
    with pytest.raises(InputError, match="^stride reads overlapping windows"):
        pieces(COMMAS, stride=8)
