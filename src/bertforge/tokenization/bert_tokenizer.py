"""`BertTokenizer`: text → `input_ids`, `token_type_ids`, `attention_mask` (and extras).

The pipeline per text: split into runs (special tokens, punctuation/CJK characters, other
non-space runs) with one compiled regex → normalise each run and cut it into WordPiece pieces,
cached per run so a corpus pays for each distinct word once → add `[CLS]`/`[SEP]`, truncate,
pad. The call signature and outputs are those of the Hugging Face tokenizers users know.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path

from bertforge.errors import CheckpointError, InputError
from bertforge.io.atomic import write_text
from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.encoding import BatchEncoding, Encoding, is_batch, to_tensors
from bertforge.tokenization.tokenizer_json import FILE_NAME as TOKENIZER_JSON
from bertforge.tokenization.tokenizer_json import read_tokenizer_json, write_tokenizer_json
from bertforge.tokenization.truncation import pad_and_collate, padding_strategy, truncate, truncation_strategy
from bertforge.tokenization.wordpiece import WordPiece, load_vocab

SPECIAL_TOKEN_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
RUN_CACHE_LIMIT = 1_000_000
# Characters Python's str.split() treats as whitespace but BERT treats as control characters
# (removed, so they glue their neighbours together): text holding one takes the regex path.
_SPLIT_UNSAFE = re.compile("[\x0b\x0c\x1c-\x1f\x85]")


class BertTokenizer:
    """WordPiece tokenizer with BERT's normalisation and special tokens."""

    vocab_file_name = "vocab.txt"
    config_file_name = "tokenizer_config.json"

    def __init__(self, vocab: dict[str, int] | str | Path, do_lower_case: bool = True,
                 strip_accents: bool | None = None, unk_token: str = "[UNK]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", cls_token: str = "[CLS]", mask_token: str = "[MASK]",
                 additional_special_tokens: tuple[str, ...] | list[str] = (), model_max_length: int = 512,
                 max_input_chars_per_word: int = 100):
        self.vocab = dict(vocab) if isinstance(vocab, dict) else load_vocab(vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        self.additional_special_tokens = list(additional_special_tokens)
        self.model_max_length = model_max_length
        missing = [t for t in self.all_special_tokens if t not in self.vocab]
        if missing:
            raise CheckpointError(f"special tokens missing from the vocabulary: {', '.join(missing)}")
        self.basic = BasicTokenizer(do_lower_case, strip_accents, never_split=tuple(self.all_special_tokens))
        self.wordpiece = WordPiece(self.vocab, unk_token, max_input_chars_per_word)
        self.all_special_ids = [self.vocab[t] for t in self.all_special_tokens]
        self._special_ids = set(self.all_special_ids)
        self._run_cache: dict[str, tuple] = {}
        self._ids_cache: dict[str, tuple[int, ...]] = {}  # for `token_ids`
        self._run_ids_cache: dict[str, list[int]] = {}

    # --- loading and saving -------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **overrides) -> "BertTokenizer":
        """Load from a model directory (`vocab.txt` + optional `tokenizer_config.json`) or a
        `vocab.txt` file. With no path, the default model's tokenizer."""
        if path is None:
            from bertforge.paths import default_model_path
            path = default_model_path()
        path = Path(path)
        if path.is_dir():
            vocab_file, config_file = path / cls.vocab_file_name, path / cls.config_file_name
        elif path.exists():
            vocab_file, config_file = path, path.parent / cls.config_file_name
        else:
            raise CheckpointError(f"tokenizer not found: {path} is neither a directory nor a vocab.txt file")
        vocab, settings = vocab_file, {}
        if not vocab_file.exists():  # transformers 5 saves tokenizer.json and no vocab.txt
            if not (vocab_file.parent / TOKENIZER_JSON).exists():
                raise CheckpointError(f"{path} has no {cls.vocab_file_name} or {TOKENIZER_JSON}")
            vocab, settings = read_tokenizer_json(vocab_file.parent / TOKENIZER_JSON)
        if config_file.exists():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
            for key in ("do_lower_case", "strip_accents", "model_max_length", *SPECIAL_TOKEN_KEYS):
                if config.get(key) is not None:
                    settings[key] = config[key]
            if isinstance(config.get("additional_special_tokens"), list):
                settings["additional_special_tokens"] = config["additional_special_tokens"]
            if settings.get("model_max_length", 0) > 1_000_000:  # "unlimited" in transformers' files
                del settings["model_max_length"]
        settings.update(overrides)
        _check_types(settings, config_file)
        return cls(vocab, **settings)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        write_text(directory / self.vocab_file_name, "".join(t + "\n" for t in tokens))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.basic.strip_accents,
            "model_max_length": self.model_max_length,
            **{key: getattr(self, key) for key in SPECIAL_TOKEN_KEYS},
        }
        if self.additional_special_tokens:
            config["additional_special_tokens"] = self.additional_special_tokens
        write_text(directory / self.config_file_name, json.dumps(config, indent=2) + "\n")
        write_tokenizer_json(self, directory)  # what transformers 5 and `tokenizers` read first

    # --- vocabulary ----------------------------------------------------------------------

    @property
    def all_special_tokens(self) -> list[str]:
        return [self.cls_token, self.sep_token, self.pad_token, self.mask_token, self.unk_token,
                *self.additional_special_tokens]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

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
        if isinstance(ids, int):
            return self._id_to_token(ids)
        return [self._id_to_token(i) for i in _as_int_list(ids) if not (skip_special_tokens and i in self._special_ids)]

    def _id_to_token(self, token_id: int) -> str:
        try:
            return self.ids_to_tokens[token_id]
        except KeyError:
            raise InputError(f"token id {token_id} is outside the vocabulary (0..{len(self.vocab) - 1})") from None

    # --- tokenising one text ---------------------------------------------------------------

    def _encode_run(self, run: str) -> tuple:
        """One run of non-space characters (no special token inside) → (ids, spans relative to
        the run, word index of each piece within the run, number of words in the run)."""
        ids, spans, words = [], [], []
        normalized = self.basic.normalize(run)
        for word_index, (word, alignment) in enumerate(normalized):
            for piece_id, start, end in self.wordpiece.split(word):
                if alignment is not None:
                    start, end = alignment[start], alignment[end - 1] + 1
                ids.append(piece_id)
                spans.append((start, end))
                words.append(word_index)
        return ids, spans, words, len(normalized)

    def _encode_chunk(self, chunk: str) -> tuple:
        """Any text → the same four-part entry as `_encode_run`, for the cache."""
        ids, spans, words, n_words = [], [], [], 0
        for match in self.basic.finditer(chunk):
            start = match.start()
            if match.lastgroup == "special":
                ids.append(self.vocab[match.group()])
                spans.append((start, match.end()))
                words.append(n_words)
                n_words += 1
                continue
            run_ids, run_spans, run_words, run_n = self._encode_run(match.group())
            ids += run_ids
            spans += [(start + s, start + e) for s, e in run_spans]
            words += [n_words + w for w in run_words]
            n_words += run_n
        return tuple(ids), tuple(spans), tuple(words), n_words

    def _chunks(self, text: str):
        """(start, chunk) pairs covering every token of `text`. Where Python's whitespace is
        BERT's whitespace, `str.split` (C speed) gives whole space-separated chunks; otherwise
        the regex gives runs and special tokens."""
        if _SPLIT_UNSAFE.search(text):
            for match in self.basic.finditer(text):
                yield match.start(), match.group()
            return
        position = 0
        for chunk in text.split():
            position = text.find(chunk, position)
            yield position, chunk
            position += len(chunk)

    def _encode_text(self, text: str) -> Encoding:
        if not isinstance(text, str):
            raise InputError(f"expected a string to tokenize, got {type(text).__name__}")
        # Hot path: one cache look-up per chunk of text; everything per piece is list extension.
        cache = self._run_cache
        ids, offsets, word_ids = [], [], []
        word = 0
        for start, chunk in self._chunks(text):
            entry = cache.get(chunk)
            if entry is None:
                if len(cache) >= RUN_CACHE_LIMIT:
                    cache.clear()
                entry = cache[chunk] = self._encode_chunk(chunk)
            chunk_ids, spans, words, n_words = entry
            ids += chunk_ids
            if len(chunk_ids) == 1:
                offsets.append((start + spans[0][0], start + spans[0][1]))
                word_ids.append(word)
            else:
                offsets += [(start + s, start + e) for s, e in spans]
                word_ids += [word + w for w in words]
            word += n_words
        return Encoding(ids, offsets, word_ids)

    def _encode_words(self, words: list[str]) -> Encoding:
        """Pre-split input: word ids are indices into `words`, offsets are within each word."""
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
            raise InputError("with is_split_into_words=True each input must be a list of strings")
        ids, offsets, word_ids = [], [], []
        for index, word in enumerate(words):
            encoded = self._encode_text(word)
            ids += encoded.ids
            offsets += encoded.offsets
            word_ids += [index] * len(encoded)
        return Encoding(ids, offsets, word_ids)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """`self(texts, add_special_tokens=False)["input_ids"]` without the offsets and word ids
        the call also builds: the pre-training data path, where ids are all that is kept. Its own
        caches hold ids only, per space-separated chunk and per run within one."""
        cache = self._ids_cache
        result = []
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"expected a string to tokenize, got {type(text).__name__}")
            # As in `_chunks`, without the positions nobody asked for.
            chunks = [m.group() for m in self.basic.finditer(text)] if _SPLIT_UNSAFE.search(text) else text.split()
            # Look-ups and joining in C; Python only for the chunks never seen before.
            entries = list(map(cache.get, chunks))
            if None in entries:
                if len(cache) >= RUN_CACHE_LIMIT:
                    cache.clear()
                for index, chunk in enumerate(chunks):
                    if entries[index] is None:
                        entries[index] = cache[chunk] = self._chunk_ids(chunk)
            result.append(list(chain.from_iterable(entries)))
        return result

    def _chunk_ids(self, chunk: str) -> tuple[int, ...]:
        if chunk.isascii() and chunk.isalnum():  # a plain word: one run, nothing to normalise but case
            word = chunk.lower() if self.do_lower_case else chunk
            piece = self.vocab.get(word)
            if piece is not None and len(word) <= self.wordpiece.max_input_chars_per_word:
                return (piece,)
        runs = self._run_ids_cache
        ids: list[int] = []
        for match in self.basic.finditer(chunk):
            run = match.group()
            if match.lastgroup == "special":
                ids.append(self.vocab[run])
                continue
            run_ids = runs.get(run)
            if run_ids is None:
                if len(runs) >= RUN_CACHE_LIMIT:
                    runs.clear()
                run_ids = runs[run] = [piece[0] for word, _ in self.basic.normalize(run)
                                       for piece in self.wordpiece.split(word)]
            ids += run_ids
        return tuple(ids)

    def tokenize(self, text: str) -> list[str]:
        return [self.ids_to_tokens[i] for i in self._encode_text(text).ids]

    def encode(self, text: str, text_pair: str | None = None, **kwargs) -> list[int]:
        return self(text, text_pair, **kwargs)["input_ids"]

    # --- the encoding API ----------------------------------------------------------------

    def __call__(self, text, text_pair=None, *, add_special_tokens: bool = True, padding=False,
                 truncation=False, max_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, return_overflowing_tokens: bool = False,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False,
                 return_tensors: str | None = None) -> BatchEncoding:
        batched = is_batch(text, is_split_into_words)
        texts = list(text) if batched else [text]
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            if is_batch(text_pair, is_split_into_words) != batched:
                raise InputError("text and text_pair must both be single inputs or both be batches")
            pairs = list(text_pair) if batched else [text_pair]
            if len(pairs) != len(texts):
                raise InputError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
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

        encode = self._encode_words if is_split_into_words else self._encode_text
        rows: list[Encoding] = []
        sample_mapping: list[int] = []
        for sample, (first, second) in enumerate(zip(texts, pairs)):
            a = encode(first)
            b = encode(second) if second is not None else None
            n_special = (3 if b is not None else 2) if add_special_tokens else 0
            if truncation and max_length is not None:
                windows = truncate(a, b, max_length - n_special, truncation, stride,
                                         return_overflowing_tokens)
            else:
                windows = [(a, b)]
            if not return_overflowing_tokens:
                windows = windows[:1]
            for wa, wb in windows:
                rows.append(self._with_special_tokens(wa, wb, add_special_tokens))
                sample_mapping.append(sample)

        target = None
        if padding == "longest":
            target = max(len(r) for r in rows)
        elif padding == "max_length":
            target = max_length
        data = pad_and_collate(rows, target, self.vocab[self.pad_token], return_offsets_mapping,
                               return_special_tokens_mask)
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_mapping
        # Tensors always carry a batch dimension, as in the reference.
        batched_output = batched or return_overflowing_tokens or return_tensors is not None
        if not batched_output:
            data = {k: v[0] for k, v in data.items()}
        if return_tensors is not None:
            data = to_tensors(data, return_tensors)
        return BatchEncoding(data, rows, batched_output)

    def _with_special_tokens(self, a: Encoding, b: Encoding | None, add_special_tokens: bool) -> Encoding:
        """[CLS] A [SEP] (B [SEP]), built with whole-list operations (this runs once per row)."""
        n_a = len(a)
        cls_id, sep_id = self.vocab[self.cls_token], self.vocab[self.sep_token]
        if add_special_tokens:
            ids = [cls_id, *a.ids, sep_id]
            offsets = [(0, 0), *a.offsets, (0, 0)]
            word_ids = [None, *a.word_ids, None]
            type_ids = [0] * (n_a + 2)
            special = [1, *([0] * n_a), 1]
            sequence = [None, *([0] * n_a), None]
        else:
            ids, offsets, word_ids = list(a.ids), list(a.offsets), list(a.word_ids)
            type_ids, special, sequence = [0] * n_a, [0] * n_a, [0] * n_a
        if b is not None:
            n_b = len(b)
            tail = 1 if add_special_tokens else 0
            ids += b.ids + [sep_id] * tail
            offsets += b.offsets + [(0, 0)] * tail
            word_ids += b.word_ids + [None] * tail
            type_ids += [1] * (n_b + tail)
            special += [0] * n_b + [1] * tail
            sequence += [1] * n_b + [None] * tail
        return Encoding(ids, offsets, word_ids, type_ids, special, sequence)

    # --- decoding ------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Join pieces back into text: `##` pieces glue to the previous one (a leading `##`
        piece is kept as it is, like the reference decoder); no space is left before `.`,
        `,`, `?` and `!`."""
        text = ""
        for i, token in enumerate(self.convert_ids_to_tokens(ids, skip_special_tokens)):
            if i > 0 and token.startswith(self.wordpiece.prefix):
                text += token[len(self.wordpiece.prefix):]
                continue
            token = token if i == 0 else " " + token
            text += token.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
        return text

    def batch_decode(self, batch, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]


def _as_int_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def _check_types(settings: dict, source: Path) -> None:
    expected = {"do_lower_case": bool, "strip_accents": (bool, type(None)), "model_max_length": int,
                **{key: str for key in SPECIAL_TOKEN_KEYS}}
    for key, kind in expected.items():
        if key in settings and not isinstance(settings[key], kind):
            raise CheckpointError(f"{source}: {key} has the wrong type ({type(settings[key]).__name__})")
