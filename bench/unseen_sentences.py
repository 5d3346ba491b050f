"""The unseen-sentences split of SST-2 that every bench script scoring "sentences held apart from all
training data" reads (`--held-apart sentences`).

GLUE's SST-2 train set is every phrase of the parse trees of some 6,900 review sentences, in random order;
sst2/validation.tsv is its last 2,000 rows, so its rows share sentences with the training rows, and a network
can score on them by remembering phrases it was trained on. This split holds 1,000 whole sentences apart
(rows of at least 8 words that are no part of a longer row, drawn with a fixed seed) and takes out of the
training file every row that is a part of one of them (a phrase of its tree, down to single words); the rest
keep their order. With `selection`, 1,000 more sentences, drawn the same way from the rest, are held apart for
choosing a run's best epoch, and their phrases leave the training file too. GLUE's dev set, which the project
lead holds, is unseen sentences as well.
"""

from __future__ import annotations

import random
from pathlib import Path

from locations import DATA, REPO

UNSEEN_SENTENCES, SENTENCE_MIN_WORDS, SPLIT_SEED = 1000, 8, 0


def word_spans(words: tuple[str, ...], shortest: int = 1) -> set[tuple[str, ...]]:
    """Every run of at least `shortest` consecutive words, the whole included."""
    return {words[i:j] for i in range(len(words)) for j in range(i + shortest, len(words) + 1)}


def unseen_split_folder(selection: bool) -> Path:
    """Where `--held-apart sentences` keeps its split, with or without the selection sentences: every bench
    script that scores unseen sentences reads the same files."""
    return REPO / "runs" / ("sst2-unseen-sentences" + "-selection" * selection)


def unseen_sentences_split(selection: bool = False, directory: Path | None = None) -> tuple[Path, Path, Path | None]:
    """(training file, held-apart sentences, selection sentences or None) of `--held-apart sentences`,
    written once into `directory` (by default `unseen_split_folder(selection)`). The held-apart sentences are
    the same with or without `selection`."""
    directory = directory or unseen_split_folder(selection)
    train, sentences, chosen_for_selection = (directory / name for name in ("train.tsv", "sentences.tsv",
                                                                               "selection.tsv"))
    if train.exists() and sentences.exists() and (chosen_for_selection.exists() or not selection):
        return train, sentences, chosen_for_selection if selection else None
    header, *rows = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    rows += (DATA / "sst2" / "validation.tsv").read_text(encoding="utf-8").splitlines()[1:]  # the rest of GLUE's
    words = [tuple(row.rsplit("\t", 1)[0].split()) for row in rows]
    parts = {span for w in words for span in word_spans(w, SENTENCE_MIN_WORDS) if span != w}
    whole = sorted({w for w in words if len(w) >= SENTENCE_MIN_WORDS and w not in parts})
    held = {sentences: set(random.Random(SPLIT_SEED).sample(whole, UNSEEN_SENTENCES))}
    if selection:
        rest = sorted(set(whole) - held[sentences])
        held[chosen_for_selection] = set(random.Random(SPLIT_SEED + 1).sample(rest, UNSEEN_SENTENCES))
    held_parts = set().union(*(word_spans(w) for group in held.values() for w in group))
    directory.mkdir(parents=True, exist_ok=True)
    files, seen = {path: [header] for path in [train, *held]}, set()
    for row, w in zip(rows, words):
        group = next((path for path, group in held.items() if w in group), None)
        if group is not None:
            if w not in seen:  # a sentence that repeats is held apart once
                files[group].append(row)
                seen.add(w)
        elif w not in held_parts:
            files[train].append(row)
    for path, lines in files.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train, sentences, chosen_for_selection if selection else None
