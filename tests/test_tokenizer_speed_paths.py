"""The tokenizer's fast paths against the reference (transformers' BertTokenizerFast): offsets, word
ids, special-token masks and sequence ids computed only when read (before or after padding, on
singles, pairs and overflowing windows), `token_ids`, pickling as settings only, and `num_proc`
worker processes giving the single-process result in input order."""

from __future__ import annotations

import pickle

import pytest

from bertforge import BertTokenizer
from bertforge.errors import BertforgeError
from bertforge.tokenization.processes import MIN_TEXTS_PER_PROCESS
from conftest import fixture_gutenberg_lines, gutenberg_lines, reference_tokenizer
from test_tokenizer import HARD_STRINGS


@pytest.fixture(scope="module")
def texts():
    return fixture_gutenberg_lines()[:600] + HARD_STRINGS


def assert_same_rows(ours, theirs, n_rows):
    """Per row, everything an `Encoding` carries besides the ids, read straight from the encodings
    (word and sequence ids) and from the output lists (offsets, special-token mask)."""
    for i in range(n_rows):
        assert ours.word_ids(i) == theirs.word_ids(i), i
        assert ours.sequence_ids(i) == theirs.sequence_ids(i), i
        assert ours["input_ids"][i] == theirs["input_ids"][i], i
        assert ours["token_type_ids"][i] == theirs["token_type_ids"][i], i
        assert ours["attention_mask"][i] == theirs["attention_mask"][i], i
        assert ours["special_tokens_mask"][i] == theirs["special_tokens_mask"][i], i
        assert ours["offset_mapping"][i] == [tuple(o) for o in theirs["offset_mapping"][i]], i


@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_deferred_extras_match_the_reference(casing, texts, request):
    directory = request.getfixturevalue(f"{casing}_dir")
    ours_tok, reference = BertTokenizer.from_pretrained(directory), reference_tokenizer(directory)
    extras = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    pairs = texts[::-1]
    for kwargs in (dict(), dict(padding=True), dict(truncation=True, max_length=24, padding="max_length")):
        ours = ours_tok(texts, pairs, **kwargs, **extras)
        assert_same_rows(ours, reference(texts, pairs, **kwargs, **extras), len(texts))
    # Overflowing windows of single texts, padded: the windows' extras are sliced from the text's.
    kwargs = dict(truncation=True, max_length=16, stride=4, return_overflowing_tokens=True, padding=True)
    ours, theirs = ours_tok(texts, **kwargs, **extras), reference(texts, **kwargs, **extras)
    assert ours["overflow_to_sample_mapping"] == theirs["overflow_to_sample_mapping"]
    assert_same_rows(ours, theirs, len(theirs["input_ids"]))


def test_word_ids_of_padded_rows_and_split_words(uncased_dir, texts):
    """Word ids first read after padding (still deferred when the rows were padded) come out
    padded; pre-split words get the reference's word ids and offsets."""
    tokenizer, reference = BertTokenizer.from_pretrained(uncased_dir), reference_tokenizer(uncased_dir)
    expected = reference(texts, padding=True)
    padded = tokenizer(texts, padding=True)
    assert [padded.word_ids(i) for i in range(len(texts))] == [expected.word_ids(i) for i in range(len(texts))]
    # Split words: word ids index the list of words, offsets lie within each word.
    words = [text.split() for text in texts if text.split()]
    ours = tokenizer(words, is_split_into_words=True, return_offsets_mapping=True, padding=True)
    theirs = reference(words, is_split_into_words=True, return_offsets_mapping=True, padding=True)
    assert [ours.word_ids(i) for i in range(len(words))] == [theirs.word_ids(i) for i in range(len(words))]
    assert ours["offset_mapping"] == [[tuple(o) for o in row] for row in theirs["offset_mapping"]]
    assert ours["input_ids"] == theirs["input_ids"]


def test_token_ids_match_the_reference(uncased_dir, texts):
    tokenizer, reference = BertTokenizer.from_pretrained(uncased_dir), reference_tokenizer(uncased_dir)
    assert tokenizer.token_ids(texts) == reference(texts, add_special_tokens=False)["input_ids"]


def test_special_token_of_letters_inside_a_word(uncased_dir):
    """A special token made of letters splits the word it sits in, as in the reference: the
    shortcut for plain words must not hide it."""
    from transformers import BertTokenizerFast

    reference = BertTokenizerFast.from_pretrained(str(uncased_dir), additional_special_tokens=["par"])
    texts = ["paris", "xparisy", "I love paris and Paris", "paris, paris.", "parallel par"]
    assert reference(texts)["input_ids"][0] == [101, 11968, 2003, 102]  # par, is: not the word paris
    tokenizer = BertTokenizer.from_pretrained(uncased_dir, additional_special_tokens=["par"])
    expected = reference(texts, return_offsets_mapping=True)
    ours = tokenizer(texts, return_offsets_mapping=True)
    assert ours["input_ids"] == expected["input_ids"]
    assert ours["offset_mapping"] == [[tuple(o) for o in row] for row in expected["offset_mapping"]]
    fresh = BertTokenizer.from_pretrained(uncased_dir, additional_special_tokens=["par"])  # empty cache
    assert fresh.token_ids(texts) == reference(texts, add_special_tokens=False)["input_ids"]


def test_pickles_as_settings_not_caches(uncased_dir, texts):
    fresh = BertTokenizer.from_pretrained(uncased_dir, additional_special_tokens=["[unused0]"], model_max_length=64)
    used = BertTokenizer.from_pretrained(uncased_dir, additional_special_tokens=["[unused0]"], model_max_length=64)
    expected = used(texts, truncation=True, return_offsets_mapping=True)
    size = len(pickle.dumps(fresh))
    assert len(pickle.dumps(used)) == size  # the filled caches do not travel
    copy = pickle.loads(pickle.dumps(used))
    assert copy(texts, truncation=True, return_offsets_mapping=True) == expected
    assert copy.additional_special_tokens == ["[unused0]"] and copy.model_max_length == 64


def test_num_proc_gives_the_single_process_result_in_order(uncased_dir):
    lines = gutenberg_lines(2 * MIN_TEXTS_PER_PROCESS + 400)
    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    try:
        for kwargs in (dict(), dict(return_offsets_mapping=True, truncation=True, max_length=32, padding=True)):
            expected = BertTokenizer.from_pretrained(uncased_dir)(lines, **kwargs)
            ours = tokenizer(lines, num_proc=2, **kwargs)
            assert tokenizer._workers is not None and tokenizer._workers.processes == 2  # it did use workers
            assert ours == expected
            assert [ours.word_ids(i) for i in range(len(lines))] == [expected.word_ids(i) for i in range(len(lines))]
        # In order: the reversed input gives the reversed output, and pairs line up.
        reversed_ids = tokenizer(lines[::-1], num_proc=2)["input_ids"]
        assert reversed_ids == BertTokenizer.from_pretrained(uncased_dir)(lines)["input_ids"][::-1]
        pairs = tokenizer(lines, lines[::-1], num_proc=2)
        assert pairs == BertTokenizer.from_pretrained(uncased_dir)(lines, lines[::-1])
        words, options = [line.split() for line in lines], dict(is_split_into_words=True, return_offsets_mapping=True)
        split = tokenizer(words, num_proc=2, **options)
        expected = BertTokenizer.from_pretrained(uncased_dir)(words, **options)
        assert split == expected
        assert [split.word_ids(i) for i in range(len(words))] == [expected.word_ids(i) for i in range(len(words))]
        # A user mistake found in a worker reaches the caller as the same error.
        with pytest.raises(BertforgeError, match="expected a string to tokenize, got int"):
            tokenizer(lines + [123], num_proc=2)
    finally:
        if tokenizer._workers is not None:
            tokenizer._workers.close()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_num_proc_must_be_a_positive_integer(uncased_dir, bad):
    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    with pytest.raises(BertforgeError, match="num_proc"):
        tokenizer(["a small batch"], num_proc=bad)


def test_small_batches_stay_in_process(uncased_dir):
    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    lines = gutenberg_lines(MIN_TEXTS_PER_PROCESS)
    assert tokenizer(lines, num_proc=4) == BertTokenizer.from_pretrained(uncased_dir)(lines)
    assert tokenizer._workers is None
