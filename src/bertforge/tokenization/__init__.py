"""Text → token ids: BERT's WordPiece tokenizer, and training new vocabularies (WordPiece,
BPE, byte-level BPE) with their encoders."""

from bertforge.tokenization.basic import BasicTokenizer
from bertforge.tokenization.bert_tokenizer import BatchEncoding, BertTokenizer
from bertforge.tokenization.bpe import BPE, ByteLevelBPE
from bertforge.io.readers import read_corpus
from bertforge.tokenization.wordpiece import WordPiece, load_vocab

__all__ = [
    "BPE", "BasicTokenizer", "BatchEncoding", "BertTokenizer", "ByteLevelBPE", "WordPiece", "load_vocab",
    "read_corpus", "train_bpe", "train_byte_level_bpe", "train_vocab", "train_wordpiece",
]

# The trainers (and the progress bars they import) load on first use: `from bertforge import
# BertTokenizer` is on every command's start-up path and needs none of them.
TRAINERS = ("train_bpe", "train_byte_level_bpe", "train_vocab", "train_wordpiece")


def __getattr__(name: str):
    if name in TRAINERS:
        from bertforge.tokenization import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module 'bertforge.tokenization' has no attribute {name!r}")
