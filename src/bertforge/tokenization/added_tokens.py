"""Tokens added after a tokenizer was made, as transformers' `add_tokens` / `add_special_tokens` add them.

Each is kept whole wherever it occurs, inside a word too, and new ones take the next free ids. A special
token is matched in the raw text (case and accents as written) and skipped by
`decode(skip_special_tokens=True)`; any other added token is matched in the normalised text (lower-cased
and without accents where the tokenizer does that), after the special tokens, as transformers does.
Only the special tokens `add_special_tokens` lists (`additional_special_tokens`) are in `all_special_tokens`
and the special-token mask; those of `add_tokens(..., special_tokens=True)` are not, as in transformers 5.
"""

from __future__ import annotations

import re

from bertforge.errors import InputError
from bertforge.tokenization.basic import is_cjk, normalize_with_alignment
from bertforge.tokenization.folder import SPECIAL_TOKEN_KEYS

# transformers 5 names the list extra_special_tokens; 4 named it additional_special_tokens.
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")


def token_contents(tokens, call: str, special: bool) -> list[str]:
    """Strings, or transformers' `AddedToken`s (their `content`) that ask for what this call does, each checked."""
    tokens = [tokens] if isinstance(tokens, str) or hasattr(tokens, "content") else list(tokens)
    for token in tokens:
        options = {name: getattr(token, name, False) for name in ("single_word", "lstrip", "rstrip")}
        if hasattr(token, "content") and (any(options.values()) or getattr(token, "special", special) != special
                                          or getattr(token, "normalized", not special) == special):
            raise InputError(f"{call}: {token!r} asks for options this tokenizer does not apply; an added token is "
                             f"{'special (matched as written)' if special else 'not special (matched normalised)'} "
                             f"here, with no single_word, lstrip or rstrip")
    contents = [getattr(token, "content", token) for token in tokens]
    for content in contents:
        if not isinstance(content, str) or not content:
            raise InputError(f"{call}: a token must be a non-empty string, got {content!r}")
        if any(ch.isspace() for ch in content):
            raise InputError(f"{call}: token {content!r} holds whitespace; the tokenizer splits text at whitespace "
                             f"before it looks for special tokens")
    return contents


def special_tokens_of(special_tokens_dict: dict, state: dict) -> list[str] | None:
    """The extra special tokens of `add_special_tokens`' dict (None where it names none); a named special token
    (pad_token, ...) may only be the one the tokenizer has, as the splitter and the model's ids are built around it."""
    if not isinstance(special_tokens_dict, dict):
        raise InputError(f"add_special_tokens takes a dict such as {{'additional_special_tokens': ['[E1]']}}, "
                         f"got {type(special_tokens_dict).__name__}")
    tokens = None
    for key, value in special_tokens_dict.items():
        if key in EXTRA_KEYS:
            tokens = [*(tokens or []), *token_contents(value, "add_special_tokens", special=True)]
        elif key in SPECIAL_TOKEN_KEYS:
            if getattr(value, "content", value) != state[key]:
                raise InputError(f"add_special_tokens({key}={value!r}): the tokenizer's {key} is {state[key]!r} and "
                                 f"is fixed; BertTokenizer.from_pretrained(path, {key}=...) builds one with another")
        else:
            raise InputError(f"add_special_tokens: {key!r} is not one of {', '.join(SPECIAL_TOKEN_KEYS + EXTRA_KEYS)}")
    return tokens


def added_only(ids_to_tokens: dict[int, str], added: set[str]) -> set[str]:
    """The added tokens that are not the model's own pieces: those at the end of the vocabulary, where adding puts
    them (a token added that the vocabulary had keeps its place, and stays a WordPiece piece, as in transformers).
    Read from the last id down, so a tokenizer without added tokens pays one look-up for it."""
    tokens = set()
    for token_id in range(len(ids_to_tokens) - 1, -1, -1):
        token = ids_to_tokens.get(token_id)  # None past a gap in a vocabulary given as a dict
        if token not in added:
            break
        tokens.add(token)
    return tokens


def with_added_tokens(state: dict, tokens: list[str], special: bool,
                      listed: list[str] | None = None) -> tuple[dict, int]:
    """The tokenizer's state (`__getstate__`) with `tokens` added, those new to the vocabulary at the next ids in
    order; and how many were not added tokens before (transformers' count). `listed`: the new extra special
    tokens (`additional_special_tokens`) where `add_special_tokens` sets them; a token leaving that list stays
    special, as in transformers."""
    vocab = dict(state["vocab"])
    vocab.update({token: i for i, token in enumerate((t for t in dict.fromkeys(tokens) if t not in vocab),
                                                     start=len(vocab))})
    extra, unlisted = state["additional_special_tokens"], state["special_added_tokens"]
    specials = {state[key] for key in SPECIAL_TOKEN_KEYS} | set(extra) | set(unlisted)
    # A token that changes kind counts as new: made special, or an unlisted special one made plain
    known = specials if special else specials - set(unlisted) | set(state["added_tokens"])
    new = [token for token in dict.fromkeys(tokens) if token not in known]
    added = state["added_tokens"]
    if special:
        added = [t for t in added if t not in tokens]  # matched as written from now on
        if listed is not None:
            extra, unlisted = listed, [*unlisted, *extra]
        unlisted = [*unlisted, *tokens]  # the constructor leaves out those listed
    else:
        added, unlisted = [*added, *new], [t for t in unlisted if t not in tokens]
    return {**state, "vocab": vocab, "additional_special_tokens": list(dict.fromkeys(extra)),
            "special_added_tokens": unlisted, "added_tokens": added}, len(new)


class AddingTokens:
    """`add_tokens` and `add_special_tokens`, the half of `BertTokenizer` that rebuilds it from its state
    (`__getstate__`) with more tokens."""

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Keep tokens whole (see `added_tokens`); those new to the vocabulary take the ids after its last: give the
        model as many rows, `model.resize_token_embeddings(len(tokenizer))`. Returns how many were not added before.
        Special ones are matched as written and skipped by `decode(skip_special_tokens=True)`, but, as in
        transformers, not listed in `all_special_tokens` (so an MLM collator masks them like other tokens)."""
        tokens = token_contents(new_tokens, "add_tokens", special=bool(special_tokens))
        return self._rebuild(*with_added_tokens(self.__getstate__(), tokens, special=bool(special_tokens)))

    def add_special_tokens(self, special_tokens_dict: dict, replace_extra_special_tokens: bool = True,
                           replace_additional_special_tokens: bool | None = None) -> int:
        """transformers' call with {"extra_special_tokens": [...]} (transformers 4: "additional_special_tokens"):
        as `add_tokens(..., special_tokens=True)`, and the tokens become `additional_special_tokens`, in place of
        those listed before unless `replace_extra_special_tokens=False` (transformers 4's keyword
        `replace_additional_special_tokens`). Tokens no longer listed stay special: matched whole, skipped by
        decode."""
        if replace_additional_special_tokens is not None:
            replace_extra_special_tokens = replace_additional_special_tokens
        state = self.__getstate__()
        tokens = special_tokens_of(special_tokens_dict, state)
        listed = tokens if tokens is None or replace_extra_special_tokens else [
            *state["additional_special_tokens"], *tokens]
        return self._rebuild(*with_added_tokens(state, tokens or [], special=True, listed=listed))

    def _rebuild(self, state: dict, added: int) -> int:
        if self._workers is not None:
            self._workers.close()  # they hold the old vocabulary
        self.__dict__.clear()
        self.__init__(**state)
        return added


class AddedTokens:
    """Finds the non-special added tokens of a chunk of text: in its normalised form, longest first at the
    leftmost place, outside the special tokens; `split` gives the chunk's spans in order."""

    def __init__(self, tokens: list[str], vocab: dict[str, int], special_tokens: list[str], lowercase: bool,
                 strip_accents: bool):
        self.lowercase, self.strip_accents = lowercase, strip_accents
        self.ids = {self.normalize(token): vocab[token] for token in reversed(tokens)}  # the first wins a tie
        self.ids.pop("", None)
        # What transformers gives back for their ids (and so decodes): the normalised form, CJK characters spaced
        self.tokens_by_id = {vocab[token]: "".join(f" {c} " if is_cjk(c) else c for c in self.normalize(token))
                             for token in tokens}
        by_length = sorted(self.ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        specials = sorted(special_tokens, key=len, reverse=True)
        self.specials = re.compile("|".join(map(re.escape, specials))) if specials else None

    def normalize(self, text: str) -> str:
        return normalize_with_alignment(text, self.lowercase, self.strip_accents)[0]

    def may_occur_in(self, chunk: str) -> bool:
        if self.pattern is None:
            return False
        plain = chunk.isascii() and chunk.isprintable()  # then normalising only lower-cases
        text = (chunk.lower() if self.lowercase else chunk) if plain else self.normalize(chunk)
        return self.pattern.search(text) is not None

    def split(self, chunk: str) -> list[tuple[int, int, int | None]]:
        """(start, end, id) for each added token of `chunk` and (start, end, None) for the text between."""
        spans, start = [], 0
        segments = [] if self.specials is None else [m.span() for m in self.specials.finditer(chunk)]
        for segment_start, segment_end in [*segments, (len(chunk), len(chunk))]:
            base = start
            text, alignment = normalize_with_alignment(chunk[base:segment_start], self.lowercase, self.strip_accents)
            for match in self.pattern.finditer(text):
                first, last = base + alignment[match.start()], base + alignment[match.end() - 1] + 1
                spans += [(start, first, None), (first, last, self.ids[match.group()])]
                start = last
            spans.append((start, segment_end, None))  # the rest, and the special token (split by the encoder)
            start = segment_end
        return [span for span in spans if span[0] < span[1]]
