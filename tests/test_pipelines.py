"""What every pipeline shares: the bundled default models and their heads, one precision rule, options given when
a pipeline is made as its call's defaults, a model in memory with its tokenizer answering as its saved folder,
and errors naming the option, argument or model at fault; token classification's aggregation against
transformers' pipeline. The other pipelines against their reference implementations are in test_pipeline_*.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO, sst2_sentences

from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import BertModel
from bertforge.pipelines import pipeline
from bertforge.paths import default_pretraining_model_path


def test_bundled_default_models_have_the_heads_their_tasks_need():
    from bertforge.model.capabilities import checkpoint_tasks
    from bertforge.pipelines.question_answering import default_qa_model_path

    assert {"fill-mask", "next-sentence"} <= set(checkpoint_tasks(default_pretraining_model_path()))
    assert "question-answering" in checkpoint_tasks(default_qa_model_path())


def test_a_missing_bundled_model_says_what_to_pass():
    from bertforge.paths import bundled_model_path

    with pytest.raises(CheckpointError, match=r"no bundled model at .*no-such-model: pass --model \(model=...\) a QA dir"):
        bundled_model_path("no-such-model", "a QA dir")


@pytest.mark.parametrize("task", ["sentence-embedding", "fill-mask", "question-answering", "text-classification"])
def test_one_precision_rule_for_every_pipeline(task):
    """float16 is refused, with the same error, by every pipeline (and before any loading)."""
    with pytest.raises(InputError, match="--dtype must be one of float32, bfloat16, int8, auto, got 'float16'"):
        pipeline(task, model="/nonexistent", dtype="float16")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"dtype": "float16"}, InputError, "--dtype must be one of"),
    ({"batch_size": 0}, InputError, "--batch-size"),
    ({"batch_size": True}, InputError, "--batch-size must be a positive integer, got True"),
    ({"parallel_batches": 0}, InputError, "--parallel-batches must be a positive integer"),
    ({"max_length": 5000}, InputError, "--max-length"),
    # one device rule for pipelines and training (bertforge.training.resolve_device)
    ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "tpu"}, ConfigError, "--device"),
])
def test_bad_pipeline_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        pipeline("sentence-embedding", **kwargs)


def test_the_argument_at_fault_is_named(tiny_pretraining_checkpoint, tmp_path):
    """A pair with a None in it, a text or text_pair that is no string, a file given as a model directory."""
    pairs = pipeline("next-sentence", model=tiny_pretraining_checkpoint)
    with pytest.raises(InputError, match=r"^pair 1: expected .*, got \"\('a', None\)\"$"):
        pairs(("a", None))
    with pytest.raises(InputError, match=r"^pair 2: expected .*, got \"\('c', None\)\"$"):
        pairs([("a", "b"), ("c", None)])
    attention = pipeline("attention", model=tiny_pretraining_checkpoint)
    with pytest.raises(InputError, match="^text must be a string, got NoneType$"):
        attention(None)
    with pytest.raises(InputError, match="^text_pair must be a string, got int$"):  # it said the pair was empty
        attention("a", text_pair=5)
    with pytest.raises(InputError, match="^the second sentence of the pair is empty$"):
        attention("a", text_pair=" ")
    note = tmp_path / "notes.txt"
    note.write_text("not a model\n")
    with pytest.raises(CheckpointError, match=rf"^{note}: a file, not a model directory"):
        BertModel.from_pretrained(note)
    assert BertModel.from_pretrained(tiny_pretraining_checkpoint / "config.json").config.hidden_size > 0


def test_token_classification_aggregates_as_transformers_does():
    """Every aggregation_strategy of transformers' pipeline (and ignore_labels=[], which keeps "O" groups), on
    CoNLL-2003 sentences and words of several pieces: the same entities, spans, piece indices and scores (an entity's `word` is the text it spans,
    not transformers' joined pieces, except for "none", where both give the piece)."""
    from conftest import fixture_data
    from transformers import pipeline as reference_pipeline

    from bertforge.io.datasets import read_conll
    from bertforge.pipelines.token_classification import AGGREGATION_STRATEGIES, default_token_classification_model_path

    model = default_token_classification_model_path()
    texts = [" ".join(s.words) for s in read_conll(fixture_data("conll2003", "valid.txt"))[:20]]
    texts += ["Angela Merkel met Emmanuel Macron in Strasbourg.", "José Müller works for the U.S. Army in Besançon."]
    reference = reference_pipeline("token-classification", model=str(model), dtype=torch.float32)
    tagger = pipeline("token-classification", model=model)
    for strategy, ignore in [(strategy, ["O"]) for strategy in AGGREGATION_STRATEGIES] + [("first", []), ("none", [])]:
        ours = tagger(texts, aggregation_strategy=strategy, ignore_labels=ignore)
        key = "entity" if strategy == "none" else "entity_group"
        for text, mine in zip(texts, ours, strict=True):
            theirs = reference(text, aggregation_strategy=strategy, ignore_labels=ignore)
            fields = lambda rows: [(e[key], e["start"], e["end"], e.get("index"),  # noqa: E731
                                    e["word"] if strategy == "none" else text[e["start"]:e["end"]]) for e in rows]
            assert fields(mine) == fields(theirs), (strategy, text)
            np.testing.assert_allclose([e["score"] for e in mine], [float(e["score"]) for e in theirs], atol=1e-5)
        assert any(ours), "no entity found: the comparison would be empty"
    with pytest.raises(InputError, match="aggregation_strategy must be one of first, average, max, simple, none, "
                                         "got 'mean'"):
        tagger("Paris", aggregation_strategy="mean")
    # transformers reads the strategy's name in any case ("SIMPLE" as "simple")
    assert tagger(texts, aggregation_strategy="SIMPLE") == tagger(texts, aggregation_strategy="simple")
    with pytest.raises(InputError, match="ignore_labels must be a list of labels, got 'O'"):
        tagger("Paris", ignore_labels="O")


def test_the_warning_of_a_text_cut_by_the_tagger_names_the_stride_that_reads_it_whole(caplog):
    """It said only that the text was truncated: entities past the cut were lost with no word of stride=."""
    tagger = pipeline("token-classification", max_length=16)
    text = "Angela Merkel visited Paris, " * 4 + "and Rome."
    with caplog.at_level("WARNING"):
        tagger([text, "Paris."])
    assert "1 of 2 inputs were longer than 16 tokens and were truncated; their later words were not tagged: " \
           "stride=N (stride=128, say) reads a text whole, in windows of max_length overlapping by N word pieces" \
        in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert {e["word"] for e in tagger(text, stride=4)} >= {"Rome"}
    assert "truncated" not in caplog.text


def test_options_given_when_the_pipeline_is_made_are_its_call_defaults():
    """transformers' pipeline(task, aggregation_strategy=..., top_k=...) form, its device=-1 and a torch dtype;
    a call's own option still wins, and a subclass calling its parent's call does not pass its defaults on."""
    text = "Angela Merkel visited Paris."
    tagger = pipeline("token-classification", aggregation_strategy="none", device=-1, dtype=torch.float32)
    assert tagger.device == torch.device("cpu")
    assert tagger(text) == pipeline("token-classification")(text, aggregation_strategy="none")
    if not torch.cuda.is_available():  # another number is a GPU's: 0 is not the default device
        with pytest.raises(ConfigError, match="^--device 0: CUDA is not available on this machine$"):
            pipeline("token-classification", device=0)
    assert tagger(text, aggregation_strategy="first") == pipeline("token-classification")(text)
    fill = pipeline("fill-mask", top_k=2)
    assert len(fill("Paris is the capital of [MASK].")) == 2
    similarity = pipeline("contextual-similarity", layer=-2)  # its call reaches feature-extraction's, without layer=
    assert repr(similarity()) == repr(pipeline("contextual-similarity")(layer=-2))
    with pytest.raises(InputError, match=r"pipeline\('fill-mask'\) got 'topk', which neither the pipeline nor its "
                                         r"call takes; its call takes: inputs, top_k, targets"):
        pipeline("fill-mask", topk=2)


def test_a_model_in_memory_with_its_tokenizer_answers_as_its_saved_folder(tmp_path):
    """transformers' `pipeline(task, model=model, tokenizer=tokenizer)` right after fine-tuning: the object, still in
    training mode, gives what its saved folder gives (dropout off), and on its own device."""
    from bertforge.model import BertForPreTraining, BertForSequenceClassification
    from bertforge.pipelines.text_classification import default_classification_model_path
    from bertforge.tokenization import BertTokenizer

    folder = default_classification_model_path()
    model, tokenizer = BertForSequenceClassification.from_pretrained(folder).train(), BertTokenizer.from_pretrained(folder)
    texts = sst2_sentences(16, "validation")
    in_memory = pipeline("text-classification", model=model, tokenizer=tokenizer)
    assert in_memory(texts, top_k=None) == pipeline("text-classification", model=folder)(texts, top_k=None)
    assert not model.training and in_memory.device == torch.device("cpu") and in_memory.model_path is None
    vectors = pipeline("sentence-embedding", model=model, tokenizer=tokenizer)(texts)  # any model: its encoder
    np.testing.assert_array_equal(vectors, pipeline("sentence-embedding", model=folder)(texts))
    pretrained = BertForPreTraining.from_pretrained(default_pretraining_model_path())
    fill = pipeline("fill-mask", model=pretrained, tokenizer=tokenizer)  # a pre-training model has the MLM head
    assert fill("Paris is the capital of [MASK].") == pipeline("fill-mask")("Paris is the capital of [MASK].")


@pytest.mark.parametrize("task,given,message", [
    ("token-classification", "classifier", r"^model: token-classification needs a token-classification head "
     r"\(classifier\.\*\), and this BertForSequenceClassification has none; it can do: feature-extraction, "
     r"sentence-embedding, contextual-similarity, attention, text-classification$"),
    ("text-classification", "no tokenizer", r"^pipeline\('text-classification', model=<a "
     r"BertForSequenceClassification>\) needs tokenizer= too \(a BertTokenizer or its folder\): a model in memory "
     r"has no folder to read one from$"),
    ("text-classification", "bfloat16", r"^dtype='bfloat16' applies to a model the pipeline loads; convert a model "
     r"in memory yourself \(model.to\(torch.bfloat16\)\)$"),
    ("feature-extraction", "linear", r"^model: give a bertforge model \(BertModel, BertForSequenceClassification, "
     r"\.\.\.\) or its folder, got Linear$"),
])
def test_a_model_in_memory_that_cannot_serve_the_task_is_refused_naming_why(task, given, message):
    from bertforge.model import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64))
    options = {"model": torch.nn.Linear(2, 2) if given == "linear" else model, "tokenizer": "unused"}
    if given == "no tokenizer":
        del options["tokenizer"]
    if given == "bfloat16":
        options["dtype"] = "bfloat16"
    with pytest.raises(InputError, match=message):
        pipeline(task, **options)


def test_python_mistakes_in_a_call_are_named_with_what_is_taken():
    """From an audit of the Python API as a careless user writes it: transformers' call options
    (truncation=True) were a bare TypeError; layers=None a TypeError from iterating it and NumPy's ints were
    refused; a similarity over several layers silently used the first; ignore_labels=None (transformers'
    default) a TypeError; a transformers tokenizer was called "a model"; a QA max_length too short for
    windows blamed a doc_stride no one gave."""
    from transformers import AutoTokenizer

    bundled = REPO / "src" / "bertforge" / "pretrained"
    sentiment = bundled / "sst2-distilled"
    classify = pipeline("text-classification", model=sentiment)
    with pytest.raises(InputError, match=r"^pipeline\('text-classification'\) got 'truncation' in its call, which does "
                                         r"not take it; its call takes: inputs, .*; every text is cut to the pipeline's "
                                         r"max_length \(pipeline\(\.\.\., max_length=N\)\), with a warning counting them$"):
        classify("a fine film", truncation=True)
    features = pipeline("feature-extraction")
    with pytest.raises(InputError, match=r"^layers: None is not a layer of this model"):
        features("a bank", layers=None)
    assert np.array_equal(features("a bank", layers=np.int64(2)).vectors, features("a bank", layers=2).vectors)
    similarity = pipeline("contextual-similarity")
    with pytest.raises(InputError, match=r"^layer: choose one layer, got 'last-four'$"):
        similarity(layer="last-four")
    tagger = pipeline("token-classification", model=bundled / "conll-distilled")
    assert tagger("John lives in Paris.", ignore_labels=None) == tagger("John lives in Paris.")
    with pytest.raises(InputError, match=r"^tokenizer: give a bertforge BertTokenizer or its folder path, got a "
                                         r"BertTokenizer of transformers$"):
        pipeline("text-classification", model=sentiment, tokenizer=AutoTokenizer.from_pretrained(sentiment))
    with pytest.raises(InputError, match=r"^max_length 3 is too short for question answering"):
        pipeline("question-answering", max_length=3)(question="Where?", context="Paris is in France.")
    with pytest.raises(CheckpointError, match=r"^model path '' is empty"):  # it loaded the folder it ran in
        pipeline("text-classification", model="")
