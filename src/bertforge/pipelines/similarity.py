"""Contextual similarity: BERT gives the same word different vectors in different contexts.

The word's vector (the mean of its pieces) from a chosen layer is compared across sentences by
cosine, next to the same comparison in the context-free input embedding (hidden state 0:
token + position + segment embedding, before any attention), where the word is nearly the same
vector wherever it stands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bertforge.errors import InputError
from bertforge.pipelines.features import FeatureExtractionPipeline, resolve_layers

# The lecture notes' examples: a snake and a language called python; a river bank and a money bank.
DEMO_EXAMPLES = [
    ("He got bit by Python", "python"),
    ("Python is my favorite programming language", "python"),
    ("The python swallowed a whole rabbit", "python"),
    ("We sat on the bank of the river", "bank"),
    ("She opened an account at the bank", "bank"),
]


@dataclass
class SimilarityResult:
    sentences: list[str]
    words: list[str]
    layer: int
    contextual: np.ndarray  # (n, n) cosines at `layer`
    context_free: np.ndarray  # (n, n) cosines in the input embedding

    def pairs(self) -> list[dict]:
        """Every pair of occurrences of the same word, with both cosines."""
        rows = []
        for i in range(len(self.sentences)):
            for j in range(i + 1, len(self.sentences)):
                if self.words[i].lower() == self.words[j].lower():
                    rows.append({"word": self.words[i], "a": self.sentences[i], "b": self.sentences[j],
                                 "context_free": float(self.context_free[i, j]),
                                 "contextual": float(self.contextual[i, j])})
        return rows


def _cosines(vectors: torch.Tensor) -> np.ndarray:
    unit = F.normalize(vectors, dim=-1)
    return (unit @ unit.T).numpy()


class ContextualSimilarityPipeline(FeatureExtractionPipeline):
    """`pipe([(sentence, word), ...], layer=-1)` → SimilarityResult; no input: the demo examples."""

    task = "contextual-similarity"

    def __call__(self, examples=None, layer: int = -1):
        examples = DEMO_EXAMPLES if examples is None else examples
        if isinstance(examples, tuple) and len(examples) == 2 and all(isinstance(s, str) for s in examples):
            examples = [examples]  # one (sentence, word) alone, as next-sentence reads a tuple of two
        if not isinstance(examples, (list, tuple)):  # a str would be read a character at a time
            raise InputError(f"examples must be a list of (sentence, word) pairs, got {type(examples).__name__}")
        if len(examples) < 2:
            raise InputError("contextual similarity needs at least two (sentence, word) examples")
        for i, example in enumerate(examples):
            if not (isinstance(example, (tuple, list)) and len(example) == 2 and all(isinstance(s, str) for s in example)):
                raise InputError(f"example {i + 1}: expected (sentence, word), got {str(example)[:80]!r}")
        sentences, words = [s for s, _ in examples], [w for _, w in examples]
        chosen = resolve_layers(layer, self.config.num_hidden_layers, keyword="layer")
        if len(chosen) != 1:  # a word's vector compared across sentences comes from one layer
            raise InputError(f"layer: choose one layer, got {layer!r}")
        layer = chosen[0]
        context_free = super().__call__(sentences, layers=0, level="word", return_tensors="pt")
        contextual = super().__call__(sentences, layers=layer, level="word", return_tensors="pt")
        rows = [self.word_index(features.tokens, sentence, word)
                for features, (sentence, word) in zip(contextual, examples)]
        free = torch.stack([f.vectors[r] for f, r in zip(context_free, rows)])
        ctx = torch.stack([f.vectors[r] for f, r in zip(contextual, rows)])
        return SimilarityResult(sentences, words, layer % (self.config.num_hidden_layers + 1), _cosines(ctx),
                                _cosines(free))

    def word_index(self, tokens: list[str], sentence: str, word: str) -> int:
        """Index of the first word of `sentence` equal to `word` (case-insensitive for uncased models)."""
        fold = str.lower if self.tokenizer.do_lower_case else (lambda s: s)
        for i, token in enumerate(tokens):
            if fold(token) == fold(word):
                return i
        if self.truncated and fold(word) in fold(sentence).split():
            raise InputError(f"the word {word!r} lies beyond max_length {self.max_length} in {sentence[:80]!r}..., "
                             f"where truncation cut it away")
        raise InputError(f"the word {word!r} does not occur in {sentence!r} (its words: {', '.join(tokens)})")
