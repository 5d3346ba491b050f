"""`pretrain prepare` on a fixed corpus: its shards are pinned by a hash, so a change made for speed
that alters the prepared data fails here (issue 19)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bertforge import BertTokenizer
from bertforge.pretraining.corpus import read_documents, text_size
from bertforge.pretraining.shards import PrepareOptions, prepare

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
