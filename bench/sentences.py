"""Sentence splitters on Gutenberg paragraphs: boundaries shared with pysbd, the kinds of the
boundaries they disagree on, and speed (issue 19).

Paragraphs are drawn (seeded) from books 21 on of the corpus: books 1-20 are `bench/prepare.py`'s,
and the fixture of tests/test_sentences.py is left out. Agreement is |ours ∩ pysbd| / |ours ∪ pysbd|
over the sentence boundaries (character positions) of all paragraphs, so a boundary missed and a
boundary added both count against. Speed is CPU seconds of this process (the machine may be shared),
in MB of paragraph text per second. Other splitters are measured when installed (sentencex,
blingfire, nltk's untrained Punkt): none is a dependency.

    .venv/bin/python bench/sentences.py [--paragraphs 2000] [--seed 19]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
import time

from locations import REPO, corpus_books
sys.path.insert(0, str(REPO / "src"))

from bertforge.pretraining.sentence_periods import ABBREVIATIONS  # noqa: E402
from bertforge.pretraining.sentences import PysbdSplitter, RuleSplitter  # noqa: E402


def held_apart_paragraphs(count: int, seed: int) -> list[str]:
    fixture = REPO / "tests" / "fixtures" / "sentences" / "paragraphs.jsonl"
    excluded = {" ".join(json.loads(line)["text"].split()) for line in fixture.read_text(encoding="utf-8").splitlines()}
    rng, pool = random.Random(seed), []
    for number, book in enumerate(corpus_books()):
        if number < 20:
            continue
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", book)]
        paragraphs = [p for p in paragraphs if p and p not in excluded]
        pool += rng.sample(paragraphs, min(max(15, count // 150), len(paragraphs)))
    return rng.sample(pool, count)


def boundaries(paragraph: str, sentences: list[str]) -> set[int]:
    ends, position = set(), 0
    for sentence in sentences[:-1]:
        found = paragraph.find(sentence, position)
        position = (found if found >= 0 else position) + len(sentence)
        ends.add(position)
    return ends


def kind(paragraph: str, position: int) -> str:
    """What the text at a disputed boundary holds, checked in this order."""
    before, after = paragraph[max(0, position - 12):position], paragraph[position:position + 4]
    token = before.split()[-1] if before.split() else ""
    if ".." in before[-4:] or ". ." in before[-5:]:
        return "ellipsis"
    if token.rstrip(".").lower() in ABBREVIATIONS or re.fullmatch(r"[A-Za-z]\.", token):
        return "abbreviation"
    if re.search(r"\d", before[-3:] + after[:3]):
        return "number"
    if re.search(r"[\"'“”‘’]", before[-2:] + after[:2]):
        return "quote"
    if re.search(r"[()\[\]]|--", before[-3:] + after[:3]):
        return "brackets/dashes"
    return "other"


def other_splitters() -> dict:
    found = {}
    try:
        import sentencex

        found["sentencex"] = lambda p: list(sentencex.segment("en", p))
    except ImportError:
        pass
    try:
        import blingfire

        found["blingfire"] = lambda p: blingfire.text_to_sentences(p).split("\n")
    except ImportError:
        pass
    try:
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        found["nltk-punkt-untrained"] = PunktSentenceTokenizer().tokenize
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    paragraphs = held_apart_paragraphs(args.paragraphs, args.seed)
    megabytes = sum(len(p.encode("utf-8")) for p in paragraphs) / 1e6
    splitters = {"pysbd": PysbdSplitter().segment, "bertforge rules": RuleSplitter().segment, **other_splitters()}
    results = {}
    for name, split in splitters.items():
        start = time.process_time()
        results[name] = [[s.strip() for s in split(p) if s.strip()] for p in paragraphs]
        seconds = time.process_time() - start
        results[name + " seconds"] = seconds
    print(f"{len(paragraphs)} paragraphs, {megabytes:.2f} MB, seed {args.seed}")
    print("| splitter | MB/s (CPU) | boundaries shared with pysbd | paragraphs split identically |")
    print("| --- | --- | --- | --- |")
    for name in splitters:
        shared = either = identical = 0
        kinds = collections.Counter()
        for paragraph, ours, theirs in zip(paragraphs, results[name], results["pysbd"]):
            mine, reference = boundaries(paragraph, ours), boundaries(paragraph, theirs)
            shared += len(mine & reference)
            either += len(mine | reference)
            identical += mine == reference
            kinds.update(kind(paragraph, b) for b in mine ^ reference)
        print(f"| {name} | {megabytes / results[name + ' seconds']:.2f} | {shared / max(either, 1):.2%} "
              f"({either - shared} of {either} differ) | {identical / len(paragraphs):.2%} |")
        if name != "pysbd":
            print(f"|   disagreements by kind | {dict(kinds.most_common()) or 'none'} | | |")


if __name__ == "__main__":
    main()
