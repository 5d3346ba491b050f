"""`bertforge train-vocab`: learn a WordPiece, BPE or byte-level BPE vocabulary from text files."""

from __future__ import annotations

import time
from pathlib import Path

import click

from bertforge.errors import InputError
from bertforge.io.atomic import check_output_dir
from bertforge.io.readers import check_distinct_files, read_corpus
from bertforge.pretraining.parts import INDEX_FILE
from bertforge.runcard import RunCard
from bertforge.tokenization.bpe import MERGES_FILE, VOCAB_FILE
from bertforge.tokenization.trainers import (ALGORITHMS, DEFAULT_SPECIAL_TOKENS, MAX_VOCAB_SIZE, EmptyCorpusError,
                                             train_vocab as train)


@click.command("train-vocab")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="wordpiece", show_default=True,
              help="wordpiece (BERT's vocab.txt), bpe (vocab.json + merges.txt over BERT's words) or "
                   "byte-bpe (GPT-2-style byte-level BPE, never unknown).")
@click.option("--vocab-size", type=click.IntRange(1, MAX_VOCAB_SIZE), default=30_000, show_default=True,
              help="Size of the vocabulary, special tokens included.")
@click.option("--min-frequency", type=int, default=2, show_default=True,
              help="Never merge a pair seen fewer times than this.")
@click.option("--input", "inputs", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Corpus file: .txt or .jsonl (a \"text\" field per line), optionally .gz. Repeat for more.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write the vocabulary files to.")
@click.option("--lowercase/--no-lowercase", default=None,
              help="Lower-case the text first. Default: yes for wordpiece and bpe, no for byte-bpe.")
@click.option("--strip-accents/--no-strip-accents", default=None,
              help="Strip accents (NFD, combining marks dropped). Default: as --lowercase.")
@click.option("--special-token", "special_tokens", multiple=True,
              help=f"A special token, placed first in the vocabulary; repeat for more. "
                   f"Default: {' '.join(DEFAULT_SPECIAL_TOKENS)}.")
@click.option("--limit-alphabet", type=int, default=None,
              help="Keep only this many of the most frequent characters (wordpiece, bpe).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def train_vocab(algorithm, vocab_size, min_frequency, inputs, output, lowercase, strip_accents, special_tokens,
                limit_alphabet, progress):
    """Train a vocabulary on the --input files and write it to --output.

    \b
    Examples:
      bertforge train-vocab --algorithm wordpiece --vocab-size 30000 --input corpus.txt.gz --output my-vocab
      bertforge train-vocab --algorithm byte-bpe --vocab-size 8000 --input books.jsonl --output my-bpe
    """
    check_output_dir(output, "--output")
    check_vocab_output(output, algorithm)
    if limit_alphabet is not None and algorithm == "byte-bpe":
        raise InputError("--limit-alphabet applies to wordpiece and bpe; byte-bpe's alphabet is the 256 bytes")
    check_distinct_files(inputs, "--input")  # before the run card reads them whole
    card = RunCard.start(click.get_current_context().params, inputs, output)
    corpus = read_corpus(inputs)  # missing --input files are reported here, before the counting starts
    if lowercase is None:
        lowercase = algorithm != "byte-bpe"
    if strip_accents is None:
        strip_accents = lowercase
    options = dict(vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase,
                   strip_accents=strip_accents, special_tokens=list(special_tokens or DEFAULT_SPECIAL_TOKENS),
                   show_progress=progress)
    if limit_alphabet is not None:
        options["limit_alphabet"] = limit_alphabet
    start = time.perf_counter()
    try:
        tokenizer = train(algorithm, corpus, **options)
    except EmptyCorpusError as error:  # errors of reading a file name it already
        raise InputError(f"{', '.join(map(str, inputs))}: {error}") from None
    seconds = time.perf_counter() - start
    specials = len(set(options["special_tokens"]))
    if algorithm == "wordpiece":
        tokenizer.save_pretrained(output)
        files = [tokenizer.vocab_file_name, tokenizer.config_file_name]
        alphabet = sum(1 for token in tokenizer.vocab if len(token.removeprefix("##")) == 1)
        learned = f"{len(tokenizer.vocab) - specials - alphabet:,} learned pieces"
    else:
        files = [path.name for path in tokenizer.save_pretrained(output)]
        alphabet = len(tokenizer.vocab) - specials - len({a + b for a, b in tokenizer.merges})
        learned = f"{len(tokenizer.merges):,} merges"
    click.echo(f"{algorithm}: {len(tokenizer.vocab):,} tokens ({specials} special, {alphabet:,} alphabet, {learned}) "
               f"in {seconds:.1f} s")
    if len(tokenizer.vocab) < vocab_size:
        click.echo(f"note: no pair seen at least {min_frequency} times was left to merge before reaching "
                   f"--vocab-size {vocab_size:,}")
    card.finish(output, {"vocab_size": len(tokenizer.vocab), "seconds": round(seconds, 1)})
    click.echo(f"wrote {', '.join(files)} and the run card to {output}")


def check_vocab_output(output: Path, algorithm: str) -> None:
    """The files are written into --output beside what it holds: refuse a folder whose files a vocabulary would
    break (a model's weights and a prepared data set's shards hold ids of their own vocabulary), or one holding
    another kind of vocabulary, beside which the new one would leave a folder that reads as neither."""
    def first(*names: str) -> str | None:
        return next((name for name in names if (output / name).exists()), None)

    found = first("config.json", "model.safetensors", "pytorch_model.bin")
    if found:
        raise InputError(f"--output {output}: holds a model ({found}) whose weights are indexed by its own "
                         f"vocabulary, which a new one would replace; give a new directory")
    if first(INDEX_FILE):
        raise InputError(f"--output {output}: holds a prepared data set ({INDEX_FILE}) whose shards are ids of its "
                         f"own vocabulary, which a new one would replace; give a new directory")
    found = first(VOCAB_FILE, MERGES_FILE) if algorithm == "wordpiece" else first("vocab.txt")
    if found:
        kind = "a BPE" if algorithm == "wordpiece" else "a WordPiece"
        raise InputError(f"--output {output}: holds {kind} vocabulary ({found}), beside which the files of "
                         f"--algorithm {algorithm} would make a folder that reads as neither; give a new directory")
