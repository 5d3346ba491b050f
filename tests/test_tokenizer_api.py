"""The tokenizer calls users port from transformers beyond the encoding itself, compared with transformers'
fast tokenizer: the token/word/character maps of the output, the MLM and token-classification collators,
batches of (text, pair) tuples, `pad` on one feature dict, and the padding side."""

from __future__ import annotations

import pytest
import torch

from tokenizers import AddedToken

from bertforge import BertTokenizer
from bertforge.errors import InputError
from bertforge.io.datasets import read_squad
from conftest import fixture_data, fixture_gutenberg_lines, reference_tokenizer

MAPS = ("token_to_chars", "token_to_word", "token_to_sequence", "char_to_token", "char_to_word", "word_to_tokens",
        "word_to_chars")


@pytest.fixture(scope="module")
def tokenizers(uncased_dir):
    return BertTokenizer.from_pretrained(uncased_dir), reference_tokenizer(uncased_dir)


def answers(encoding, batch: int, call: str, text_lengths: tuple[int, int], n_tokens: int) -> list:
    """Every answer of one map for one row: each index the row can be asked about, and a few past it."""
    name = call.split("_")[0]
    out = []
    for sequence in ((0, 1) if call in ("char_to_token", "char_to_word", "word_to_tokens", "word_to_chars") else (None,)):
        limit = {"token": n_tokens, "char": text_lengths[sequence or 0], "word": n_tokens}[name] + 3
        for index in range(limit):
            options = {} if sequence is None else {"sequence_index": sequence}
            try:
                value = getattr(encoding, call)(batch, index, **options)
            except TypeError:  # transformers' word_to_chars of a word the row lacks
                value = None
            out.append(None if value is None else tuple(value) if isinstance(value, tuple) else value)
    return out


def test_token_word_and_character_maps_equal_transformers_on_squad_windows(tokenizers):
    """SQuAD preprocessing as transformers' course writes it: question + context windows with a stride,
    `char_to_token(i, start, sequence_index=1)` finding the answer's tokens in each window."""
    ours, reference = tokenizers
    examples, _ = read_squad(fixture_data("squad", "squad-v1.1-dev-part-train.json.gz"))
    examples = examples[:6]
    options = dict(truncation="only_second", max_length=96, stride=24, return_overflowing_tokens=True,
                   return_offsets_mapping=True, padding="max_length")
    questions, contexts = [e.question for e in examples], [e.context for e in examples]
    ours_out, theirs = ours(questions, contexts, **options), reference(questions, contexts, **options)
    assert ours_out["overflow_to_sample_mapping"] == theirs["overflow_to_sample_mapping"]
    for batch, sample in enumerate(theirs["overflow_to_sample_mapping"]):
        lengths = (len(questions[sample]), len(contexts[sample]))
        assert ours_out.tokens(batch) == theirs.tokens(batch)
        for call in MAPS:
            assert answers(ours_out, batch, call, lengths, 96) == answers(theirs, batch, call, lengths, 96), call
    one = "Jeremy lives in Paris, un-believably."
    assert ours(one).char_to_token(24) == reference(one).char_to_token(24) == 6  # the row alone: (index)
    for args in ((one, "and a pair"), (one,), (["a b", "c"], ["", "d"]), ([one], [""])):
        assert ours(*args).n_sequences == reference(*args).n_sequences, args


def test_a_map_asked_about_a_row_the_batch_lacks_names_it(tokenizers):
    ours, _ = tokenizers
    with pytest.raises(InputError, match="batch index 3 is past the 2 rows"):
        ours(["a", "b"]).token_to_word(3, 0)
    with pytest.raises(InputError, match="index must be a whole number >= 0, got -1"):
        ours("a b").char_to_token(-1)
    padded = ours.pad([ours("a b"), ours("c")])
    assert padded.n_sequences is None
    with pytest.raises(InputError, match=r"made by pad\(\), which keeps no encodings"):
        padded.word_ids(1)


def test_mlm_and_token_classification_collators_work_as_with_transformers_tokenizer(tokenizers):
    from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

    ours, reference = tokenizers
    texts = ["a short one", "a somewhat longer sentence to pad against"]
    for collator, features in (
            (DataCollatorForLanguageModeling, lambda tok: [tok(t) for t in texts]),
            (DataCollatorForTokenClassification, lambda tok: [dict(tok(t), labels=list(range(len(tok(t)["input_ids"]))))
                                                              for t in texts])):
        batches = []
        for tokenizer in (ours, reference):
            torch.manual_seed(0)
            batches.append(collator(tokenizer)(features(tokenizer)))
        assert sorted(batches[0]) == sorted(batches[1])
        assert all(torch.equal(batches[0][key], batches[1][key]) for key in batches[1]), collator.__name__
    ids = ours("a b", "c")["input_ids"]
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == \
        reference.get_special_tokens_mask(ids, already_has_special_tokens=True) == [1, 0, 0, 1, 0, 1]
    # transformers 5 leaves the mask of ids not yet encoded unimplemented; BERT's rule: [CLS] A [SEP] B [SEP]
    assert ours.get_special_tokens_mask([7, 8], [9]) == [1, 0, 0, 1, 0, 1]
    with pytest.raises(InputError, match="ids that hold their special tokens are one list"):
        ours.get_special_tokens_mask(ids, [0, 102], already_has_special_tokens=True)


def test_batches_of_pair_tuples_special_token_order_and_token_strings_as_transformers(tokenizers):
    ours, reference = tokenizers
    batch = [("a b", "c"), ["Paris is big.", "It is."]]
    assert ours(batch)["input_ids"] == reference(batch)["input_ids"]
    assert ours(batch)["token_type_ids"] == reference(batch)["token_type_ids"]
    for args, options in ((("Paris is big.",), {}), (("Paris is big.", "It is."), {"max_length": 6}),
                          (("a b",), {"add_special_tokens": False, "return_tensors": "pt"})):
        assert str(ours.encode(*args, **options)) == str(reference.encode(*args, **options))
    assert ours.all_special_tokens == reference.all_special_tokens
    assert ours.all_special_ids == reference.all_special_ids
    for text in ("Unbelievably, tokenizers are fun!", "it's a do not, don't! you're [CLS]", "##ing starts"):
        pieces = reference.tokenize(text) + ["notinthevocabulary"]
        assert ours.convert_tokens_to_string(pieces) == reference.convert_tokens_to_string(pieces)
    pieces = ["i", "'m", "x", "'ve", "y", "'re", "do", "not", "z", "'", "s", "a", "'s", "b", "n't", "'ll"]
    assert ours.convert_tokens_to_string(pieces) == reference.convert_tokens_to_string(pieces)


def test_pad_as_transformers_pads_one_dict_and_to_model_max_length(tokenizers):
    ours, reference = tokenizers
    one = {"input_ids": [101, 1037, 102]}
    for options in ({"padding": "max_length", "max_length": 5}, {"padding": "max_length"}, {}):
        got, expected = ours.pad(dict(one), **options), reference.pad(dict(one), **options)
        assert dict(got) == dict(expected), options
        got, expected = ours.pad(dict(one), **options, return_tensors="pt"), reference.pad(dict(one), **options,
                                                                                           return_tensors="pt")
        assert all(torch.equal(got[key], expected[key]) for key in expected), options
    padded = ours.pad([ours("a b c"), ours("d")], return_tensors="pt")
    assert torch.equal(padded.input_ids, reference.pad([reference("a b c"), reference("d")],
                                                       return_tensors="pt").input_ids)


def test_only_the_right_side_is_taken_and_loading_keywords_that_change_nothing_are_accepted(uncased_dir):
    tokenizer = BertTokenizer.from_pretrained(uncased_dir, use_fast=True, local_files_only=True, padding_side="right")
    assert tokenizer.padding_side == tokenizer.truncation_side == "right"
    for side in ("padding_side", "truncation_side"):
        with pytest.raises(InputError, match=rf"BertTokenizer.{side}='left': bertforge pads and truncates on the "
                                             r"right only"):
            setattr(tokenizer, side, "left")
        with pytest.raises(InputError, match=rf"{side}='left'"):
            BertTokenizer.from_pretrained(uncased_dir, **{side: "left"})


def test_added_special_tokens_encode_decode_and_save_as_transformers_does(uncased_dir, tmp_path):
    """Entity markers added as transformers' users add them, then the model resized to the tokenizer."""
    from transformers import AutoTokenizer

    from bertforge.model import BertConfig, BertForMaskedLM

    ours, reference = BertTokenizer.from_pretrained(uncased_dir), reference_tokenizer(uncased_dir)
    for tokenizer in (ours, reference):
        assert tokenizer.add_tokens(["[E1]", "[/E1]"], special_tokens=True) == 2
        assert tokenizer.add_special_tokens({"additional_special_tokens": ["<ent>", "[E1]"]}) == 1
    assert len(ours) == len(reference) == 30525
    texts = ["He met [E1]Bill Gates[/E1] at <ent>Microsoft<ENT> x[E1]y", "[/E1][E1] plain", "no markers here"]

    def encoded(tokenizer):
        out = tokenizer(texts, return_offsets_mapping=True)
        return (out["input_ids"], [list(map(tuple, row)) for row in out["offset_mapping"]],
                [out.word_ids(i) for i in range(len(texts))], [out.tokens(i) for i in range(len(texts))],
                [tokenizer.decode(ids, skip_special_tokens=skip) for ids in out["input_ids"] for skip in (False, True)])

    expected = encoded(reference)
    assert encoded(ours) == expected
    assert expected[0][0][3] == 30522 and expected[0][0][-3] == 30522  # "[E1]" whole, inside a word too
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    assert encoded(AutoTokenizer.from_pretrained(tmp_path / "ours")) == expected
    assert encoded(BertTokenizer.from_pretrained(tmp_path / "ours"))[0] == expected[0]
    assert encoded(BertTokenizer.from_pretrained(tmp_path / "theirs"))[0] == expected[0]
    model = BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64))
    model.resize_token_embeddings(len(ours))
    assert model(ours(texts[0], return_tensors="pt")["input_ids"]).logits.shape == (1, 18, 30525)



def test_listed_and_unlisted_special_tokens_as_transformers_5(uncased_dir, tmp_path):
    """add_tokens(special_tokens=True) makes a token special (matched as written, skipped by decode) without listing
    it in all_special_tokens, so the MLM collator's mask leaves it maskable; add_special_tokens replaces the listed
    extra tokens unless told to extend them; a token leaving the list stays special; an unlisted special token added
    again as a plain one becomes plain. Then both tokenizers save, and each reads the other's folder."""
    from transformers import AutoTokenizer

    text = "a <x> <A> <a> <c> <d> b <b> [E1]"

    def steps(tokenizer):
        seen = [tokenizer.add_tokens(["<x>"], special_tokens=True), tokenizer.all_special_tokens, len(tokenizer)]
        seen += [tokenizer.add_special_tokens({"additional_special_tokens": ["<a>", "<b>"]}),
                 tokenizer.all_special_tokens, tokenizer.add_special_tokens({"extra_special_tokens": ["<c>"]}),
                 tokenizer.all_special_tokens, tokenizer.extra_special_tokens]
        seen += [tokenizer.add_special_tokens({"extra_special_tokens": ["<d>"]}, replace_extra_special_tokens=False),
                 tokenizer.add_special_tokens({"pad_token": "[PAD]"}), tokenizer.add_tokens(["[E1]"]),
                 tokenizer.add_tokens(["<c>"], special_tokens=True), tokenizer.all_special_tokens,
                 tokenizer.all_special_ids, tokenizer.special_tokens_map]
        return seen + encoded(tokenizer)

    def encoded(tokenizer):
        ids = tokenizer(text)["input_ids"]
        return [ids, tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True),
                tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True),
                tokenizer.decode(ids, skip_special_tokens=True), tokenizer.decode(ids)]

    ours, reference = BertTokenizer.from_pretrained(uncased_dir), reference_tokenizer(uncased_dir)
    expected = steps(reference)
    assert steps(ours) == expected
    assert expected[12] == ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]", "<c>", "<d>"]  # <x>, <a>, <b> unlisted
    assert expected[-2] == "a < a > b [e1]"  # ... yet skipped by decode ("<A>" is not "<a>": cut up)
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    for folder in ("ours", "theirs"):
        for load in (AutoTokenizer.from_pretrained, BertTokenizer.from_pretrained):
            assert encoded(load(tmp_path / folder)) == expected[-5:], (folder, load)
    for tokenizer in (ours, reference):  # an unlisted special token made plain: matched lower-cased from now on
        assert tokenizer.add_tokens(["<a>"]) == 1
    assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours(text)["input_ids"][3:5] == [30523, 30523]
    ours.save_pretrained(tmp_path / "plain")
    assert encoded(AutoTokenizer.from_pretrained(tmp_path / "plain")) == encoded(ours)


@pytest.mark.parametrize("call,message", [
    (lambda t: t.add_tokens(["a b"], special_tokens=True), r"token 'a b' holds whitespace"),
    (lambda t: t.add_tokens([""], special_tokens=True), r"a token must be a non-empty string, got ''"),
    (lambda t: t.add_special_tokens({"pad_token": "<pad>"}), r"add_special_tokens\(pad_token='<pad>'\): the "
                                                             r"tokenizer's pad_token is '\[PAD\]' and is fixed"),
    (lambda t: t.add_special_tokens({"bos_token": "<s>"}), r"'bos_token' is not one of unk_token"),
    (lambda t: t.add_special_tokens(["[E1]"]), r"add_special_tokens takes a dict"),
    (lambda t: t.add_tokens([AddedToken("ab", single_word=True)]), r"asks for options this tokenizer does not apply"),
    (lambda t: t.add_tokens([AddedToken("[E9]", special=True)]), r"an added token is not special \(matched normalised\)"),
])
def test_tokens_that_cannot_be_added_as_asked_are_refused_naming_why(uncased_dir, call, message):
    tokenizer = BertTokenizer.from_pretrained(uncased_dir)
    with pytest.raises(InputError, match=message):
        call(tokenizer)
    assert len(tokenizer) == 30522


ADDED = ["covid19", "Ing", "[e1]", "don't", "café", "hello", "mask", "e1]x", "ÉTÉ", "北京", "naïve", "->", "##qz"]
ADDED_TEXTS = ["COVID19 and Covid19s spread; xcovid19y", "[E1]x[/E1] [MASK] mask [mask]", "Café CAFÉ cafe naïve été",
               "I don't know, DON'T! Singing ING ing", "hellohello he\x00llo 北京欢迎你", "ab\u0301c Ｃｏｖｉｄ19",
               "x->y\x0b 北京\x0c [E1]\x85", "QZX Qzxing aqz Éqzx"]  # control characters; an added token is no piece


@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_added_tokens_are_found_in_the_normalised_text_as_transformers_finds_them(casing, request, tmp_path):
    """transformers' add_tokens (not special): found in the lower-cased, accent-stripped text where the tokenizer
    normalises, inside words too, longest first; then saved and loaded both ways."""
    from transformers import AutoTokenizer

    directory = request.getfixturevalue(f"{casing}_dir")
    ours, reference = BertTokenizer.from_pretrained(directory), reference_tokenizer(directory)
    assert ours.add_tokens(ADDED) == reference.add_tokens(ADDED)
    assert ours.add_tokens(["hello", "[E1]", "qzx"], special_tokens=True) == \
        reference.add_tokens(["hello", "[E1]", "qzx"], special_tokens=True)
    assert (len(ours), ours.vocab_size) == (len(reference), reference.vocab_size) == (30535, 30522)
    texts = ADDED_TEXTS + fixture_gutenberg_lines()[:400]

    def encoded(tokenizer):
        out = tokenizer(texts, return_offsets_mapping=True)
        return (out["input_ids"], [list(map(tuple, row)) for row in out["offset_mapping"]],
                [out.word_ids(i) for i in range(len(texts))],
                [tokenizer.decode(ids, skip_special_tokens=True) for ids in out["input_ids"]])

    expected = encoded(reference)
    got = encoded(ours)
    for part, name in enumerate(("ids", "offsets", "word ids", "decoding")):
        differ = [texts[i] for i in range(len(texts)) if got[part][i] != expected[part][i]]
        assert not differ, (name, differ[:3])
    assert sum(row.count(ours.vocab["covid19"]) for row in expected[0]) >= (3 if casing == "uncased" else 1)
    ours.save_pretrained(tmp_path / "ours")
    reference.save_pretrained(tmp_path / "theirs")
    assert encoded(AutoTokenizer.from_pretrained(tmp_path / "ours"))[0] == expected[0]
    assert encoded(BertTokenizer.from_pretrained(tmp_path / "ours"))[0] == expected[0]
    assert encoded(BertTokenizer.from_pretrained(tmp_path / "theirs"))[0] == expected[0]


def test_what_transformers_training_code_reads_off_a_tokenizer_and_its_batches(tokenizers):
    from bertforge.pipelines import pipeline_class
    from bertforge.tokenization import BatchEncoding

    ours, reference = tokenizers
    for name in ("is_fast", "model_input_names", "max_len_single_sentence", "max_len_sentences_pair"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert [ours.num_special_tokens_to_add(pair) for pair in (False, True)] == \
        [reference.num_special_tokens_to_add(pair=pair) for pair in (False, True)]
    batch = ours(["a b", "c"], padding=True, return_tensors="pt")
    rebuilt = type(batch)({key: value + 0 for key, value in batch.items()})  # how transformers' Trainer moves one
    assert isinstance(rebuilt, BatchEncoding) and torch.equal(rebuilt.input_ids, batch.input_ids)
    assert pipeline_class("sentiment-analysis") is pipeline_class("text-classification")
    assert pipeline_class("ner") is pipeline_class("token-classification")


def test_pipeline_takes_transformers_tokenizer_keyword(uncased_dir):
    import bertforge
    from bertforge.model import default_model_path

    embed = bertforge.pipeline("sentence-embedding", model=default_model_path(), tokenizer=default_model_path())
    assert embed(["a tokenizer given as transformers takes it"]).shape == (1, 384)
    grown = BertTokenizer.from_pretrained(uncased_dir)
    grown.add_tokens(["[E1]"], special_tokens=True)
    with pytest.raises(InputError, match=r"tokenizer: 30523 tokens, more than the model's 30522 embeddings"):
        bertforge.pipeline("sentence-embedding", tokenizer=grown)

