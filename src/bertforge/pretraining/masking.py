"""Masked-LM masking as in BERT: pick 15% of the tokens (at most `max_predictions_per_seq`),
replace 80% of the picked ones by [MASK], 10% by a random token, leave 10% unchanged.

Masks are drawn from a NumPy generator seeded by (seed, epoch, instance index), so the mask of
an instance does not depend on batch size, process count or where a run was resumed: static
masks (drawn once while preparing, as in the original; seeded by chunk rather than epoch) and
dynamic masks (drawn again every epoch, as in RoBERTa) are both reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskingConfig:
    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never picked ([CLS], [SEP], [PAD])
    continuation: np.ndarray  # bool per vocabulary id: a "##" piece that continues a word
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False

    @classmethod
    def for_tokenizer(cls, tokenizer, **options) -> "MaskingConfig":
        continuation = np.zeros(len(tokenizer), dtype=bool)
        for token, index in tokenizer.vocab.items():
            continuation[index] = token.startswith("##")
        special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
        return cls(tokenizer.mask_token_id, len(tokenizer), special, continuation, **options)


def choose_positions(tokens: np.ndarray, config: MaskingConfig, rng: np.random.Generator) -> np.ndarray:
    """The sorted positions to predict. With whole-word masking a word's pieces are taken or
    left together; whole words are added in random order while they fit in the budget."""
    budget = min(config.max_predictions_per_seq, max(1, int(round(len(tokens) * config.masked_lm_prob))))
    candidates = np.flatnonzero(~np.isin(tokens, config.special_ids))
    if len(candidates) == 0:
        return candidates
    starts = np.ones(len(candidates), dtype=bool)
    if config.whole_word_mask:
        # A "##" piece joins the word before it, unless a special token separates them
        # (truncation can leave a segment starting in the middle of a word).
        follows_candidate = np.diff(candidates) == 1
        starts[1:] = ~(config.continuation[tokens[candidates[1:]]] & follows_candidate)
    groups = np.split(candidates, np.flatnonzero(starts)[1:])
    chosen, count = [], 0
    for group_index in rng.permutation(len(groups)):
        if count >= budget:
            break
        group = groups[group_index]
        if count + len(group) > budget:  # a word that does not fit is skipped, as in the original
            continue
        chosen.append(group)
        count += len(group)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def mask_sequence(tokens: np.ndarray, config: MaskingConfig, rng: np.random.Generator):
    """(masked tokens, positions, original ids at those positions)."""
    positions = choose_positions(tokens, config, rng)
    labels = tokens[positions]
    masked = tokens.copy()
    replace = rng.random(len(positions))
    keep_or_random = rng.random(len(positions))
    random_tokens = rng.integers(0, config.vocab_size, len(positions))
    masked[positions] = np.where(replace < 0.8, config.mask_token_id,
                                 np.where(keep_or_random < 0.5, labels, random_tokens))
    return masked, positions, labels


def instance_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def static_mask_rng(seed: int, chunk: int, index: int) -> np.random.Generator:
    """The generator of a static mask: keyed by the instance's chunk and place in it, not its place
    in the data set, so that a chunk is masked alike by any worker or part. Static masks have no
    epochs, so the chunk takes the epoch's place (and chunk 0 keeps the masks that numbering by place
    in the data set gave)."""
    return instance_rng(seed, chunk, index)


def mask_batch(input_ids: np.ndarray, lengths: np.ndarray, indices: np.ndarray, epoch: int, seed: int,
               config: MaskingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic masking of a padded batch: (masked input ids, labels with -100 where not predicted)."""
    masked = input_ids.copy()
    labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
    for row, (length, index) in enumerate(zip(lengths, indices)):
        tokens, positions, originals = mask_sequence(input_ids[row, :length], config,
                                                     instance_rng(seed, epoch, int(index)))
        masked[row, :length] = tokens
        labels[row, positions] = originals
    return masked, labels
