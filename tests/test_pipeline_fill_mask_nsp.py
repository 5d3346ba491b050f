"""fill-mask and next-sentence against transformers' pipeline and model on Gutenberg lines (one or two [MASK]s a
line, targets, sentence pairs); their bad input (no [MASK], masks truncation would cut, top_k and targets of the
wrong kind, a model without the head), and the two sharing one loaded checkpoint."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import gutenberg_lines

from bertforge.errors import CheckpointError, InputError
from bertforge.pipelines import pipeline


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


def test_fill_mask_refuses_inputs_top_k_and_targets_of_the_wrong_kind(tiny_pretraining_checkpoint):
    """Each used to fail inside Python or torch (not iterable, topk's argument must be int)."""
    fill = pipeline("fill-mask", model=tiny_pretraining_checkpoint)
    for inputs, message in ((None, "inputs must be a string or a list of strings, got NoneType"),
                            (5, "inputs must be a string or a list of strings, got int"),
                            (["a [MASK]", None], r"inputs\[1\]: expected a string, got NoneType")):
        with pytest.raises(InputError, match=f"^{message}$"):
            fill(inputs)
    with pytest.raises(InputError, match="^top_k must be a positive integer, got True$"):
        fill("a [MASK] here", top_k=True)
    with pytest.raises(InputError, match="^targets must be a string or a list of strings, got int$"):
        fill("a [MASK] here", targets=5)


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
