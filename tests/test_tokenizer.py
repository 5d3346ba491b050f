"""The WordPiece tokenizer: SPEC §1 examples, the encoding API, and parity with transformers'
BertTokenizerFast on every line of the real data, the fixture copies and (where present) the full
files (uncased and cased, singles and pairs)."""

from __future__ import annotations

import pytest
import torch

from bertforge import BertTokenizer
from bertforge.errors import BertforgeError, CheckpointError, InputError
from bertforge.tokenization import WordPiece
from conftest import check_reference, data_file, fixture_gutenberg_lines, gutenberg_lines, reference_tokenizer

HARD_STRINGS = [
    "Crème brûlée à la française, naïve café",  # accents
    "北京欢迎你 and 東京タワー",  # CJK ideographs (each its own token) and kana
    "I 🥰 emoji 😀✨ and ❤️ hearts",  # emoji: [UNK] per symbol
    "tab\there\nnewline\rcarriage\x0cform feed\x00nul\ufffdreplacement",  # control characters
    "zero\u200bwidth\u200djoiner\ufeffbom and\u00a0nbsp\u2028line sep",  # zero-width / unusual spaces
    "مرحبا بالعالم، كيف حالك؟",  # Arabic with Arabic punctuation
    "नमस्ते दुनिया। यह हिंदी है",  # Hindi with danda and combining marks
    "สวัสดีชาวโลก ภาษาไทย",  # Thai, no spaces between words
    "hello[MASK]world [MASK]s [mask] x[SEP]y[CLS][PAD]",  # special tokens glued to text
    "a" * 300 + " short " + "b" * 99 + " " + "c" * 101,  # around max_input_chars_per_word
    "ΣΑΣ İstanbul ǅemal ﬁne ½ ²",  # case mappings, ligatures, fractions
    "can't won't it's \"quoted\" (parens) [brackets] {braces} ... --- ¿qué? ¡sí!",
    "  leading and trailing spaces   ",
    "",
    "\u037e Greek question mark; e\u0301 combining acute",
    # unassigned (kept), private use (dropped), both ends of the reference's last CJK block
    "un\u0378assigned x\U0010ffffy pri\ue000vate \U0002b820\U0002b91f\U0002b920\U0002ceaf",
    # typeset English (the tokenizer's shortcut for chunks of ASCII and these marks), an over-long
    # word glued to them, and a special token that keeps its chunk off the shortcut
    "“Well,” she said—‘it’s… done’ – Hirschhorn’s UNBELIEVABLE-ness. " + "x" * 120 + "!— “[MASK]”",
]


@pytest.fixture(scope="module")
def uncased(uncased_dir):
    return BertTokenizer.from_pretrained(uncased_dir)


@pytest.fixture(scope="module")
def cased(cased_dir):
    return BertTokenizer.from_pretrained(cased_dir)


# --- SPEC §1 examples ---------------------------------------------------------------------

def test_spec_wordpiece_examples(uncased):
    assert uncased.tokenize("Let us start pretraining the model.") == \
        "let us start pre ##train ##ing the model .".split()
    assert uncased.tokenize("embeddings") == ["em", "##bed", "##ding", "##s"]
    # bert-base-uncased knows "enjoyed" whole; the seed's split appears once it does not.
    assert uncased.tokenize("I enjoyed the game") == ["i", "enjoyed", "the", "game"]
    smaller = {t: i for t, i in uncased.vocab.items() if t != "enjoyed"}
    assert BertTokenizer(smaller).tokenize("I enjoyed the game") == ["i", "enjoy", "##ed", "the", "game"]


def test_spec_stem_with_small_vocabulary():
    vocab = {token: i for i, token in enumerate(["[UNK]", "a", "b", "c", "e", "l", "m", "o", "s", "t", "u", "st",
                                                  "##a", "##b", "##c", "##e", "##l", "##m", "##o", "##s", "##t", "##u"])}
    pieces = WordPiece(vocab, "[UNK]").split("stem")
    assert [vocab_token(vocab, i) for i, _, _ in pieces] == ["st", "##e", "##m"]
    # A word with a character that has no piece becomes one [UNK] as a whole.
    assert [vocab_token(vocab, i) for i, _, _ in WordPiece(vocab, "[UNK]").split("stemx")] == ["[UNK]"]


def vocab_token(vocab, token_id):
    return next(token for token, i in vocab.items() if i == token_id)


def test_spec_padding_example(uncased):
    enc = uncased("I love Paris", padding="max_length", max_length=7)
    assert enc["input_ids"] == [101, 1045, 2293, 3000, 102, 0, 0]
    assert enc["attention_mask"] == [1, 1, 1, 1, 1, 0, 0]
    assert uncased.convert_ids_to_tokens(enc["input_ids"]) == \
        ["[CLS]", "i", "love", "paris", "[SEP]", "[PAD]", "[PAD]"]


def test_spec_segment_ids(uncased):
    enc = uncased("Paris is a beautiful city", "I love Paris")
    assert enc["token_type_ids"] == [0] * 7 + [1] * 4
    assert uncased.decode(enc["input_ids"]) == "[CLS] paris is a beautiful city [SEP] i love paris [SEP]"


# --- encoding API -------------------------------------------------------------------------

def test_batch_tensors_and_extras(uncased):
    enc = uncased(["I love Paris", "Hello, world!"], padding=True, return_tensors="pt",
                  return_offsets_mapping=True, return_special_tokens_mask=True)
    assert enc.input_ids.shape == (2, 6) and enc.input_ids.dtype == torch.long
    assert enc["special_tokens_mask"][0].tolist() == [1, 0, 0, 0, 1, 1]
    assert enc["offset_mapping"][1].tolist() == [[0, 0], [0, 5], [5, 6], [7, 12], [12, 13], [0, 0]]
    assert enc.word_ids(1) == [None, 0, 1, 2, 3, None]
    single = uncased("I love Paris", return_tensors="pt")
    assert single["input_ids"].tolist() == [[101, 1045, 2293, 3000, 102]]  # batch dimension, as the reference


def test_overflow_windows(uncased):
    text = " ".join(["word"] * 50)
    enc = uncased(text, truncation=True, max_length=20, stride=5, return_overflowing_tokens=True)
    assert all(len(ids) <= 20 for ids in enc["input_ids"])
    assert len(enc["input_ids"]) > 1 and enc["overflow_to_sample_mapping"] == [0] * len(enc["input_ids"])


def test_decode_and_conversions(uncased):
    ids = uncased("Unaffable embeddings!")["input_ids"]
    assert uncased.decode(ids, skip_special_tokens=True) == "unaffable embeddings!"
    assert uncased.convert_tokens_to_ids(["[MASK]", "paris"]) == [103, 3000]
    assert uncased.convert_ids_to_tokens(103) == "[MASK]"


def test_decode_takes_one_id_and_numpy_or_tensor_integers_as_transformers_does(uncased, uncased_dir):
    import numpy as np

    reference = reference_tokenizer(uncased_dir)
    ids = [101, 7592, 1010, 2088, 102]
    for given in (7592, np.int64(7592), torch.tensor(7592), list(np.array(ids)), np.array(ids), torch.tensor(ids)):
        assert uncased.decode(given) == reference.decode(given), given
    assert uncased.convert_ids_to_tokens(np.int64(7592)) == "hello"
    with pytest.raises(InputError, match="ids must be a list of token ids"):
        uncased.decode([1.5])


def test_vocabulary_accessors_equal_transformers(uncased, uncased_dir):
    reference = reference_tokenizer(uncased_dir)
    assert uncased.get_vocab() == reference.get_vocab() and len(uncased) == len(reference)
    assert uncased.special_tokens_map == reference.special_tokens_map


@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 16}])
def test_data_collator_with_padding_gives_what_it_gives_with_the_reference(uncased, uncased_dir, options):
    """transformers' DataCollatorWithPadding calls tokenizer.pad: a training loop ported from transformers
    gets the same batches with our tokenizer."""
    from transformers import DataCollatorWithPadding

    reference = reference_tokenizer(uncased_dir)
    texts = ["a short one", "a somewhat longer sentence to pad against", "mid length text"]
    ours = DataCollatorWithPadding(uncased, **options)([dict(uncased(t), label=i) for i, t in enumerate(texts)])
    theirs = DataCollatorWithPadding(reference, **options)([dict(reference(t), label=i) for i, t in enumerate(texts)])
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    with pytest.raises(InputError, match="pad: give a list of feature dicts with 'input_ids'"):
        uncased.pad([{"text": "no ids"}])


OUTPUT_OPTIONS = [
    dict(padding=True, pad_to_multiple_of=8, return_length=True),
    dict(pad_to_multiple_of=8, return_length=True),  # no padding: the multiple is not used
    dict(return_attention_mask=False, return_token_type_ids=False, return_length=True),
    dict(text_pair="and a pair", padding="max_length", max_length=12, pad_to_multiple_of=4, return_token_type_ids=False),
    dict(truncation=True, max_length=6, stride=1, return_overflowing_tokens=True, return_length=True, padding=True),
    dict(padding=True, return_length=True, return_attention_mask=False, return_tensors="np"),
]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("options", OUTPUT_OPTIONS)
def test_output_options_give_what_the_reference_gives(uncased, uncased_dir, options, batched):
    """pad_to_multiple_of, return_length, return_attention_mask and return_token_type_ids as transformers'
    fast tokenizer has them (`length` is a list even for one text, and counts the padding)."""
    reference = reference_tokenizer(uncased_dir)
    texts = ["a b c a b c a b c", "hello world"] if batched else "a b c a b c a b c"
    if batched and "text_pair" in options:
        options = dict(options, text_pair=[options["text_pair"]] * 2)
    ours, theirs = uncased(texts, **options), reference(texts, **options)
    assert sorted(ours) == sorted(theirs)
    assert all(str(ours[key]) == str(theirs[key]) for key in theirs), options


def test_an_empty_pair_a_cjk_setting_and_decode_clean_up_as_in_transformers(uncased, uncased_dir, tmp_path):
    """From a fuzz against transformers: an empty text_pair of one text is no pair; tokenizer_config.json's
    clean_up_tokenization_spaces joins contractions in decode; tokenize_chinese_chars=false, which we do not
    compute, is refused (it was ignored)."""
    import json
    import shutil

    reference = reference_tokenizer(uncased_dir)
    assert uncased("hello", "")["input_ids"] == reference("hello", "")["input_ids"] == [101, 7592, 102]
    assert uncased(["hello"], [""])["input_ids"] == reference(["hello"], [""])["input_ids"]
    folder = tmp_path / "clean"
    shutil.copytree(uncased_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "clean_up_tokenization_spaces": True}))
    ids = reference("it's a test , ok? don't you're")["input_ids"]
    assert BertTokenizer.from_pretrained(folder).decode(ids) == reference_tokenizer(folder).decode(ids) == \
        "[CLS] it's a test, ok? don't you're [SEP]"
    assert uncased.decode(ids) == reference.decode(ids) == "[CLS] it ' s a test, ok? don ' t you ' re [SEP]"
    assert uncased.decode(ids, clean_up_tokenization_spaces=True) == "[CLS] it's a test, ok? don't you're [SEP]"
    BertTokenizer.from_pretrained(folder).save_pretrained(tmp_path / "saved")
    assert BertTokenizer.from_pretrained(tmp_path / "saved").clean_up_tokenization_spaces is True
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenize_chinese_chars": False}))
    with pytest.raises(CheckpointError, match="tokenize_chinese_chars=false is not supported"):
        BertTokenizer.from_pretrained(folder)


def test_a_pair_overflowing_with_longest_first_gives_the_references_windows(uncased, uncased_dir):
    """Before, refused; the reference combines the two sides' windows in tokenizers' own order."""
    import random

    reference = reference_tokenizer(uncased_dir)
    rng, words = random.Random(0), "the cat sat on a mat unaffable embeddings , . !".split()
    settings = dict(truncation="longest_first", return_overflowing_tokens=True, return_offsets_mapping=True)
    for _ in range(300):
        a, b = (" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(2))
        length = rng.randint(6, 16)
        stride = rng.randint(0, min(3, (length - 3) // 2 - 1)) if length > 8 else 0
        ours, theirs = uncased(a, b, max_length=length, stride=stride, **settings), \
            reference(a, b, max_length=length, stride=stride, **settings)
        assert dict(ours) == dict(theirs), (a, b, length, stride)
    with pytest.raises(InputError, match=r"stride \(3\) must be smaller than the room max_length leaves for the pair "
                                         r"\(1 tokens\)"):
        uncased("cat", "cat", max_length=4, stride=3, **settings)


def test_pad_to_multiple_of_is_checked_against_max_length(uncased):
    with pytest.raises(InputError, match=r"max_length \(10\) must be a multiple of pad_to_multiple_of \(4\)"):
        uncased("a b c", truncation=True, max_length=10, padding=True, pad_to_multiple_of=4)
    with pytest.raises(InputError, match="pad_to_multiple_of must be a positive integer, got -3"):
        uncased("a b c", padding=True, pad_to_multiple_of=-3)


def test_max_length_alone_truncates_as_in_transformers(uncased, uncased_dir):
    """transformers reads max_length without truncation or padding as "cut to this"; with padding=True it
    ignores max_length (and warns)."""
    reference = reference_tokenizer(uncased_dir)
    text, pair = "Hello, World! This is a fairly long first sentence.", "And a second one."
    for call in (dict(max_length=5), dict(text_pair=pair, max_length=9), dict(max_length=5, truncation=False),
                 dict(max_length=5, padding="max_length", truncation=True)):
        assert uncased(text, **call)["input_ids"] == reference(text, **call)["input_ids"], call
    assert len(uncased(text, max_length=5, padding=True)["input_ids"]) == len(uncased(text)["input_ids"])


def test_settings_the_splitter_is_built_from_cannot_change_after(uncased):
    """Before, `tok.do_lower_case = False` changed pickled copies (worker processes, datasets.map) but not
    the tokenizer itself: the same text got other ids depending on num_proc."""
    import pickle

    tokenizer = pickle.loads(pickle.dumps(uncased))
    for name, value in (("do_lower_case", False), ("mask_token", "[UNK]"), ("vocab", {})):
        with pytest.raises(InputError, match=rf"^BertTokenizer.{name} is fixed once the tokenizer is built"):
            setattr(tokenizer, name, value)
    tokenizer.model_max_length = 128  # read at each call: free to change
    assert pickle.loads(pickle.dumps(tokenizer)).model_max_length == 128
    assert tokenizer("Hello")["input_ids"] == pickle.loads(pickle.dumps(tokenizer))("Hello")["input_ids"]


def test_save_and_reload(uncased, tmp_path):
    uncased.save_pretrained(tmp_path)
    again = BertTokenizer.from_pretrained(tmp_path)
    assert again("Crème brûlée")["input_ids"] == uncased("Crème brûlée")["input_ids"]
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()[:2] == ["[PAD]", "[unused0]"]


@pytest.mark.parametrize("config_name", ["config.json", "bert_config.json"])
def test_a_vocabulary_larger_than_the_models_embeddings_is_refused_when_loaded(uncased, tmp_path, config_name):
    """Ids past the embedding table would fail deep inside torch at the first rare word; a smaller
    vocabulary (a padded embedding table) is fine."""
    uncased.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()  # the extra words go into vocab.txt only
    size = uncased.vocab_size
    (tmp_path / config_name).write_text(f'{{"vocab_size": {size + 8}}}', encoding="utf-8")
    assert BertTokenizer.from_pretrained(tmp_path).vocab_size == size
    with open(tmp_path / "vocab.txt", "a", encoding="utf-8") as f:
        f.writelines(f"zzword{i}\n" for i in range(10))
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}: the vocabulary has {size + 10} tokens, more than the "
                                              rf"{size + 8} word embeddings of the model \({config_name} vocab_size\)"):
        BertTokenizer.from_pretrained(tmp_path)


def test_bad_input_errors(tmp_path, uncased):
    with pytest.raises(CheckpointError, match="nowhere"):
        BertTokenizer.from_pretrained(tmp_path / "nowhere")
    bad = tmp_path / "vocab.txt"
    bad.write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(BertforgeError, match="vocab.txt"):
        BertTokenizer.from_pretrained(bad)
    words = tmp_path / "words.txt"  # a file, but no vocabulary
    words.write_text("hello\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=rf"^{words}: special tokens missing from the vocabulary: \[UNK\], \[SEP\], \[PAD\], \[CLS\], \[MASK\]$"):
        BertTokenizer.from_pretrained(words)
    with pytest.raises(BertforgeError, match="padding"):
        uncased("text", padding="sideways")
    for ids, shown in (("abc", "str 'abc'"), (None, "NoneType 'None'"), ([1.5], r"list '\[1.5\]'")):
        with pytest.raises(InputError, match=rf"^ids must be a list of token ids \(integers\), got {shown}$"):
            uncased.decode(ids)
    assert uncased.decode(torch.tensor([7592, 2088])) == uncased.decode((7592, 2088)) == "hello world"
    with pytest.raises(BertforgeError, match="text"):
        uncased(12345)


# --- parity with the reference on real data ----------------------------------------------
# Every line of each corpus: the fixture copy everywhere, the full files where ../shared/data is.

def tsv_sentences(path) -> list[str]:
    return [row.split("\t")[0] for row in path.read_text(encoding="utf-8").splitlines()[1:]]


def conll_sentences(path) -> list[str]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split(" ")[0])
    return sentences + ([" ".join(words)] if words else [])


CORPORA = {
    "sst2": lambda full: tsv_sentences(data_file("sst2", "train.tsv", full=full)),
    "conll2003": lambda full: conll_sentences(data_file("conll2003", "train.txt", full=full)),
    "gutenberg": lambda full: gutenberg_lines(20_000, full=True) if full else fixture_gutenberg_lines(),
}
KEYS = ("input_ids", "token_type_ids", "attention_mask", "offset_mapping")


def assert_same_encodings(ours, theirs, texts, pairs=None):
    for key in KEYS:
        expected = [list(map(tuple, row)) if key == "offset_mapping" else row for row in theirs[key]]
        got = ours[key]
        if got != expected:
            bad = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            pair = f" / {pairs[bad]!r}" if pairs else ""
            pytest.fail(f"{key} differ on line {bad}: {texts[bad]!r}{pair}\nours   {got[bad]}\ntheirs {expected[bad]}")


@pytest.mark.parametrize("source", ["fixture", pytest.param("full", marks=pytest.mark.slow)])
@pytest.mark.parametrize("corpus", sorted(CORPORA))
@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_parity_with_transformers(corpus, casing, source, request):
    directory = request.getfixturevalue(f"{casing}_dir")
    ours_tok = BertTokenizer.from_pretrained(directory)
    reference = reference_tokenizer(directory)
    texts = CORPORA[corpus](source == "full")
    assert len(texts) > (10_000 if source == "full" else 250)
    settings = dict(truncation=True, max_length=128, return_offsets_mapping=True)
    assert_same_encodings(ours_tok(texts, **settings), reference(texts, **settings), texts)
    first, second = texts[:-1], texts[1:]
    assert_same_encodings(ours_tok(first, second, **settings), reference(first, second, **settings), first, second)


@pytest.mark.parametrize("casing", ["uncased", "cased"])
def test_parity_on_hard_strings(casing, request):
    directory = request.getfixturevalue(f"{casing}_dir")
    ours_tok = BertTokenizer.from_pretrained(directory)
    reference = reference_tokenizer(directory)
    settings = dict(return_offsets_mapping=True)
    assert_same_encodings(ours_tok(HARD_STRINGS, **settings), reference(HARD_STRINGS, **settings), HARD_STRINGS)
    pairs = HARD_STRINGS[::-1]
    assert_same_encodings(ours_tok(HARD_STRINGS, pairs, truncation=True, max_length=32, **settings),
                          reference(HARD_STRINGS, pairs, truncation=True, max_length=32, **settings),
                          HARD_STRINGS, pairs)
    assert_same_encodings(ours_tok(HARD_STRINGS, pairs, add_special_tokens=False, **settings),
                          reference(HARD_STRINGS, pairs, add_special_tokens=False, **settings), HARD_STRINGS, pairs)
    long_a, long_b = HARD_STRINGS[9], HARD_STRINGS[11] * 3
    for a, b in ((long_a, long_b), (long_b, long_a), (long_a, "short")):
        for strategy in ("only_first", "only_second", "longest_first"):
            try:
                expected = reference(a, b, truncation=strategy, max_length=40, padding="max_length")["input_ids"]
            except Exception:  # the reference refuses when the other side alone exceeds max_length
                with pytest.raises(BertforgeError, match="no room"):
                    ours_tok(a, b, truncation=strategy, max_length=40)
                continue
            assert ours_tok(a, b, truncation=strategy, max_length=40, padding="max_length")["input_ids"] == expected
    for text in HARD_STRINGS:
        ids = ours_tok(text)["input_ids"]
        assert ours_tok.decode(ids) == reference.decode(ids), text
        # A sequence that starts inside a word (a truncated window, a fill-mask candidate).
        pieces = ours_tok(text, add_special_tokens=False)["input_ids"][1:]
        assert ours_tok.decode(pieces, skip_special_tokens=True) == reference.decode(pieces, skip_special_tokens=True)


def test_reference_check_catches_the_vocab_file_trap(uncased_dir, cased_dir):
    """A reference built with `vocab_file=` maps every word to [UNK] in transformers 5: parity with
    it would say nothing, so the known-case check must refuse it, and accept the real references."""
    from transformers import BertTokenizerFast

    trap = BertTokenizerFast(vocab_file=str(uncased_dir / "vocab.txt"))
    with pytest.raises(AssertionError, match="reference tokenizer"):
        check_reference(trap, lowercase=True)
    # A cased reference must keep the case: an uncased one fails the cased check, and the other way round.
    with pytest.raises(AssertionError, match="lowercase=False"):
        check_reference(reference_tokenizer(uncased_dir), lowercase=False)
    with pytest.raises(AssertionError, match="lowercase=True"):
        check_reference(reference_tokenizer(cased_dir), lowercase=True)
    # Ours gives the same known encodings (SPEC §1 for the uncased one).
    for lowercase, directory in ((True, uncased_dir), (False, cased_dir)):
        check_reference(BertTokenizer.from_pretrained(directory), lowercase)
