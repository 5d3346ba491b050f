"""The extra texts `distill_value.py` gives its distilled arm (`distill --unlabelled`), labelled by the teacher
alone: sentences of the Gutenberg books (`--unlabelled-sentences`), or two training rows joined (`--joined-rows`).
Each file is written once into the runs' folder, atomically, so seeds that run side by side read the same one."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from pathlib import Path

from bertforge.io.atomic import write_text
from bertforge.io.datasets import read_text_examples
from bertforge.pretraining.corpus import read_documents
from locations import CORPUS

SENTENCE_WORDS = (5, 40)  # SST-2's review sentences run from a few words to a few dozen


def spread_sentences(documents: Iterable[list[str]], count: int) -> list[str]:
    """`count` sentences of SENTENCE_WORDS words, evenly spaced over all such sentences of `documents` (so every
    part of the corpus contributes, not its first books alone), on one line each."""
    shortest, longest = SENTENCE_WORDS
    sentences = [" ".join(words) for document in documents for sentence in document
                 if shortest <= len(words := sentence.split()) <= longest]
    if len(sentences) < count:
        sys.exit(f"--unlabelled-sentences {count}: the corpus has only {len(sentences):,} sentences of "
                 f"{shortest}-{longest} words")
    step = len(sentences) / count
    return [sentences[int(i * step)] for i in range(count)]


def unlabelled_sentences(count: int, runs_dir: Path) -> Path:
    """The --unlabelled file of `count` Gutenberg sentences, written once (atomically: seeds run side by side)."""
    path = runs_dir / f"gutenberg-sentences-{count}.tsv"
    if not path.is_file():
        runs_dir.mkdir(parents=True, exist_ok=True)
        lines = spread_sentences(read_documents(CORPUS), count)
        write_text(path, "sentence\n" + "".join(f"{line}\n" for line in lines))
    return path


def joined_rows(count: int, train: Path, train_limit: int, runs_dir: Path) -> Path:
    """The --unlabelled file of `count` texts, each two different rows of the first `train_limit` of `train`
    joined, the pairs drawn with seed 0 (so every seed's run reads the same file); written once, atomically."""
    path = runs_dir / f"joined-rows-{count}-of-{train_limit}.tsv"
    if not path.is_file():
        rows = [example.text for example in read_text_examples(train, "sentence")[:train_limit]]
        rng = random.Random(0)
        pairs = (rng.sample(range(len(rows)), 2) for _ in range(count))
        runs_dir.mkdir(parents=True, exist_ok=True)
        write_text(path, "sentence\n" + "".join(f"{rows[i]} {rows[j]}\n" for i, j in pairs))
    return path
