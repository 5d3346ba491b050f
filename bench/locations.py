"""Where the bench scripts find their checkout and the shared data: ../shared/data beside the clone."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
CORPUS = DATA / "corpus" / "gutenberg_train.jsonl.gz"  # the Gutenberg books, one JSON document per line


def corpus_books():
    """The text of each book of the corpus, read as `train-vocab` and `pretrain prepare` read a JSON Lines corpus."""
    from bertforge.io.readers import corpus_jsonl_texts

    return corpus_jsonl_texts(CORPUS)
