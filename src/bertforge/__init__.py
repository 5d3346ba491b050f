"""bertforge: BERT end to end in plain PyTorch."""

from bertforge.errors import BertforgeError
from bertforge.tokenization import BertTokenizer

__version__ = "0.1.0"
__all__ = ["BertforgeError", "BertTokenizer", "__version__"]
