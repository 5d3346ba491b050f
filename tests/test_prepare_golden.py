"""`pretrain prepare` on a fixed corpus: its shards are pinned by a hash, so a change made for speed
that alters the prepared data fails here (issue 19), the pysbd splitter prepares the same shards and the
token ids are the reference tokenizer's; reading the corpus (progress in bytes, chunks that cover it)
and a tokenizer's added tokens in the shards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from bertforge import BertTokenizer
from bertforge.pretraining.corpus import read_documents, read_raw_documents, text_size
from bertforge.pretraining.shards import PrepareOptions, PretrainingData, prepare


FIXTURE = Path(__file__).parent / "fixtures" / "sentences" / "paragraphs.jsonl"
# sha256 over the shard files (names and bytes, in name order) of `prepared("rules")` below. It was
# made by the pysbd splitter and the tokenizer's full call before either was sped up, and is what
# the commit before issue 19 prepares from the same corpus.
GOLDEN = "f1f82775c0363719faa0b343f115387cf97c1b5a349bdd1f4b1bdaaea59d0d19"
OPTIONS = dict(max_seq_length=64, dupe_factor=2, masking="static", seed=19, shard_size=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Ten documents of thirty Gutenberg paragraphs each, as JSON Lines."""
    paragraphs = [json.loads(line)["text"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    path = tmp_path_factory.mktemp("corpus") / "books.jsonl"
    path.write_text("".join(json.dumps({"text": "\n\n".join(paragraphs[i:i + 30])}) + "\n"
                            for i in range(0, len(paragraphs), 30)), encoding="utf-8")
    return path


def shards_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("shard-*.npy")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def prepared(corpus, tokenizer, tmp_path_factory):
    results = {}

    def run(splitter: str) -> tuple[str, dict]:
        if splitter not in results:
            directory = tmp_path_factory.mktemp(f"data-{splitter}")
            index = prepare([corpus], directory, tokenizer, PrepareOptions(**OPTIONS, splitter=splitter),
                            progress=False)
            results[splitter] = shards_hash(directory), index
        return results[splitter]
    return run


def test_shards_match_the_golden_hash(prepared):
    digest, index = prepared("rules")
    assert index["instances"] > 500 and len(index["shards"]) > 1
    assert digest == GOLDEN


def test_pysbd_prepares_the_same_shards(prepared):
    assert prepared("pysbd")[0] == prepared("rules")[0]


def test_token_ids_match_the_reference_tokenizer(corpus, tokenizer):
    tokenizers = pytest.importorskip("tokenizers")
    from bertforge.paths import default_model_path

    reference = tokenizers.BertWordPieceTokenizer(str(default_model_path() / "vocab.txt"), lowercase=True)
    sentences = [s for document in read_documents(corpus) for s in document]
    expected = [e.ids for e in reference.encode_batch(sentences, add_special_tokens=False)]
    assert tokenizer.token_ids(sentences) == expected
    fresh = BertTokenizer.from_pretrained()  # a second pass reads the caches: still the same
    assert fresh.token_ids(sentences[:50]) == fresh.token_ids(sentences[:50]) == expected[:50]


def test_progress_counts_every_byte(corpus, tmp_path):
    counted = []
    list(read_documents(corpus, on_bytes=counted.append))
    assert sum(counted) == corpus.stat().st_size == text_size(corpus)
    import gzip

    packed = tmp_path / "books.jsonl.gz"
    packed.write_bytes(gzip.compress(corpus.read_bytes()))
    assert text_size(packed) == corpus.stat().st_size


def test_cli_splitter_option(corpus, tmp_path):
    from click.testing import CliRunner

    from bertforge.cli.main import cli

    result = CliRunner().invoke(cli, ["pretrain", "prepare", str(corpus), str(tmp_path / "out"), "--splitter", "nltk"])
    assert result.exit_code != 0 and "--splitter" in result.output


@pytest.mark.parametrize("ending", ["full", "remainder", "one chunk"])
def test_read_chunks_cover_the_corpus_and_mark_the_last(corpus, ending):
    """Chunks hold every document once, in order, and the last one (which `make_chunks` ends the
    work differently for) is marked, whether the corpus ends on a full chunk or a remainder."""
    from bertforge.pretraining.chunks import read_chunks
    from bertforge.pretraining.corpus import estimated_tokens

    documents = list(read_raw_documents(corpus))
    total = sum(map(estimated_tokens, documents))
    chunk_tokens = {"full": total, "remainder": total // 4, "one chunk": total + 1}[ending]
    chunks = list(read_chunks([corpus], 0, None, chunk_tokens))
    assert [d for chunk in chunks for d in chunk.documents] == documents
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.last for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sum(chunk.bytes for chunk in chunks) == corpus.stat().st_size
    assert (sum(map(estimated_tokens, chunks[-1].documents)) >= chunk_tokens) == (ending == "full")
    assert (len(chunks) > 1) == (ending == "remainder")


def test_added_tokens_reach_the_shards_and_the_vocabulary_size(corpus, tmp_path):
    """A tokenizer given tokens of its own (as transformers' add_tokens): the data holds their ids, and its
    vocabulary size, which the model's embedding table is built from, counts them."""
    tokenizer = BertTokenizer.from_pretrained()
    tokenizer.add_tokens(["winkle"])  # in the corpus as "Winkle"
    index = prepare([corpus], tmp_path / "data", tokenizer, PrepareOptions(**OPTIONS), progress=False)
    assert index["vocab_size"] == len(tokenizer) == 30523
    data = PretrainingData(tmp_path / "data")
    ids = data.batch(np.arange(len(data)), 0)["input_ids"]
    assert (ids == 30522).any()
    assert BertTokenizer.from_pretrained(tmp_path / "data")("Mr. Winkle")["input_ids"] == [101, 2720, 1012, 30522, 102]
