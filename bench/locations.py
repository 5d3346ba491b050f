"""Where the bench scripts find their checkout and the shared data: ../shared/data beside the clone."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
CORPUS = DATA / "corpus" / "gutenberg_train.jsonl.gz"  # the Gutenberg books, one JSON document per line
