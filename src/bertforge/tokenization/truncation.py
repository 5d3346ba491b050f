"""Truncation and padding as transformers spells them: the strategies (`True`, "longest_first",
"only_first", "only_second"; `True`, "longest", "max_length"), how a sequence or a pair is cut to
fit (with overflowing windows), and how rows are padded into the output lists."""

from __future__ import annotations

import logging

from bertforge.errors import InputError, is_whole_number
from bertforge.tokenization.encoding import Encoding

log = logging.getLogger(__name__)

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")

# [CLS], a token, [SEP]: a shorter length (model_max_length, --max-length, max_seq_length) holds no text
MIN_LENGTH = 3


def is_sequence_length(value) -> bool:
    """Whether `value` can be a length to cut texts to: a whole number (no bool or float) of at least MIN_LENGTH."""
    return is_whole_number(value, MIN_LENGTH)


def padding_strategy(padding) -> str | None:
    if padding is True:
        return "longest"
    if padding is False or padding is None or padding == "do_not_pad":
        return None
    if padding in PADDING_STRATEGIES:
        return padding
    raise InputError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")


def truncation_strategy(truncation) -> str | None:
    if truncation is True:
        return "longest_first"
    if truncation is False or truncation is None or truncation == "do_not_truncate":
        return None
    if truncation in TRUNCATION_STRATEGIES:
        return truncation
    raise InputError(f"truncation must be True, False or one of {', '.join(TRUNCATION_STRATEGIES)}; got {truncation!r}")


def truncate(a: Encoding, b: Encoding | None, budget: int, strategy: str, stride: int,
             overflow: bool) -> list[tuple[Encoding, Encoding | None]]:
    """`a` (and `b`) cut to `budget` tokens by `strategy`; with `overflow`, every window of the
    side that is cut, each `stride` tokens overlapping the one before."""
    if budget < 0:
        raise InputError("max_length is too small to hold the special tokens")
    if b is None:
        if strategy == "only_second":
            raise InputError("truncation='only_second' needs a text pair")
        return [(w, None) for w in a.windows(budget, stride)]
    if strategy == "longest_first":
        if overflow and stride >= budget and len(a) + len(b) > budget:  # the reference panics here
            raise InputError(f"stride ({stride}) must be smaller than the room max_length leaves for the pair "
                             f"({budget} tokens)")
        n1, n2 = longest_first_lengths(len(a), len(b), budget)
        firsts, seconds = a.windows(n1, stride), b.windows(n2, stride)
        # The reference's order (tokenizers' Encoding.merge_with): the two first windows; each later first
        # window with every second window in turn; then the first with each later second.
        return [(firsts[0], seconds[0]), *[(later, s) for later in firsts[1:] for s in seconds],
                *[(firsts[0], s) for s in seconds[1:]]]
    if strategy == "only_first":
        room = budget - len(b)
        if room <= 0 and len(a) + len(b) > budget:
            raise InputError(f"the second sequence ({len(b)} tokens) leaves no room for the first "
                             f"within max_length with truncation='only_first'")
        return [(w, b) for w in a.windows(max(room, 0), stride)]
    room = budget - len(a)
    if room <= 0 and len(a) + len(b) > budget:
        raise InputError(f"the first sequence ({len(a)} tokens) leaves no room for the second "
                         f"within max_length with truncation='only_second'")
    return [(a, w) for w in b.windows(max(room, 0), stride)]


def longest_first_lengths(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Token budget for each side of a pair: keep the shorter side whole when it fits in
    its half, otherwise give each side half (the reference's rule)."""
    if n1 + n2 <= budget:
        return n1, n2
    short, long_ = min(n1, n2), max(n1, n2)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (short, long_) if n1 <= n2 else (long_, short)


def check_pad_to_multiple_of(multiple, padding: str | None, truncation: str | None, max_length: int | None) -> None:
    if multiple is not None and not is_whole_number(multiple):
        raise InputError(f"pad_to_multiple_of must be a positive integer, got {multiple!r}")
    if multiple and padding and truncation and max_length is not None and max_length % multiple:
        # Rounding the padded length up would overrun the length the rows were cut to (the reference refuses too).
        raise InputError(f"max_length ({max_length}) must be a multiple of pad_to_multiple_of ({multiple}) "
                         f"when truncation and padding are both on")


def padded_length(target: int | None, multiple: int | None) -> int | None:
    """`target` rounded up to a multiple of `multiple` (None or 0: as it is)."""
    return -(-target // multiple) * multiple if target is not None and multiple else target


def pad_and_collate(rows: list[Encoding], target: int | None, pad_id: int, offsets: bool, special_mask: bool) -> dict:
    """The rows as a dict of lists, each padded with `pad_id` to `target` tokens (if given)."""
    n_pads = [max(0, target - len(row)) for row in rows] if target else [0] * len(rows)
    data: dict[str, list] = {
        "input_ids": [row.ids + [pad_id] * n for row, n in zip(rows, n_pads)],
        "token_type_ids": [row.type_ids + [0] * n for row, n in zip(rows, n_pads)],
        "attention_mask": [[1] * len(row.ids) + [0] * n for row, n in zip(rows, n_pads)],
    }
    if special_mask:
        data["special_tokens_mask"] = [row.special_mask + [1] * n for row, n in zip(rows, n_pads)]
    if offsets:
        data["offset_mapping"] = [row.offsets + [(0, 0)] * n for row, n in zip(rows, n_pads)]
    for row, n in zip(rows, n_pads):
        if n:
            row.pad_word_and_sequence_ids(n)
    return data


# What `pad_features` fills each token-level field with; input_ids take the vocabulary's [PAD].
PAD_FILL = {"token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1}


def pad_features(features, pad_id: int, model_max_length: int, padding=True, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None) -> dict[str, list]:
    """transformers' `tokenizer.pad`, which its DataCollatorWithPadding calls: feature dicts (or one dict of
    lists) as one dict of lists, the token-level fields padded on the right and an attention_mask added
    where there was none; other fields (labels) as they are. padding="max_length" with no max_length pads
    to `model_max_length`, as there."""
    if isinstance(features, dict):
        features = [dict(zip(features, values)) for values in zip(*features.values())]
    if not features or not all(isinstance(f, dict) and "input_ids" in f for f in features):
        raise InputError("pad: give a list of feature dicts with 'input_ids' (or one dict of lists)")
    as_list = lambda row: row.tolist() if hasattr(row, "tolist") else list(row)  # noqa: E731
    data = {key: [f[key] for f in features] for key in features[0]}
    for key in ("input_ids", *PAD_FILL):
        if key in data:
            data[key] = [as_list(row) for row in data[key]]
    data.setdefault("attention_mask", [[1] * len(row) for row in data["input_ids"]])
    padding = padding_strategy(padding)
    if padding == "max_length" and max_length is None:
        max_length = model_max_length
    check_pad_to_multiple_of(pad_to_multiple_of, None, None, None)
    target = max(map(len, data["input_ids"])) if padding == "longest" else max_length if padding else None
    target = padded_length(target, pad_to_multiple_of)
    for key in ("input_ids", *PAD_FILL):
        if key in data and target is not None:
            fill = pad_id if key == "input_ids" else PAD_FILL[key]
            data[key] = [row + [fill] * (target - len(row)) for row in data[key]]
    return data


def encode_within(tokenizer, texts, pairs, max_length: int, hint: str = "") -> tuple[list[Encoding], int]:
    """The encodings of `texts` (and `pairs`) cut to `max_length` tokens, and how many were cut, with a warning
    counting them (`hint` added): how pipelines, evaluation and fine-tuning read texts. Only the long ones are
    encoded twice."""
    rows = list(tokenizer(list(texts), list(pairs) if pairs is not None else None).encodings)
    too_long = [i for i, row in enumerate(rows) if len(row.ids) > max_length]
    if too_long:
        cut = tokenizer([texts[i] for i in too_long], [pairs[i] for i in too_long] if pairs is not None else None,
                        truncation=True, max_length=max_length)
        for i, row in zip(too_long, cut.encodings):
            rows[i] = row
    warn_truncated(len(too_long), len(rows), max_length, hint)
    return rows, len(too_long)


def warn_truncated(cut: int, total: int, max_length: int, hint: str = "") -> None:
    if cut:
        log.warning("%d of %d inputs were longer than %d tokens and were truncated%s", cut, total, max_length, hint)
