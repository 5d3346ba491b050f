"""`BertTokenizer`: text → `input_ids`, `token_type_ids`, `attention_mask` (and extras).

The pipeline per text: split into whitespace-separated chunks → normalise each chunk and cut it
into WordPiece pieces, cached per chunk so a corpus pays for each distinct chunk once (see
`chunk_encoder`) → add `[CLS]`/`[SEP]`, truncate, pad. Offsets, word ids, the special-token mask
and sequence ids are computed when first read, not for every call. The call signature and outputs
are those of the Hugging Face tokenizers users know.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from contextlib import contextmanager
from functools import partial
from itertools import chain
from pathlib import Path

from bertforge.errors import CheckpointError, InputError
from bertforge.paths import HUB_KEYWORDS, default_model_path, model_path
from bertforge.tokenization.added_tokens import AddedTokens, AddingTokens, added_only
from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.chunk_encoder import ChunkEncoder
from bertforge.tokenization.decoding import Decoding
from bertforge.tokenization.encoding import (BatchEncoding, Encoding, as_int_list, encodings_extras, is_batch, is_flat,
                                             is_one_id, joined_extras, to_tensors)
from bertforge.tokenization.processes import WorkerPool, check_num_proc, use_processes
from bertforge.tokenization.folder import (SPECIAL_TOKEN_KEYS, check_fits_the_model, check_settings,
                                           read_folder, write_folder, write_vocab)
from bertforge.tokenization.truncation import (check_pad_to_multiple_of, pad_and_collate, pad_features, padded_length,
                                               padding_strategy, truncate, truncation_strategy)
from bertforge.tokenization.wordpiece import WordPiece, load_vocab

FIXED_SETTINGS = ("vocab", "do_lower_case", *SPECIAL_TOKEN_KEYS, "additional_special_tokens", "special_added_tokens",
                  "added_tokens")
RIGHT_ONLY = ("padding_side", "truncation_side")


class BertTokenizer(AddingTokens, Decoding):
    """WordPiece tokenizer with BERT's normalisation and special tokens."""

    vocab_file_name = "vocab.txt"
    config_file_name = "tokenizer_config.json"
    padding_side = truncation_side = "right"  # BERT reads [CLS] first: padding and cuts go at the end
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    is_fast = True  # what transformers' code checks before it asks for offsets and word ids, which this gives

    def __init__(self, vocab: dict[str, int] | str | Path, do_lower_case: bool = True,
                 strip_accents: bool | None = None, unk_token: str = "[UNK]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", cls_token: str = "[CLS]", mask_token: str = "[MASK]",
                 additional_special_tokens: tuple[str, ...] | list[str] = (), model_max_length: int = 512,
                 max_input_chars_per_word: int = 100, clean_up_tokenization_spaces: bool = False,
                 added_tokens: tuple[str, ...] | list[str] = (),
                 special_added_tokens: tuple[str, ...] | list[str] = ()):
        self.vocab = dict(vocab) if isinstance(vocab, dict) else load_vocab(vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.additional_special_tokens = list(additional_special_tokens)
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.added_tokens = list(added_tokens)  # not special: see `added_tokens`
        # Special (matched as written, skipped by decode) but not listed in all_special_tokens: see `added_tokens`
        self.special_added_tokens = [t for t in dict.fromkeys(special_added_tokens) if t not in self.all_special_tokens]
        matched_whole = [*self.all_special_tokens, *self.special_added_tokens]
        missing = [t for t in [*matched_whole, *self.added_tokens] if t not in self.vocab]
        if missing:
            where = "" if isinstance(vocab, dict) else f"{vocab}: "
            raise CheckpointError(f"{where}special tokens missing from the vocabulary: {', '.join(missing)}")
        self.basic = BasicTokenizer(do_lower_case, strip_accents, never_split=tuple(matched_whole))
        # Added tokens are found before WordPiece runs, never as pieces of a word; [UNK] is WordPiece's answer for a
        # word it cannot split, wherever the vocabulary puts it (some put the special tokens last)
        added_only_tokens = added_only(self.ids_to_tokens, {*matched_whole, *self.added_tokens}) - {unk_token}
        pieces = {t: i for t, i in self.vocab.items() if t not in added_only_tokens} if added_only_tokens else self.vocab
        self.wordpiece = WordPiece(pieces, unk_token, max_input_chars_per_word)
        self.all_special_ids = [self.vocab[t] for t in self.all_special_tokens]
        self._special_ids = set(self.all_special_ids)
        self._decode_skips = {self.vocab[t] for t in matched_whole}
        self._cls_sep = self.vocab[cls_token], self.vocab[sep_token]
        added = AddedTokens(self.added_tokens, self.vocab, matched_whole, do_lower_case, self.basic.strip_accents)
        self.ids_to_tokens.update(added.tokens_by_id)
        self._chunk_encoder = ChunkEncoder(self.basic, self.wordpiece, {t: self.vocab[t] for t in matched_whole}, added)
        self._workers: WorkerPool | None = None  # started by the first call with `num_proc`

    def __setattr__(self, name: str, value) -> None:
        # The normaliser, the splitter and the worker processes are built from these: a change after that
        # would reach only some of them (pickled copies would see it, this one would not).
        if name in FIXED_SETTINGS and "_chunk_encoder" in self.__dict__:
            raise InputError(f"BertTokenizer.{name} is fixed once the tokenizer is built; "
                             f"BertTokenizer.from_pretrained(path, {name}=...) builds one with another")
        if name in RIGHT_ONLY and value != "right":
            raise InputError(f"BertTokenizer.{name}={value!r}: bertforge pads and truncates on the right only, "
                             f"where BERT's checkpoints were trained to find them")
        super().__setattr__(name, value)

    def __getstate__(self) -> dict:
        """The settings and vocabulary, not the caches or worker processes: what a worker process
        (or `datasets.Dataset.map`) receives."""
        return {"vocab": self.vocab, "do_lower_case": self.do_lower_case, "strip_accents": self.basic.strip_accents,
                **{key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS},
                "additional_special_tokens": self.additional_special_tokens,
                "model_max_length": self.model_max_length,
                "max_input_chars_per_word": self.wordpiece.max_input_chars_per_word,
                "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, "added_tokens": self.added_tokens,
                "special_added_tokens": self.special_added_tokens}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # --- loading and saving -------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **overrides) -> "BertTokenizer":
        """Load from a model directory (`vocab.txt` + optional `tokenizer_config.json`, or transformers 5's
        `tokenizer.json`) or a `vocab.txt` file. With no path, the default model's tokenizer."""
        if path is None:
            path = default_model_path()
        vocab, settings, config_file = read_folder(model_path(path), cls.vocab_file_name, cls.config_file_name)
        sides = {key: overrides.pop(key) for key in RIGHT_ONLY if key in overrides}
        overrides = {key: value for key, value in overrides.items() if key not in HUB_KEYWORDS}
        check_settings(settings, config_file)
        check_settings(overrides, None)  # the caller's keywords, not the file, are at fault
        settings.update(overrides)
        tokenizer = cls(vocab, **settings)
        check_fits_the_model(len(tokenizer), config_file.parent)
        for key, value in sides.items():
            setattr(tokenizer, key, value)
        return tokenizer

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """vocab.txt and tokenizer_config.json, which transformers 4 reads, and tokenizer.json for transformers 5;
        the files' paths."""
        return write_folder(self, directory)

    def save_vocabulary(self, save_directory: str | Path, filename_prefix: str | None = None) -> tuple[str]:
        """vocab.txt alone (`PREFIX-vocab.txt` with a prefix) in an existing directory, as transformers 4 wrote it."""
        if not Path(save_directory).is_dir():
            raise InputError(f"save_vocabulary: {save_directory} is not a directory")
        path = Path(save_directory) / f"{filename_prefix + '-' if filename_prefix else ''}{self.vocab_file_name}"
        write_vocab(self, path)
        return (str(path),)

    # --- vocabulary ----------------------------------------------------------------------

    @property
    def all_special_tokens(self) -> list[str]:
        return [*(getattr(self, key) for key in SPECIAL_TOKEN_KEYS), *self.additional_special_tokens]

    @property
    def vocab_size(self) -> int:
        """The model's own pieces, as in transformers; `len(tokenizer)` counts added tokens too."""
        return len(self.wordpiece.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    max_len_single_sentence = property(lambda self: self.model_max_length - 2)
    max_len_sentences_pair = property(lambda self: self.model_max_length - 3)

    def pad(self, encoded_inputs, padding=True, max_length: int | None = None, pad_to_multiple_of: int | None = None,
            return_tensors: str | None = None) -> BatchEncoding:
        """Pad features made earlier (`pad_features`), as transformers' DataCollatorWithPadding asks; one
        feature dict gives one padded dict."""
        one = isinstance(encoded_inputs, dict) and is_flat(encoded_inputs.get("input_ids"))
        data = pad_features([encoded_inputs] if one else encoded_inputs, self.vocab[self.pad_token],
                            self.model_max_length, padding, max_length, pad_to_multiple_of)
        if one:
            data = {key: rows[0] for key, rows in data.items()}
        return BatchEncoding(to_tensors(data, return_tensors) if return_tensors is not None else data, [], not one,
                             self.ids_to_tokens, n_sequences=None)

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False):
        """1 where a special token is, or where encoding the ids would add one (transformers' MLM collator asks)."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise InputError("get_special_tokens_mask: ids that hold their special tokens are one list (the pair "
                                 "encoded with them), not two")
            return [int(i in self._special_ids) for i in as_int_list(token_ids_0)]
        mask = [1] + [0] * len(token_ids_0) + [1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def special_tokens_map(self) -> dict:
        """The named special tokens, as transformers 5 gives them (the extra ones are `extra_special_tokens`)."""
        return {key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS}

    extra_special_tokens = property(lambda self: list(self.additional_special_tokens))  # transformers 5's name

    def __getattr__(self, name):
        # cls_token_id, sep_token_id, pad_token_id, mask_token_id, unk_token_id
        if name.endswith("_token_id") and name[:-3] in SPECIAL_TOKEN_KEYS:
            return self.vocab[getattr(self, name[:-3])]
        raise AttributeError(name)

    def convert_tokens_to_ids(self, tokens: str | list[str]):
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.wordpiece.unk_id)
        return [self.vocab.get(t, self.wordpiece.unk_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False):
        if is_one_id(ids):
            return self._id_to_token(int(ids))
        return [self._id_to_token(i) for i in as_int_list(ids) if not (skip_special_tokens and i in self._special_ids)]

    def _id_to_token(self, token_id: int) -> str:
        try:
            return self.ids_to_tokens[token_id]
        except KeyError:
            raise InputError(f"token id {token_id} is outside the vocabulary (0..{len(self.vocab) - 1})") from None

    # --- tokenising -------------------------------------------------------------------------

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """`self(texts, add_special_tokens=False)["input_ids"]` without building encodings: the
        pre-training data path, where ids are all that is kept."""
        with _collector_paused():
            return self._chunk_encoder.ids(texts)

    def _ids(self, texts: list[str], num_proc: int | None) -> Iterable[list[int]]:
        """The ids of each text: from worker processes if `num_proc` asks for them and the batch is
        large enough to repay them (see `processes`), else from this one."""
        if num_proc is not None and use_processes(len(texts), num_proc):
            if self._workers is None or self._workers.processes != num_proc:
                if self._workers is not None:
                    self._workers.close()
                self._workers = WorkerPool(self, num_proc)
            return self._workers.token_ids(texts)
        return self._chunk_encoder.ids(texts)

    def _encode_texts(self, texts: list, num_proc: int | None) -> list[Encoding]:
        """One `Encoding` per text; offsets and word ids are computed if they are read."""
        extras = self._text_extras
        return [Encoding(ids, partial(extras, text)) for ids, text in zip(self._ids(texts, num_proc), texts)]

    def _text_extras(self, text: str) -> tuple:
        offsets, word_ids = self._chunk_encoder.offsets_and_word_ids(text)
        return offsets, word_ids, [], []

    def _encode_split_words(self, batch: list, num_proc: int | None) -> list[Encoding]:
        """Pre-split inputs: word ids are indices into each list of words, offsets are within
        each word."""
        for words in batch:
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
                raise InputError("with is_split_into_words=True each input must be a list of strings")
        word_encodings = iter(self._encode_texts([w for words in batch for w in words], num_proc))
        return [self._join_words([next(word_encodings) for _ in words]) for words in batch]

    @staticmethod
    def _join_words(encodings: list[Encoding]) -> Encoding:
        def extras():
            offsets = list(chain.from_iterable(e.offsets for e in encodings))
            word_ids = [index for index, e in enumerate(encodings) for _ in e.ids]
            return offsets, word_ids, [], []
        return Encoding(list(chain.from_iterable(e.ids for e in encodings)), extras)

    def tokenize(self, text: str) -> list[str]:
        return [self.ids_to_tokens[i] for i in self.token_ids([text])[0]]

    def encode(self, text: str, text_pair: str | None = None, **kwargs) -> list[int]:
        return self(text, text_pair, **kwargs)["input_ids"]

    # --- the encoding API ----------------------------------------------------------------

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, padding=False,
                 truncation=None, max_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, return_overflowing_tokens: bool = False,
                 pad_to_multiple_of: int | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_offsets_mapping: bool = False,
                 return_special_tokens_mask: bool = False, return_length: bool = False,
                 return_tensors: str | None = None, num_proc: int | None = None) -> BatchEncoding:
        """Encode a text, a pair, or a batch of either, as transformers' tokenizers do. With
        `num_proc` (the name `datasets.Dataset.map` gives it), a large batch is tokenized in that
        many worker processes (see `bertforge.tokenization.processes`), with the same result."""
        batched = is_batch(text, is_split_into_words)
        texts = list(text) if batched else [text]
        if batched and text_pair is None and not is_split_into_words and texts and \
                all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):  # a batch of (text, pair)
            texts, text_pair = [t[0] for t in texts], [t[1] for t in texts]
        if text_pair is None or (not batched and not text_pair):  # an empty pair is no pair, as in transformers
            pairs = []
        else:
            if is_batch(text_pair, is_split_into_words) != batched:
                raise InputError("text and text_pair must both be single inputs or both be batches")
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(texts):
                raise InputError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # as in transformers: max_length alone means "cut to this"
        padding = padding_strategy(padding)
        truncation = truncation_strategy(truncation)
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise InputError(f"max_length must be a positive integer, got {max_length!r}")
        if stride < 0:
            raise InputError(f"stride must be >= 0, got {stride}")
        if return_tensors not in (None, "pt", "np"):
            raise InputError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        check_num_proc(num_proc)
        check_pad_to_multiple_of(pad_to_multiple_of, padding, truncation, max_length)

        with _collector_paused():
            rows, sample_mapping = self._rows(texts, pairs, is_split_into_words, add_special_tokens, truncation,
                                              max_length, stride, return_overflowing_tokens, num_proc)
            target = None
            if padding == "longest":
                target = max(len(r) for r in rows)
            elif padding == "max_length":
                target = max_length
            data = pad_and_collate(rows, padded_length(target, pad_to_multiple_of), self.vocab[self.pad_token],
                                   return_offsets_mapping, return_special_tokens_mask)
        for key, wanted in (("token_type_ids", return_token_type_ids), ("attention_mask", return_attention_mask)):
            if wanted is False:
                del data[key]
        if return_length:  # a list even for one text, as transformers' fast tokenizers give it
            data["length"] = [len(ids) for ids in data["input_ids"]]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_mapping
        # Tensors always carry a batch dimension, as in the reference.
        batched_output = batched or return_overflowing_tokens or return_tensors is not None
        if not batched_output:
            data = {k: v if k == "length" else v[0] for k, v in data.items()}
        if return_tensors is not None:
            data = to_tensors(data, return_tensors)
        return BatchEncoding(data, rows, batched_output, self.ids_to_tokens, n_sequences=2 if pairs else 1)

    def _rows(self, texts: list, pairs: list, is_split_into_words: bool, add_special_tokens: bool,
              truncation: str | None, max_length: int | None, stride: int, return_overflowing_tokens: bool,
              num_proc: int | None) -> tuple[list[Encoding], list[int]]:
        """The rows to collate (several per sample with overflowing windows), and the sample of each."""
        if not pairs and not truncation and not is_split_into_words:
            return self._single_rows(texts, add_special_tokens, num_proc), list(range(len(texts)))
        # Texts and pairs in one batch, so that worker processes are called once.
        encode = self._encode_split_words if is_split_into_words else self._encode_texts
        encoded = encode(texts + pairs, num_proc)
        firsts, seconds = encoded[:len(texts)], encoded[len(texts):] or [None] * len(texts)
        if not truncation:
            rows = [self._with_special_tokens(a, b, add_special_tokens) for a, b in zip(firsts, seconds)]
            return rows, list(range(len(rows)))
        rows, sample_mapping = [], []
        for sample, (a, b) in enumerate(zip(firsts, seconds)):
            n_special = (3 if b is not None else 2) if add_special_tokens else 0
            windows = truncate(a, b, max_length - n_special, truncation, stride, return_overflowing_tokens)
            for wa, wb in windows if return_overflowing_tokens else windows[:1]:
                rows.append(self._with_special_tokens(wa, wb, add_special_tokens))
                sample_mapping.append(sample)
        return rows, sample_mapping

    def _single_rows(self, texts: list, add_special_tokens: bool, num_proc: int | None) -> list[Encoding]:
        """One row per text (the common call): the rows `_with_special_tokens` would give, built
        straight from the ids: an `Encoding` per text as well took a fifth of the call's time."""
        extras = self._single_row_extras
        if not add_special_tokens:
            return [Encoding(ids, partial(extras, text, False), [0] * len(ids))
                    for ids, text in zip(self._ids(texts, num_proc), texts)]
        cls_id, sep_id = self._cls_sep
        return [Encoding([cls_id, *ids, sep_id], partial(extras, text, True), [0] * (len(ids) + 2))
                for ids, text in zip(self._ids(texts, num_proc), texts)]

    def _single_row_extras(self, text: str, add_special_tokens: bool) -> tuple:
        return joined_extras(*self._chunk_encoder.offsets_and_word_ids(text), None, None, add_special_tokens)

    def _with_special_tokens(self, a: Encoding, b: Encoding | None, add_special_tokens: bool) -> Encoding:
        """[CLS] A [SEP] (B [SEP]): ids and type ids now (this runs once per row), the rest if read."""
        cls_id, sep_id = self._cls_sep
        ids = [cls_id, *a.ids, sep_id] if add_special_tokens else list(a.ids)
        type_ids = [0] * len(ids)
        if b is not None:
            tail = [sep_id] if add_special_tokens else []
            ids += b.ids + tail
            type_ids += [1] * (len(b.ids) + len(tail))
        return Encoding(ids, partial(encodings_extras, a, b, add_special_tokens), type_ids)


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector paused: a call allocates a few lists per text, none in a
    cycle, and each of the collections those allocations trigger walks every object the program
    holds (the chunk cache, a model's tensors), which took more time than the tokenizing itself."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
