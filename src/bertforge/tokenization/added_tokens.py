"""Tokens added after a tokenizer was made, as transformers' `add_tokens` / `add_special_tokens` add them.

An added token here is a special token: matched whole in the raw text (inside a word too, case and
accents as written), never normalised or split, skipped by `decode(skip_special_tokens=True)`, and
given the next free id. transformers' non-special added tokens are matched in the normalised text
instead, which this tokenizer's splitter does not do: they are refused, not approximated.
"""

from __future__ import annotations

from bertforge.errors import InputError
from bertforge.tokenization.folder import SPECIAL_TOKEN_KEYS

# transformers 5 names the list extra_special_tokens; 4 named it additional_special_tokens.
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")


def token_contents(tokens, call: str) -> list[str]:
    """Strings, or transformers' `AddedToken`s (their `content`), each checked."""
    tokens = [tokens] if isinstance(tokens, str) or hasattr(tokens, "content") else list(tokens)
    contents = [getattr(token, "content", token) for token in tokens]
    for content in contents:
        if not isinstance(content, str) or not content:
            raise InputError(f"{call}: a token must be a non-empty string, got {content!r}")
        if any(ch.isspace() for ch in content):
            raise InputError(f"{call}: token {content!r} holds whitespace; the tokenizer splits text at whitespace "
                             f"before it looks for special tokens")
    return contents


def special_tokens_of(special_tokens_dict: dict, state: dict) -> list[str]:
    """The extra special tokens of `add_special_tokens`' dict; a named special token (pad_token, ...) may only
    be the one the tokenizer has, as the splitter and the model's ids are built around it."""
    if not isinstance(special_tokens_dict, dict):
        raise InputError(f"add_special_tokens takes a dict such as {{'additional_special_tokens': ['[E1]']}}, "
                         f"got {type(special_tokens_dict).__name__}")
    tokens = []
    for key, value in special_tokens_dict.items():
        if key in EXTRA_KEYS:
            tokens += token_contents(value, "add_special_tokens")
        elif key in SPECIAL_TOKEN_KEYS:
            if getattr(value, "content", value) != state[key]:
                raise InputError(f"add_special_tokens({key}={value!r}): the tokenizer's {key} is {state[key]!r} and "
                                 f"is fixed; BertTokenizer.from_pretrained(path, {key}=...) builds one with another")
        else:
            raise InputError(f"add_special_tokens: {key!r} is not one of {', '.join(SPECIAL_TOKEN_KEYS + EXTRA_KEYS)}")
    return tokens


def with_special_tokens(state: dict, tokens: list[str]) -> tuple[dict, int]:
    """The tokenizer's state (`__getstate__`) with `tokens` as extra special tokens, those new to the vocabulary
    at the next ids, in order; and how many were new."""
    vocab = dict(state["vocab"])
    new = [token for token in dict.fromkeys(tokens) if token not in vocab]
    vocab.update({token: i for i, token in enumerate(new, start=len(vocab))})
    named = {state[key] for key in SPECIAL_TOKEN_KEYS}
    extra = list(dict.fromkeys([*state["additional_special_tokens"], *(t for t in tokens if t not in named)]))
    return {**state, "vocab": vocab, "additional_special_tokens": extra}, len(new)
