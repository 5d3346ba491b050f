"""BPE encoders: character-level BPE over BERT's words, and byte-level BPE over UTF-8 bytes,
with the `vocab.json` + `merges.txt` files the Hugging Face ecosystem uses.

Encoding a word starts from its symbols (characters, or byte stand-ins) and applies the learned
merges in rank order: repeatedly merge the adjacent pair with the lowest rank, every occurrence
of it from left to right, until no adjacent pair has a merge. With the SPEC §1 vocabulary
(merges `s t`, `m e`, `me n`) `mean` → `me a n`.

The files load in `tokenizers` and give the same ids:

* `BPE` (words of the BERT basic tokenizer; a character not in the vocabulary becomes one
  `[UNK]` each)::

      tok = Tokenizer(models.BPE.from_file("vocab.json", "merges.txt", unk_token="[UNK]"))
      tok.normalizer = normalizers.BertNormalizer(lowercase=..., strip_accents=...)
      tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

* `ByteLevelBPE` (GPT-2 pre-tokenization, no prefix space; see `byte_level`)::

      tok = ByteLevelBPETokenizer("vocab.json", "merges.txt")
      # if trained with lower-casing or accent stripping, also:
      tok.normalizer = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                                  strip_accents=..., lowercase=...)

Special tokens written in the text (`[MASK]`) are kept whole and get their own id, as
`tokenizers` does once they are registered with `add_special_tokens`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bertforge.errors import CheckpointError
from bertforge.io.atomic import write_text
from bertforge.io.settings_files import read_json_object, read_settings_text
from bertforge.tokenization import byte_level
from bertforge.tokenization.bert_words import BertWords

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"
MERGES_HEADER = "#version: 0.2"
CHUNK_CACHE_LIMIT = 1_000_000


class _MergeEncoder:
    """What both encoders share: the merge table, per-chunk caching, ids ↔ tokens, file IO.
    Subclasses say how text is cut into chunks, a chunk into words, and a word into its
    initial symbol ids."""

    tokenizer_class = ""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *, lowercase: bool,
                 strip_accents: bool | None, special_tokens: tuple[str, ...] | list[str] = ()):
        self.vocab = dict(vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.merges = [tuple(m) for m in merges]
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.special_tokens = list(special_tokens)
        self._special_set = frozenset(self.special_tokens)
        missing = [t for t in self.special_tokens if t not in self.vocab]
        if missing:
            raise CheckpointError(f"special tokens missing from the vocabulary: {', '.join(missing)}")
        # (left id, right id) → (rank, id of the merged token)
        self._merge_table: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            for token in (a, b, a + b):
                if token not in self.vocab:
                    raise CheckpointError(f"merge {rank + 1} ({a} {b}): {token!r} is not in the vocabulary")
            self._merge_table.setdefault((self.vocab[a], self.vocab[b]), (rank, self.vocab[a + b]))
        self._cache: dict[str, list[int]] = {}  # chunk → ids

    # --- encoding ------------------------------------------------------------------------

    def _chunks(self, text: str) -> list[str]:
        """`text` cut into pieces whose words do not depend on their neighbours."""
        raise NotImplementedError

    def _words(self, chunk: str) -> list[str]:
        raise NotImplementedError

    def _symbols(self, word: str) -> list[int]:
        raise NotImplementedError

    def _apply_merges(self, ids: list[int]) -> list[int]:
        table = self._merge_table
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:]):
                merge = table.get(pair)
                if merge is not None and (best is None or merge[0] < best[0]):
                    best, best_pair = merge, pair
            if best is None:
                return ids
            a, b = best_pair
            merged_id = best[1]
            out, i = [], 0
            while i < len(ids):
                if ids[i] == a and i + 1 < len(ids) and ids[i + 1] == b:
                    out.append(merged_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def encode_word(self, word: str) -> list[int]:
        """The ids of one pre-tokenized word (a special token maps to its own id)."""
        if word in self._special_set:
            return [self.vocab[word]]
        return self._apply_merges(self._symbols(word))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added). Each distinct chunk is encoded once
        and cached: text repeats its chunks, so most cost a dictionary look-up."""
        ids: list[int] = []
        cache = self._cache
        for chunk in self._chunks(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = [i for word in self._words(chunk) for i in self.encode_word(word)]
                if len(cache) >= CHUNK_CACHE_LIMIT:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def tokenize(self, text: str) -> list[str]:
        return self.convert_ids_to_tokens(self.encode(text))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.ids_to_tokens[i] for i in ids]

    def __len__(self) -> int:
        return len(self.vocab)

    # --- files ---------------------------------------------------------------------------

    def _config(self) -> dict:
        return {"tokenizer_class": self.tokenizer_class, "do_lower_case": self.lowercase,
                "strip_accents": self.strip_accents, "special_tokens": self.special_tokens}

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write `vocab.json`, `merges.txt` and `tokenizer_config.json`; return their paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / VOCAB_FILE, directory / MERGES_FILE, directory / CONFIG_FILE]
        write_text(paths[0], json.dumps(self.vocab, ensure_ascii=False, indent=0) + "\n")
        write_text(paths[1], MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        write_text(paths[2], json.dumps(self._config(), ensure_ascii=False, indent=2) + "\n")
        return paths

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides):
        """Load a directory written by `save_pretrained` (or any `vocab.json` + `merges.txt`
        pair; `tokenizer_config.json` is optional and `overrides` win over it)."""
        directory = Path(directory)
        vocab = _read_vocab(directory / VOCAB_FILE)
        merges = _read_merges(directory / MERGES_FILE)
        settings = {}
        config_file = directory / CONFIG_FILE
        if config_file.exists():
            config = read_json_object(config_file, CheckpointError)
            settings = {key: config[key] for key in cls._config_keys() if key in config}
        settings.update(overrides)
        try:
            return cls(vocab, merges, **cls._settings_to_arguments(settings))
        except CheckpointError as e:
            raise CheckpointError(f"{directory}: {e}") from None

    @classmethod
    def _config_keys(cls) -> tuple[str, ...]:
        return ("do_lower_case", "strip_accents", "special_tokens")

    @staticmethod
    def _settings_to_arguments(settings: dict) -> dict:
        renamed = {"do_lower_case": "lowercase"}
        return {renamed.get(key, key): value for key, value in settings.items()}


def is_merges_folder(path: Path) -> bool:
    """A folder `train-vocab --algorithm bpe|byte-bpe` wrote (vocab.json + merges.txt)."""
    return (path / MERGES_FILE).is_file() and (path / VOCAB_FILE).is_file()


def load_merges_tokenizer(directory: Path) -> "BPE | ByteLevelBPE":
    """The BPE or byte-level BPE tokenizer of such a folder, as its tokenizer_config.json names it."""
    config_file = directory / CONFIG_FILE
    name = read_json_object(config_file, CheckpointError).get("tokenizer_class", "BPE") if config_file.exists() else "BPE"
    classes = {cls.tokenizer_class: cls for cls in (BPE, ByteLevelBPE)}
    if name not in classes:
        raise CheckpointError(f"{config_file}: tokenizer_class {name!r} is not one of {', '.join(classes)}")
    return classes[name].from_pretrained(directory)


class BPE(_MergeEncoder):
    """Character-level BPE over the words of BERT's basic tokenizer (the same normalisation:
    lower-casing, accent stripping, punctuation and CJK characters split off)."""

    tokenizer_class = "BPE"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *, unk_token: str = "[UNK]",
                 lowercase: bool = True, strip_accents: bool | None = None,
                 special_tokens: tuple[str, ...] | list[str] = ()):
        if unk_token not in vocab:
            raise CheckpointError(f"the unknown token {unk_token!r} is not in the vocabulary")
        super().__init__(vocab, merges, lowercase=lowercase, strip_accents=strip_accents,
                         special_tokens=special_tokens)
        self.unk_token = unk_token
        self._unk_id = self.vocab[unk_token]
        self._splitter = BertWords(lowercase, strip_accents, tuple(self.special_tokens))

    def _chunks(self, text: str) -> list[str]:
        return self._splitter.chunks(text)

    def _words(self, chunk: str) -> list[str]:
        return self._splitter.words(chunk)

    def _symbols(self, word: str) -> list[int]:
        # A character outside the vocabulary is one [UNK] (not fused with its neighbours),
        # and no merge crosses it: the `tokenizers` BPE model's behaviour.
        return [self.vocab.get(char, self._unk_id) for char in word]

    def _config(self) -> dict:
        return {**super()._config(), "strip_accents": self._splitter.basic.strip_accents, "unk_token": self.unk_token}

    @classmethod
    def _config_keys(cls) -> tuple[str, ...]:
        return (*super()._config_keys(), "unk_token")


class ByteLevelBPE(_MergeEncoder):
    """Byte-level BPE: GPT-2 pre-tokenization, symbols are UTF-8 bytes, so nothing is unknown
    and `decode(encode(text)) == text` for any string (when not lower-casing or stripping
    accents, which change the text before it is encoded)."""

    tokenizer_class = "ByteLevelBPE"

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *, lowercase: bool = False,
                 strip_accents: bool = False, special_tokens: tuple[str, ...] | list[str] = ()):
        super().__init__(vocab, merges, lowercase=lowercase, strip_accents=strip_accents,
                         special_tokens=special_tokens)
        missing = [char for char in byte_level.bytes_to_unicode().values() if char not in self.vocab]
        if missing:
            raise CheckpointError(f"{len(missing)} of the 256 byte symbols are missing from the vocabulary "
                                  f"(first: {missing[0]!r}): not a byte-level BPE vocabulary")
        self._special_split = None
        if self.special_tokens:
            longest_first = sorted(self.special_tokens, key=len, reverse=True)
            self._special_split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")

    def _chunks(self, text: str) -> list[str]:
        # Special tokens are cut out of the raw text first; each piece between them is then
        # normalised and pre-tokenized on its own (as `tokenizers` does with added tokens).
        segments = self._special_split.split(text) if self._special_split else [text]
        chunks: list[str] = []
        for i, segment in enumerate(segments):
            if i % 2:
                chunks.append(segment)
            elif segment:
                normalized = byte_level.normalize(segment, self.lowercase, self.strip_accents)
                chunks.extend(byte_level.pretokenize_units(normalized))
        return chunks

    def _words(self, chunk: str) -> list[str]:
        return [chunk] if chunk in self._special_set else byte_level.pretokenize(chunk)

    def _symbols(self, word: str) -> list[int]:
        vocab = self.vocab
        return [vocab[char] for char in byte_level.to_symbols(word)]

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`; bytes that do not form whole UTF-8 characters (a cut sequence)
        become U+FFFD."""
        special = self._special_set
        data = bytearray()
        for token in self.convert_ids_to_tokens(ids):
            data += token.encode("utf-8") if token in special else byte_level.symbols_to_bytes(token)
        return data.decode("utf-8", errors="replace")


def _read_vocab(path: Path) -> dict[str, int]:
    vocab = read_json_object(path, CheckpointError, "an object mapping tokens to integer ids")
    if not all(isinstance(i, int) for i in vocab.values()):
        raise CheckpointError(f"{path}: expected a JSON object mapping tokens to integer ids")
    if len(set(vocab.values())) != len(vocab):
        raise CheckpointError(f"{path}: two tokens share an id")
    return vocab


def _read_merges(path: Path) -> list[tuple[str, str]]:
    lines = read_settings_text(path, CheckpointError).split("\n")
    merges = []
    for line_number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if (line_number == 1 and line.startswith("#version")) or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise CheckpointError(f"{path}:{line_number}: expected two tokens separated by one space, "
                                  f"got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges
