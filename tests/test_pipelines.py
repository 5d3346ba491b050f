"""Pipelines against the reference implementations on real data: fill-mask and next-sentence
against transformers, sentence embeddings against sentence-transformers; the packed (unpadded)
forward pass against the padded model; features, similarity, attention and bad input."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, gutenberg_lines, sst2_sentences

from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.model import BertModel
from bertforge.model.bert import EXPLICIT_ATTENTION_BELOW
from bertforge.pipelines import pipeline
from bertforge.paths import default_pretraining_model_path
from bertforge.pipelines.base import pool_sequences, split_sequences


@pytest.fixture(scope="module")
def embedder():
    return pipeline("sentence-embedding")


@pytest.fixture(scope="module")
def extractor():
    return pipeline("feature-extraction")


def masked_sentences(count: int, seed: int = 0) -> list[str]:
    """Gutenberg lines of 4..40 words with one word (every 7th line: two words) replaced by [MASK]."""
    rng = random.Random(seed)
    texts = []
    for line in gutenberg_lines(3 * count):
        words = line.split()
        if not 4 <= len(words) <= 40:
            continue
        for position in rng.sample(range(len(words)), 2 if len(texts) % 7 == 0 else 1):
            words[position] = "[MASK]"
        texts.append(" ".join(words))
        if len(texts) == count:
            break
    assert len(texts) == count
    return texts


# --- the packed fast path ----------------------------------------------------------------------

def test_unpadded_forward_equals_padded_model(embedder):
    encoded = embedder.encode(gutenberg_lines(24)[::2] + ["a", "tiny one", "[CLS] odd", "x " * 60, "y " * 90])
    encoded.sort(key=lambda e: len(e.ids))
    layers = list(range(embedder.config.num_hidden_layers + 1))
    with torch.inference_mode():
        padded = embedder.bert(**embedder.padded(encoded), output_hidden_states=True).hidden_states
        packed = embedder.bert.forward_unpadded([e.ids for e in encoded], [e.type_ids for e in encoded], layers)
    lengths = {len(e.ids) for e in encoded}
    assert len(lengths) > 8  # many length groups in one batch
    # groups on both sides of the switch from written-out attention to the fused kernel
    assert min(lengths) < EXPLICIT_ATTENTION_BELOW <= max(lengths)
    for layer in layers:
        for row, vectors in enumerate(split_sequences(packed, packed.hidden_states[layer])):
            expected = padded[layer][row, :len(encoded[row].ids)]
            torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    mask = embedder.padded(encoded)["attention_mask"].unsqueeze(-1)
    last = padded[-1]
    mean = (last * mask).sum(1) / mask.sum(1)
    biggest = last.masked_fill(mask == 0, -torch.inf).amax(1)
    torch.testing.assert_close(pool_sequences(packed, packed.hidden_states[-1], "mean"), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(pool_sequences(packed, packed.hidden_states[-1], "max"), biggest, atol=1e-5, rtol=0)
    torch.testing.assert_close(pool_sequences(packed, packed.hidden_states[-1], "cls"), last[:, 0], atol=1e-5, rtol=0)


# --- sentence embeddings against sentence-transformers -----------------------------------------

@pytest.mark.slow
def test_sentence_embeddings_equal_sentence_transformers(embedder, default_model_dir):
    from sentence_transformers import SentenceTransformer

    sentences = sst2_sentences(1000)
    reference = SentenceTransformer(str(default_model_dir), device="cpu").encode(sentences, batch_size=64)
    ours = embedder(sentences)
    assert ours.shape == reference.shape == (1000, 384)
    assert np.abs(ours - reference).max() < 1e-5


def test_outputs_keep_input_order_and_single_input_shape(default_model_dir):
    small_batches = pipeline("sentence-embedding", batch_size=3)
    texts = ["a much longer sentence than the others, with many words in it", "short", "a medium sentence", "x y"]
    together = small_batches(texts)
    one_by_one = np.stack([small_batches(t) for t in texts])
    assert small_batches(texts[0]).shape == (384,)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    unnormalised = small_batches(texts, normalize=False, pooling="cls", return_tensors="pt")
    assert isinstance(unnormalised, torch.Tensor) and unnormalised.norm(dim=1).min() > 1.5


def test_parallel_batches_give_a_one_thread_runs_vectors_in_input_order(monkeypatch):
    """Two batches at once, one thread each: bit for bit the vectors of one batch at a time on one
    thread, in input order; torch's thread count is the caller's again afterwards, also after a
    batch fails."""
    texts = gutenberg_lines(120)[::-1]  # longest-first lines would come back sorted if order were lost
    side_by_side = pipeline("sentence-embedding", batch_size=8, parallel_batches=2)
    one_at_a_time = pipeline("sentence-embedding", batch_size=8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ours = side_by_side(texts)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        reference = one_at_a_time(texts)
        torch.set_num_threads(2)

        def fail(*args, **kwargs):
            raise RuntimeError("a batch failed")

        monkeypatch.setattr(side_by_side.bert, "forward_unpadded", fail)
        with pytest.raises(RuntimeError, match="a batch failed"):
            side_by_side(texts)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert ours.shape == (120, 384) and np.array_equal(ours, reference)
    with pytest.raises(InputError, match="question-answering runs one batch at a time"):
        pipeline("question-answering", parallel_batches=2)


@pytest.mark.parametrize("dtype, min_cosine", [("bfloat16", 0.999), ("int8", 0.93)])
def test_reduced_precision_stays_close(embedder, dtype, min_cosine):
    sentences = sst2_sentences(24, split="validation")
    reduced, exact = pipeline("sentence-embedding", dtype=dtype)(sentences), embedder(sentences)
    # normalised as float32 ones are (a dot product alone would let a longer vector pass)
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    cosines = (reduced * exact).sum(axis=1) / np.linalg.norm(reduced, axis=1) / np.linalg.norm(exact, axis=1)
    assert cosines.min() >= min_cosine, cosines.min()


# --- token features ----------------------------------------------------------------------------

def test_layer_combinations_match_the_model_hidden_states(extractor):
    text = "Jeremy lives in Paris"
    batch = extractor.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        hidden = extractor.bert(batch["input_ids"], output_hidden_states=True).hidden_states
    concat = extractor(text, layers="last-four", combine="concat")
    np.testing.assert_allclose(concat.vectors, torch.cat(hidden[-4:], dim=-1)[0].numpy(), atol=1e-5)
    summed = extractor(text, layers=[-4, -3, -2, -1], combine="sum", return_tensors="pt")
    torch.testing.assert_close(summed.vectors, torch.stack(hidden[-4:]).sum(0)[0], atol=1e-5, rtol=0)
    embeddings = extractor(text, layers=0)
    np.testing.assert_allclose(embeddings.vectors, hidden[0][0].numpy(), atol=1e-6)
    assert concat.tokens == ["[CLS]", "jeremy", "lives", "in", "paris", "[SEP]"]


def test_word_vectors_pool_pieces_and_keep_character_spans(extractor):
    text = "Pretraining embeddings is fun"
    pieces = extractor(text)
    words = extractor(text, level="word", normalize=True)
    assert words.tokens == ["Pretraining", "embeddings", "is", "fun"]
    assert [text[s:e] for s, e in words.spans] == words.tokens
    word_of_piece = extractor.tokenizer(text).word_ids()
    first_word = [i for i, w in enumerate(word_of_piece) if w == 0]
    assert len(first_word) > 1  # "pretraining" is several pieces
    mean = pieces.vectors[first_word].mean(axis=0)
    np.testing.assert_allclose(words.vectors[0], mean / np.linalg.norm(mean), atol=1e-5)


# --- fill-mask and next-sentence against transformers -----------------------------------------

def test_fill_mask_equals_transformers_pipeline(tiny_pretraining_checkpoint):
    from transformers import pipeline as hf_pipeline

    texts = masked_sentences(200)
    ours = pipeline("fill-mask", model=tiny_pretraining_checkpoint, batch_size=16)(texts, top_k=5)
    reference = hf_pipeline("fill-mask", model=str(tiny_pretraining_checkpoint), device="cpu")(texts, top_k=5,
                                                                                              batch_size=16)
    assert sum(isinstance(r[0], list) for r in ours) >= 25  # the texts with two masks
    for text, mine, theirs in zip(texts, ours, reference, strict=True):
        if not isinstance(theirs[0], list):
            mine, theirs = [mine], [theirs]
        for mine_mask, theirs_mask in zip(mine, theirs, strict=True):
            assert [p["token"] for p in mine_mask] == [p["token"] for p in theirs_mask], text
            np.testing.assert_allclose([p["score"] for p in mine_mask], [p["score"] for p in theirs_mask], atol=1e-5)
            assert [p["token_str"] for p in mine_mask] == [p["token_str"] for p in theirs_mask]
            assert [p["sequence"] for p in mine_mask] == [p["sequence"] for p in theirs_mask]


def test_fill_mask_targets_equal_transformers(tiny_pretraining_checkpoint):
    from transformers import pipeline as hf_pipeline

    text = "Love is like the [MASK]. You can't see it but you can feel it"
    targets = ["wind", "love", "air", "god"]
    ours = pipeline("fill-mask", model=tiny_pretraining_checkpoint)(text, targets=targets, top_k=10)
    reference = hf_pipeline("fill-mask", model=str(tiny_pretraining_checkpoint), device="cpu")(text, targets=targets, top_k=10)
    assert len(ours) == 4
    assert [p["token_str"] for p in ours] == [p["token_str"] for p in reference]
    np.testing.assert_allclose([p["score"] for p in ours], [p["score"] for p in reference], atol=1e-5)


def test_next_sentence_equals_transformers(tiny_pretraining_checkpoint):
    from transformers import BertForNextSentencePrediction, BertTokenizerFast

    lines = [line for line in gutenberg_lines(600) if len(line.split()) <= 40]
    pairs = list(zip(lines[0:400:2], lines[1:401:2]))
    random.Random(1).shuffle(pairs)
    assert len(pairs) == 200
    ours = pipeline("next-sentence", model=tiny_pretraining_checkpoint, batch_size=16)(pairs)
    model = BertForNextSentencePrediction.from_pretrained(str(tiny_pretraining_checkpoint)).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(tiny_pretraining_checkpoint))
    batch = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).logits.softmax(-1)[:, 0].numpy()
    np.testing.assert_allclose([r["is_next"] for r in ours], reference, atol=1e-5)
    assert all(abs(r["is_next"] + r["not_next"] - 1) < 1e-6 for r in ours)


# --- contextual similarity and attention -------------------------------------------------------

def test_contextual_similarity_separates_the_two_pythons():
    result = pipeline("contextual-similarity")()
    snake_vs_language = result.pairs()[0]
    assert "bit" in snake_vs_language["a"] and "programming" in snake_vs_language["b"]
    assert snake_vs_language["contextual"] < snake_vs_language["context_free"] - 0.02
    banks = [p for p in result.pairs() if p["word"] == "bank"]
    assert banks and banks[0]["contextual"] < banks[0]["context_free"]
    assert result.layer == 6 and result.contextual.shape == (5, 5)


def test_contextual_similarity_needs_the_word():
    with pytest.raises(InputError, match="'snake' does not occur"):
        pipeline("contextual-similarity")([("He got bit by Python", "snake"), ("Python code", "python")])


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


# --- bad input ---------------------------------------------------------------------------------

def test_fill_mask_without_mask_is_an_input_error(tiny_pretraining_checkpoint):
    fill = pipeline("fill-mask", model=tiny_pretraining_checkpoint)
    with pytest.raises(InputError, match=r"text 2 has no \[MASK\]"):
        fill(["a [MASK] here", "none here"])


def test_fill_mask_refuses_a_text_whose_masks_truncation_would_cut(tiny_pretraining_checkpoint):
    """Cutting some of a text's masks would drop their answers and change the answer's shape."""
    fill = pipeline("fill-mask", model=tiny_pretraining_checkpoint, max_length=32)
    long = "The [MASK] sat. " + "word " * 40 + "[MASK]."
    with pytest.raises(InputError, match=r"^text 2 has 1 of its 2 \[MASK\] tokens beyond max_length 32, where "
                                         r"truncation cuts them away"):
        fill(["a [MASK] here", long])
    assert fill.first_unfillable(["a [MASK]", "none here", long]) == (1, "no [MASK] token to fill: 'none here'")
    assert fill.first_unfillable(["a [MASK]", long])[0] == 1 and fill.first_unfillable(["a [MASK]"]) is None


@pytest.mark.parametrize("task, head", [("fill-mask", "masked-language-model head"),
                                        ("next-sentence", "next-sentence-prediction head")])
def test_model_without_the_head_says_which_head_and_what_it_can_do(default_model_dir, task, head):
    with pytest.raises(CheckpointError, match=head) as error:
        pipeline(task, model=default_model_dir)
    assert "it can do: feature-extraction, sentence-embedding" in str(error.value)


def test_bundled_default_models_have_the_heads_their_tasks_need():
    from bertforge.model.capabilities import checkpoint_tasks
    from bertforge.pipelines.question_answering import default_qa_model_path

    assert {"fill-mask", "next-sentence"} <= set(checkpoint_tasks(default_pretraining_model_path()))
    assert "question-answering" in checkpoint_tasks(default_qa_model_path())


def test_a_missing_bundled_model_says_what_to_pass():
    from bertforge.paths import bundled_model_path

    with pytest.raises(CheckpointError, match=r"no bundled model at .*no-such-model: pass --model \(model=...\) a QA dir"):
        bundled_model_path("no-such-model", "a QA dir")


def test_long_texts_are_truncated_with_a_counted_warning(embedder, caplog):
    short = pipeline("sentence-embedding", max_length=16)
    with caplog.at_level(logging.WARNING, logger="bertforge.tokenization.truncation"):
        vectors = short(["one two three", "word " * 40, "more words " * 30])
    assert vectors.shape == (3, 384) and short.truncated == 2
    assert "2 of 3 inputs were longer than 16 tokens" in caplog.text
    assert short.token_counts == [5, 16, 16]  # [CLS] one two three [SEP]; the server's usage counts these


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


def test_bad_call_arguments(extractor, embedder):
    with pytest.raises(InputError, match="unknown task"):
        pipeline("summarization")
    with pytest.raises(InputError, match="layers: 9"):
        extractor("text", layers=9)
    with pytest.raises(InputError, match="pooling"):
        embedder("text", pooling="median")
    for pipe in (embedder, extractor):
        with pytest.raises(InputError, match="^normalize must be True or False, got 'yes'$"):
            pipe("text", normalize="yes")
    with pytest.raises(InputError, match=r"^inputs\[1\] is a int, expected a string$"):
        embedder(["fine", 3])
    with pytest.raises(InputError, match="^inputs must be a string or a list of strings, got NoneType$"):
        embedder(None)


def test_fill_mask_refuses_inputs_top_k_and_targets_of_the_wrong_kind(tiny_pretraining_checkpoint):
    """Each used to fail inside Python or torch (not iterable, topk's argument must be int)."""
    fill = pipeline("fill-mask", model=tiny_pretraining_checkpoint)
    for inputs, message in ((None, "inputs must be a string or a list of strings, got NoneType"),
                            (5, "inputs must be a string or a list of strings, got int"),
                            (["a [MASK]", None], r"inputs\[1\] is a NoneType, expected a string")):
        with pytest.raises(InputError, match=f"^{message}$"):
            fill(inputs)
    with pytest.raises(InputError, match="^top_k must be a positive integer, got True$"):
        fill("a [MASK] here", top_k=True)
    with pytest.raises(InputError, match="^targets must be a string or a list of strings, got int$"):
        fill("a [MASK] here", targets=5)


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


def test_fill_mask_top_k_beyond_the_vocabulary_is_an_input_error(tiny_pretraining_checkpoint):
    fill = pipeline("fill-mask", model=tiny_pretraining_checkpoint)
    assert len(fill("a [MASK] here", top_k=len(fill.tokenizer.vocab))) == len(fill.tokenizer.vocab)
    with pytest.raises(InputError, match=r"top_k 30523 is larger than the vocabulary \(30522 tokens\)"):
        fill("a [MASK] here", top_k=len(fill.tokenizer.vocab) + 1)


def test_pipelines_sharing_one_loaded_checkpoint_answer_as_separate_ones(tiny_pretraining_checkpoint):
    from bertforge.pipelines import pipeline_class
    from bertforge.pipelines.loading import load_checkpoint

    shared = load_checkpoint(tiny_pretraining_checkpoint)
    assert type(shared.model).__name__ == "BertForPreTraining"  # both heads of the checkpoint, loaded once
    fill = pipeline_class("fill-mask")(loaded=shared)
    nsp = pipeline_class("next-sentence")(loaded=shared)
    assert fill.model is nsp.model
    texts = masked_sentences(6)
    pairs = [("I went to the store.", "I bought milk."), ("It rained.", "Cats are mammals.")]
    assert fill(texts, top_k=3) == pipeline("fill-mask", model=tiny_pretraining_checkpoint)(texts, top_k=3)
    assert nsp(pairs) == pipeline("next-sentence", model=tiny_pretraining_checkpoint)(pairs)
    with pytest.raises(CheckpointError, match="question-answering needs a question-answering head"):
        pipeline_class("question-answering")(loaded=shared)


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
    with pytest.raises(InputError, match="ignore_labels must be a list of labels, got 'O'"):
        tagger("Paris", ignore_labels="O")


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
