"""bertforge: BERT end to end in plain PyTorch."""

from bertforge.errors import BertforgeError
from bertforge.tokenization import BertTokenizer

__version__ = "0.1.0"
__all__ = ["BertforgeError", "BertTokenizer", "__version__", "pipeline"]


def __getattr__(name: str):
    # `bertforge.pipeline` without importing torch for users who only tokenize.
    if name == "pipeline":
        from bertforge.pipelines import pipeline

        return pipeline
    raise AttributeError(f"module 'bertforge' has no attribute {name!r}")
