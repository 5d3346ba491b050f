"""Text → WordPiece ids, offsets and word ids, cached per whitespace-separated chunk.

A corpus repeats the same chunks (`the`, `said,`, `"Well,`) over and over, so each distinct chunk
is normalised and cut into pieces once and its entry is kept: the piece ids, their character spans
within the chunk, the word index of each piece within the chunk, and the chunk's number of words.
The ids of a text need only its chunks (`str.split`, at C speed) and one cache look-up per chunk,
done with `map` and joined with `chain`, so no interpreter loop runs per chunk. Offsets and word
ids also need where each chunk starts in the text, found one chunk at a time: callers ask for them
only when they are read.
"""

from __future__ import annotations

import re
from itertools import chain
from operator import itemgetter

from bertforge.errors import InputError
from bertforge.tokenization.added_tokens import AddedTokens
from bertforge.tokenization.basic import WHITESPACE, BasicTokenizer
from bertforge.tokenization.wordpiece import WordPiece

CACHE_LIMIT = 1_000_000  # entries; the cache starts again empty beyond it, bounding memory on any corpus
# Characters Python's str.split() treats as whitespace but BERT treats as control characters
# (removed, so they glue their neighbours together): text holding one takes the regex path.
_SPLIT_UNSAFE = re.compile("[\x0b\x0c\x1c-\x1f\x85]")
_BERT_SPACE = re.compile(f"[{WHITESPACE}]+")
# Printable ASCII and typeset English's punctuation (curly quotes, dashes, the ellipsis), which
# normalising leaves as it is: in such a chunk (without special tokens) only case changes, and
# every character that is not a letter or digit is punctuation, a word of its own (see basic.py).
_PLAIN_CHUNK = re.compile("[!-~\u2013\u2014\u2018\u2019\u201c\u201d\u2026]+")
_PLAIN_WORDS = re.compile("[0-9A-Za-z]+|[^0-9A-Za-z]")
_entry_ids = itemgetter(0)
_FIRST = (0,)  # shared by the entries of one-piece chunks, most of the cache: starts at 0, word 0

# (ids, start and end of each piece within the chunk, word index of each piece within the chunk,
# number of words in the chunk)
ChunkEntry = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], int]


class ChunkEncoder:
    def __init__(self, basic: BasicTokenizer, wordpiece: WordPiece, special_ids: dict[str, int],
                 added: AddedTokens | None = None):
        self.basic = basic
        self.wordpiece = wordpiece
        self.vocab = wordpiece.vocab  # the pieces of words; special tokens, added or not, in `special_ids`
        self.special_ids = special_ids
        self.added = added if added is not None and added.pattern is not None else None
        self._cache: dict[str, ChunkEntry] = {}

    def ids(self, texts: list[str]) -> list[list[int]]:
        """The piece ids of each text (no special tokens added)."""
        get = self._cache.get
        result = []
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"expected a string to tokenize, got {type(text).__name__}")
            chunks = self._chunks(text)
            entries = list(map(get, chunks))
            if None in entries:
                entries = self._entries(chunks)
            result.append(list(chain.from_iterable(map(_entry_ids, entries))))
        return result

    def offsets_and_word_ids(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """Character span in `text` and word index of each piece of `text`."""
        get, find = self._cache.get, text.find
        offsets: list[tuple[int, int]] = []
        word_ids: list[int] = []
        word = position = 0
        # One loop over the chunks: with a dozen pieces per line, chaining `map`s per piece cost
        # more in iterator set-up than this loop. `find` locates each chunk (or regex run) from
        # the end of the previous one: only whitespace lies between, where no chunk can start.
        for chunk in self._chunks(text):
            position = find(chunk, position)
            _, starts, ends, words, n_words = get(chunk) or self._entries([chunk])[0]
            if len(starts) == 1:  # most chunks are one piece
                offsets.append((position + starts[0], position + ends[0]))
                word_ids.append(word + words[0])
            else:
                offsets += [(position + start, position + end) for start, end in zip(starts, ends)]
                word_ids += [word + w for w in words]
            word += n_words
            position += len(chunk)
        return offsets, word_ids

    def _chunks(self, text: str) -> list[str]:
        """Whitespace-separated chunks where Python's whitespace is BERT's (`str.split`, at C
        speed); otherwise the regex's runs and special tokens."""
        if not _SPLIT_UNSAFE.search(text):
            return text.split()
        if self.added is not None:  # an added token may span the regex's runs ("->"): BERT's whitespace only
            text = text.strip(WHITESPACE)
            return _BERT_SPACE.split(text) if text else []
        return [m.group() for m in self.basic.finditer(text)]

    def _entries(self, chunks: list[str]) -> list[ChunkEntry]:
        cache = self._cache
        entries = list(map(cache.get, chunks))
        if None in entries:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            for index, chunk in enumerate(chunks):
                if entries[index] is None:
                    entries[index] = cache[chunk] = self._encode_chunk(chunk)
        return entries

    def _encode_chunk(self, chunk: str) -> ChunkEntry:
        if self.added is not None and self.added.may_occur_in(chunk):
            return self._encode_with_added_tokens(chunk)
        return self._encode_words(chunk)

    def _encode_words(self, chunk: str) -> ChunkEntry:
        """The chunk's words (special tokens whole) cut into WordPiece pieces."""
        if _PLAIN_CHUNK.fullmatch(chunk) and not any(t in chunk for t in self.basic.never_split):
            return self._encode_plain(chunk)
        ids, starts, ends, words, n_words = [], [], [], [], 0
        for match in self.basic.finditer(chunk):
            start = match.start()
            if match.lastgroup == "special":
                ids.append(self.special_ids[match.group()])
                starts.append(start)
                ends.append(match.end())
                words.append(n_words)
                n_words += 1
                continue
            normalized = self.basic.normalize(match.group())
            for word_index, (word, alignment) in enumerate(normalized, start=n_words):
                for piece_id, piece_start, piece_end in self.wordpiece.split(word):
                    if alignment is not None:
                        piece_start, piece_end = alignment[piece_start], alignment[piece_end - 1] + 1
                    ids.append(piece_id)
                    starts.append(start + piece_start)
                    ends.append(start + piece_end)
                    words.append(word_index)
            n_words += len(normalized)
        return tuple(ids), tuple(starts), tuple(ends), tuple(words), n_words

    def _encode_with_added_tokens(self, chunk: str) -> ChunkEntry:
        """`_encode_chunk` of the text between the added tokens, each added token one word of one piece."""
        ids, starts, ends, words, n_words = [], [], [], [], 0
        for start, end, token_id in self.added.split(chunk):
            part = ((token_id,), (0,), (end - start,), (0,), 1) if token_id is not None else \
                self._encode_words(chunk[start:end])
            ids += part[0]
            starts += [start + s for s in part[1]]
            ends += [start + e for e in part[2]]
            words += [n_words + w for w in part[3]]
            n_words += part[4]
        return tuple(ids), tuple(starts), tuple(ends), tuple(words), n_words

    def _encode_plain(self, chunk: str) -> ChunkEntry:
        """`_encode_words` of a `_PLAIN_CHUNK` holding no special token (nearly every chunk of
        English), without looking characters up in the Unicode tables."""
        text = chunk.lower() if self.basic.do_lower_case else chunk
        vocab, max_chars = self.vocab, self.wordpiece.max_input_chars_per_word
        if text.isalnum():  # one word
            piece = vocab.get(text)
            if piece is not None and len(text) <= max_chars:
                return (piece,), _FIRST, (len(text),), _FIRST, 1
        ids, starts, ends, words = [], [], [], []
        matches = list(_PLAIN_WORDS.finditer(text))
        for word_index, match in enumerate(matches):
            word, start = match.group(), match.start()
            piece = vocab.get(word)
            if piece is not None and len(word) <= max_chars:
                ids.append(piece)
                starts.append(start)
                ends.append(match.end())
                words.append(word_index)
                continue
            for piece_id, piece_start, piece_end in self.wordpiece.split(word):
                ids.append(piece_id)
                starts.append(start + piece_start)
                ends.append(start + piece_end)
                words.append(word_index)
        return tuple(ids), tuple(starts), tuple(ends), tuple(words), len(matches)
