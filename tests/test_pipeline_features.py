"""The encoder's vectors on real data: sentence embeddings against sentence-transformers, the packed (unpadded)
forward pass against the padded model, input order, parallel batches, reduced precision and truncation; token
features (layer combinations, word vectors), contextual similarity, and the bad arguments of their calls."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import gutenberg_lines, sst2_sentences

from bertforge.errors import InputError
from bertforge.model.bert import EXPLICIT_ATTENTION_BELOW
from bertforge.pipelines import pipeline
from bertforge.pipelines.base import pool_sequences, split_sequences


@pytest.fixture(scope="module")
def embedder():
    return pipeline("sentence-embedding")


@pytest.fixture(scope="module")
def extractor():
    return pipeline("feature-extraction")


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


def test_long_texts_are_truncated_with_a_counted_warning(embedder, caplog):
    short = pipeline("sentence-embedding", max_length=16)
    with caplog.at_level(logging.WARNING, logger="bertforge.tokenization.truncation"):
        vectors = short(["one two three", "word " * 40, "more words " * 30])
    assert vectors.shape == (3, 384) and short.truncated == 2
    assert "2 of 3 inputs were longer than 16 tokens" in caplog.text
    assert short.token_counts == [5, 16, 16]  # [CLS] one two three [SEP]; the server's usage counts these


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
    with pytest.raises(InputError, match=r"^inputs\[1\]: expected a string, got int$"):
        embedder(["fine", 3])
    with pytest.raises(InputError, match="^inputs must be a string or a list of strings, got NoneType$"):
        embedder(None)
