"""More inputs for the teacher to label, made from the training texts themselves, as Tang et al.
(2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks") did for SST-2:
each word becomes [MASK] with probability 0.1, or another word drawn from the training texts'
unigram distribution with probability 0.1 (they drew one of the same part of speech; we have no
tagger); then, with probability 0.25, only a random n-gram of 1 to 5 words of the result is kept.

A perturbed text may no longer deserve its gold label, so it gets none: the student learns the
teacher's output on it alone. Perturbing a text's words shifts NER tags and QA answer spans, so
this serves the classification tasks only."""

from __future__ import annotations

import random

from bertforge.io.datasets import TextExample

MASK_PROBABILITY = 0.1
REPLACE_PROBABILITY = 0.1
NGRAM_PROBABILITY = 0.25
LONGEST_NGRAM = 5


def perturb(words: list[str], unigrams: list[str], rng: random.Random, mask_token: str) -> list[str]:
    """One perturbed copy of `words` (never empty when `words` is not)."""
    out = []
    for word in words:
        draw = rng.random()
        if draw < MASK_PROBABILITY:
            out.append(mask_token)
        elif draw < MASK_PROBABILITY + REPLACE_PROBABILITY:
            out.append(rng.choice(unigrams))  # a uniform pick over all word occurrences = the unigram distribution
        else:
            out.append(word)
    if len(out) > 1 and rng.random() < NGRAM_PROBABILITY:
        n = rng.randint(1, min(LONGEST_NGRAM, len(out)))
        start = rng.randrange(len(out) - n + 1)
        out = out[start:start + n]
    return out


def augment(examples: list[TextExample], copies: int, seed: int, mask_token: str) -> list[TextExample]:
    """`copies` perturbed, unlabelled copies of each example (both texts of a pair are perturbed),
    drawn reproducibly from `seed`; a copy identical to its original adds nothing and is dropped."""
    rng = random.Random(seed)
    unigrams = [word for example in examples for text in (example.text, example.text_pair) if text
                for word in text.split()]
    if not unigrams:
        return []
    augmented = []
    for example in examples:
        words = example.text.split()
        pair_words = example.text_pair.split() if example.text_pair is not None else None
        for copy in range(1, copies + 1):
            text = perturb(words, unigrams, rng, mask_token)
            pair = perturb(pair_words, unigrams, rng, mask_token) if pair_words is not None else None
            if text == words and pair == pair_words:
                continue
            augmented.append(TextExample(" ".join(text), " ".join(pair) if pair is not None else None, None,
                                         f"{example.source} (perturbed copy {copy})"))
    return augmented
